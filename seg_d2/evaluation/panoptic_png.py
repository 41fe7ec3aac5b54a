"""Read COCO panoptic PNGs as segment-id maps, fast, and count PQ's pixel pairs straight from two PNGs.

PNG decoding bounded offline PQ: OpenCV (libpng + zlib 1.2.11) spends ~75 % of a 640x480 panoptic PNG's
2 ms inflating it (bench/bench_evaluation.py prints the split). Panoptic PNGs are 8-bit RGB(A),
non-interlaced, so seg_d2 reads those itself: libdeflate (the ``deflate`` package) inflates the IDAT
stream ~13x faster than zlib, and a small C extension (``_png_ids.c``) undoes the row filters and packs
ids row by row. Both release the GIL, so worker threads decode in parallel. Any other PNG, or a machine
where the extension was not built, goes through OpenCV; the ids are the same either way (tested).
"""
import struct
from typing import NamedTuple

import cv2
import numpy as np

from .validation import EvaluationInputError

try:
    import deflate

    from . import _png_ids
except ImportError:  # no compiler at install time, or deflate missing: OpenCV decodes everything
    _png_ids = None

__all__ = [
    "read_panoptic_png", "rgb2id", "png_size", "fast_decoder_available", "read_png_rows", "segment_pair_counts",
]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {2: 3, 6: 4}  # PNG colour type -> bytes per pixel at bit depth 8 (RGB, RGBA)
# deflate cannot expand more than 1032:1 (a 258-byte match in 2 bits at best; zlib's "technical details" page)
_MAX_DEFLATE_RATIO = 1032


def fast_decoder_available() -> bool:
    return _png_ids is not None


def rgb2id(rgb):
    """Segment ids of a COCO panoptic PNG (H, W, 3 uint8): R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


class PngRows(NamedTuple):
    """A PNG's inflated, still filtered rows (one filter-type byte + width * channels bytes each)."""

    raw: bytes
    height: int
    width: int
    channels: int


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise EvaluationInputError(f"{path}: cannot read panoptic PNG ({e.strerror})") from e


def read_panoptic_png(path):
    """Read a COCO panoptic PNG into an (H, W) uint32 id map; a clear error names an unreadable file."""
    data = _read(path)
    rows = _inflate(data, path) if _png_ids is not None else None
    if rows is None:
        return _decode_opencv(data, path)
    ids = np.empty((rows.height, rows.width), np.uint32)
    try:
        _png_ids.decode_ids(rows.raw, rows.height, rows.width, rows.channels, ids)
    except ValueError as e:
        raise EvaluationInputError(f"{path}: corrupt PNG ({e})") from e
    return ids


def read_png_rows(path):
    """:class:`PngRows` of an 8-bit RGB(A) non-interlaced PNG; None for other PNGs or without the extension."""
    return _inflate(_read(path), path) if _png_ids is not None else None


def _label_table(segment_ids):
    """Sorted ids (uint32) and their labels 2 + i (int32), the numbering of panoptic_quality.dense_labels."""
    ids = np.asarray(segment_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    return ids[order].astype(np.uint32), (order + 2).astype(np.int32)


def segment_pair_counts(gt_rows, pred_rows, gt_segment_ids, pred_segment_ids):
    """Pixel counts of (gt label, pred label) pairs of two same-size PNGs, without decoding either to an array.

    Labels: 0 = id listed nowhere, 1 = VOID, 2 + i = the i-th listed segment; ids must be in (0, 2^24).
    Returns:
        ndarray[len(gt_segment_ids) + 2, len(pred_segment_ids) + 2] int64.
    Raises:
        ValueError: a row with an unknown filter type (the message says which image).
    """
    if (gt_rows.height, gt_rows.width) != (pred_rows.height, pred_rows.width):
        raise ValueError("the two PNGs differ in size")
    counts = np.zeros((len(gt_segment_ids) + 2, len(pred_segment_ids) + 2), np.int64)
    _png_ids.pair_counts(gt_rows.raw, pred_rows.raw, gt_rows.height, gt_rows.width, gt_rows.channels,
                         pred_rows.channels, *_label_table(gt_segment_ids), *_label_table(pred_segment_ids),
                         counts.shape[0], counts.shape[1], counts)
    return counts


def _header(head):
    """(width, height, bit depth, colour type, interlace) from a PNG's first 29 bytes; None if not a PNG."""
    if len(head) < 29 or not head.startswith(_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", head, 16)
    return width, height, depth, colour, interlace


def png_size(path):
    """(height, width) from a PNG's header, without decoding; None when it is not a readable PNG."""
    try:
        with open(path, "rb") as f:
            header = _header(f.read(29))
    except OSError:
        return None
    return None if header is None else (header[1], header[0])


def _decode_opencv(data, path):
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise EvaluationInputError(f"{path}: cannot read panoptic PNG")
    # R, G, B, A bytes read as one little-endian uint32 = R + 256 G + 256^2 B + 256^3 A; the mask drops A
    ids = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA).view("<u4")[..., 0]
    ids &= 0xFFFFFF
    return ids.view(np.uint32)


def _chunks(data, path):
    """(type, payload) of each chunk up to IEND, CRCs checked as libpng does for critical chunks."""
    pos = len(_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            raise EvaluationInputError(f"{path}: corrupt PNG (truncated {kind!r} chunk)")
        if kind[0] & 0x20 == 0:  # critical chunk (upper-case first letter)
            (crc,) = struct.unpack_from(">I", data, end)
            if deflate.crc32(memoryview(data)[pos + 4 : end]) != crc:
                raise EvaluationInputError(f"{path}: corrupt PNG (CRC error in {kind.decode('latin-1')} chunk)")
        if kind == b"IEND":
            return
        yield kind, memoryview(data)[pos + 8 : end]
        pos = end + 4


def _inflate(data, path):
    """:class:`PngRows` of an 8-bit RGB(A) non-interlaced PNG; None for any other PNG (or not a PNG)."""
    header = _header(data)
    if header is None:
        return None
    width, height, depth, colour, interlace = header
    channels = _CHANNELS.get(colour)
    if depth != 8 or channels is None or interlace != 0 or width == 0 or height == 0:
        return None
    stream = b"".join(payload for kind, payload in _chunks(data, path) if kind == b"IDAT")
    size = height * (1 + width * channels)
    if size > _MAX_DEFLATE_RATIO * len(stream) + 1024:  # refuse before allocating what a bad header claims
        raise EvaluationInputError(f"{path}: corrupt PNG ({width}x{height} pixels cannot fit in "
                                   f"{len(stream)} bytes of image data)")
    try:
        raw = deflate.zlib_decompress(stream, size)
    except deflate.DeflateError as e:
        raise EvaluationInputError(f"{path}: corrupt PNG (image data does not inflate: {e})") from e
    return PngRows(raw, height, width, channels)
