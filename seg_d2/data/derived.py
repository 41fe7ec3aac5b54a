"""Files seg_d2 derives from a user's data (semantic PNGs of a panoptic set, COCO JSON of instance rasters,
label crops of tiles), kept in a cache beside the built-in data and never next to the user's files (which
may be read-only).

A derived file's name is a hash of everything it is made from: the sources' paths, sizes and modification
times, the parameters, and :data:`VERSION`. A changed source therefore gets a new file, and a stale one is
never read. Files are written to a temporary name and renamed, so a killed job or two processes writing
at once (DDP ranks) leave either nothing or a whole file.
"""
import hashlib
import json
import os
import tempfile

__all__ = ["VERSION", "cache_root", "cached_file", "source_stamp", "write_atomic", "write_json_cached"]

# Bump when the content derived from the same inputs changes.
VERSION = "derived-v1"


def cache_root():
    """``$SEG_D2_DATA_DIR/derived-v1``, else ``~/.cache/seg_d2/datasets/derived-v1`` (read at each call)."""
    base = os.environ.get("SEG_D2_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "seg_d2", "datasets")
    return os.path.join(base, VERSION)


def source_stamp(path):
    """What identifies a source file's content cheaply: absolute path, size, modification time."""
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def _key(parts):
    return hashlib.sha256(json.dumps([VERSION, parts], sort_keys=True, default=str).encode()).hexdigest()[:32]


def write_atomic(path, write):
    """``write(tmp_path)`` then rename to ``path`` (same folder, so the rename is atomic)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def cached_file(kind, parts, suffix, write):
    """The cached file of ``kind`` derived from ``parts`` (JSON-able: stamps, parameters), made by
    ``write(path)`` when absent; returns its path."""
    key = _key(parts)
    path = os.path.join(cache_root(), kind, key[:2], key + suffix)
    if not os.path.isfile(path):
        write_atomic(path, write)
    return path


def write_json_cached(kind, data):
    """``data`` as a JSON file named by its own content's hash (same content, same file); returns its path."""
    text = json.dumps(data)

    def write(path):
        with open(path, "w") as f:
            f.write(text)

    return cached_file(kind, [hashlib.sha256(text.encode()).hexdigest()], ".json", write)
