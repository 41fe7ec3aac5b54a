"""Checkpoints that survive faults: atomic writes, checksums, fallback on resume, errors that name the file.

Detectron2 writes ``model_*.pth`` and ``last_checkpoint`` in place (a kill mid-write leaves a truncated file) and
on resume trusts ``last_checkpoint``: a truncated one gives an ``AssertionError``, a bare ``EOFError`` or a
``UnicodeDecodeError``, and a readable older checkpoint beside it is not used. Here:

- every file is written to a temporary file in the same folder, fsynced and renamed over the old one (then the
  folder is fsynced), so a reader sees the old file or the new one, never half of one;
- each ``X.pth`` gets ``X.pth.sha256`` (``sha256sum -c`` format) and loading checks it: a corrupted file that
  ``torch.load`` would read without complaint (a flipped byte in a tensor) is refused, not trained on;
- ``resume_or_load(resume=True)`` tries the file ``last_checkpoint`` names, then the other ``model_*.pth`` newest
  first, and resumes from the first readable one that holds a training state, with a warning naming the files
  it passed over and why; if none is readable it stops with that list rather than start again from scratch.
"""
import contextlib
import glob
import hashlib
import os
import secrets

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from seg_d2.modeling.pretrained import WeightsMismatchError

__all__ = ["CHECKSUM_SUFFIX", "CheckpointError", "FaultTolerantCheckpointer", "atomic_write", "remove_checkpoint"]

CHECKSUM_SUFFIX = ".sha256"
LAST_CHECKPOINT = "last_checkpoint"  # the file Detectron2's Checkpointer tags the latest checkpoint in


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names it and says why."""


class _HashingWriter:
    """A write-only file that also computes the sha256 of what goes through it (no second read of the file)."""

    def __init__(self, file):
        self._file, self.sha256 = file, hashlib.sha256()

    def write(self, data):
        self.sha256.update(data)
        return self._file.write(data)

    def flush(self):
        self._file.flush()


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # makes the rename itself durable
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Replace ``path`` all at once by what ``write(file)`` writes (bytes); returns its sha256 hex digest.

    The data goes to a temporary file beside ``path`` that is fsynced, then renamed over it. Temporary files a
    killed write left for the same ``path`` are removed first.
    """
    folder, name = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
        os.remove(stale)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as open() gives, umask applied
    try:
        with os.fdopen(fd, "wb") as file:
            writer = _HashingWriter(file)
            write(writer)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_folder(folder)
    return writer.sha256.hexdigest()


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(error):
    return f"{type(error).__name__}: {str(error).splitlines()[0]}" if str(error) else type(error).__name__


def remove_checkpoint(path):
    """Delete a checkpoint and its checksum file."""
    for file in (path, path + CHECKSUM_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.remove(file)


class FaultTolerantCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer (same arguments and file layout) whose writes are atomic and checksummed, whose
    resume falls back to the newest readable checkpoint, and whose errors name the file."""

    _preread = None  # (path, checkpoint) that resume_or_load read to check it, so that load() does not read again

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()}, **kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving checkpoint to {path}")
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + CHECKSUM_SUFFIX)  # a kill before the new checksum is written must not pair it with old
        digest = atomic_write(path, lambda file: torch.save(data, file))
        atomic_write(path + CHECKSUM_SUFFIX, lambda file: file.write(f"{digest}  {name}.pth\n".encode()))
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), lambda file: file.write(last_filename_basename.encode()))

    def load(self, path, *args, **kwargs):
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {path}: no such file")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        preread, self._preread = self._preread, None
        if preread is not None and preread[0] == filename:
            return preread[1]
        self._check_checksum(filename)
        try:
            return super()._load_file(filename)
        except WeightsMismatchError:  # readable, but none of its tensors fits the model: it says so, naming the file
            raise
        except Exception as e:  # torch.load / pickle raise many kinds for a truncated or foreign file
            raise CheckpointError(f"{filename}: not a readable checkpoint ({_describe(e)})") from e

    def _check_checksum(self, filename):
        checksum_file = filename + CHECKSUM_SUFFIX
        if not os.path.isfile(checksum_file):
            return  # written before seg_d2 kept checksums, or by another tool: nothing to check against
        try:
            with open(checksum_file, "rb") as f:
                expected = f.read().split()[0].decode("ascii")
        except (IndexError, UnicodeDecodeError, OSError) as e:
            raise CheckpointError(f"{checksum_file}: unreadable checksum file ({_describe(e)})") from e
        if _file_sha256(filename) != expected:
            raise CheckpointError(f"{filename}: content does not match its checksum in {checksum_file} "
                                  "(truncated or corrupted)")

    def _checkpoint_files(self):
        """The ``model_*.pth`` in the folder (Detectron2's periodic, final and best checkpoints), newest first."""
        files = glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth"))
        return sorted(files, key=lambda f: (os.path.getmtime(f), f), reverse=True)

    def has_checkpoint(self):
        return os.path.exists(os.path.join(self.save_dir, LAST_CHECKPOINT)) or bool(self._checkpoint_files())

    def _tagged_file(self, passed_over):
        """The file ``last_checkpoint`` names, or None (with the reason added to ``passed_over``)."""
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        try:
            with open(tag, "rb") as f:
                name = f.read().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            passed_over.append((tag, _describe(e)))
            return None
        path = os.path.join(self.save_dir, name)
        if not name or not os.path.isfile(path):
            passed_over.append((tag, f"names {name!r}, which is not a file"))
            return None
        return path

    def _readable_training_state(self, passed_over):
        """(path, checkpoint) of the first usable resume candidate; the others tried go to ``passed_over``."""
        tagged = self._tagged_file(passed_over)
        candidates = ([tagged] if tagged else []) + [f for f in self._checkpoint_files() if f != tagged]
        for path in candidates:
            try:
                checkpoint = self._load_file(path)
            except CheckpointError as e:
                passed_over.append((path, str(e).removeprefix(f"{path}: ")))
                continue
            if "trainer" in self.checkpointables and "trainer" not in checkpoint:
                passed_over.append((path, "holds model weights but no training state"))
                continue
            return path, checkpoint
        raise CheckpointError(f"--resume: no readable checkpoint in {self.save_dir}: " + "; ".join(
            f"{file}: {why}" for file, why in passed_over))

    def resume_or_load(self, path, *, resume=True):
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        passed_over = []
        chosen, checkpoint = self._readable_training_state(passed_over)
        if comm.get_world_size() > 1 and len(set(comm.all_gather(chosen))) > 1:
            raise CheckpointError(f"--resume: the processes found different checkpoints readable in {self.save_dir}"
                                  " (is OUTPUT_DIR the same folder on every machine?)")
        if passed_over:
            self.logger.warning(f"Resuming from {chosen}, the newest readable checkpoint; passed over: " + "; ".join(
                f"{file}: {why}" for file, why in passed_over))
        self._preread = (chosen, checkpoint)
        return self.load(chosen)
