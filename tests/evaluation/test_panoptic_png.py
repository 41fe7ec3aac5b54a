"""seg_d2's panoptic PNG reader (libdeflate + C row unfiltering) against PNGs encoded here from the
specification's filter formulas, against OpenCV and PIL, and on broken files."""
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from seg_d2.evaluation.panoptic_png import (
    _decode_opencv,
    fast_decoder_available,
    read_panoptic_png,
    read_png_rows,
    rgb2id,
    segment_pair_counts,
)
from seg_d2.evaluation.validation import EvaluationInputError


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filtered_rows(pixels, filter_of_row):
    """The PNG specification's five filters (section 9.2), byte by byte: the independent reference."""
    h, w, bpp = pixels.shape
    rows = pixels.reshape(h, w * bpp).astype(int)
    prior = np.zeros(w * bpp, int)
    out = bytearray()
    for y, cur in enumerate(rows):
        kind = filter_of_row(y)
        out.append(kind)
        for i, x in enumerate(cur):
            a = cur[i - bpp] if i >= bpp else 0
            c = prior[i - bpp] if i >= bpp else 0
            predicted = (0, a, prior[i], (a + prior[i]) // 2, _paeth(a, prior[i], c))[kind]
            out.append((x - predicted) % 256)
        prior = cur
    return bytes(out)


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(pixels, filter_of_row, idat_parts=1, colour=None):
    h, w, bpp = pixels.shape
    colour = {3: 2, 4: 6}[bpp] if colour is None else colour
    stream = zlib.compress(_filtered_rows(pixels, filter_of_row))
    cuts = np.linspace(0, len(stream), idat_parts + 1).astype(int)
    idats = b"".join(_chunk(b"IDAT", stream[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"tEXt", b"k\x00v") + idats + _chunk(b"IEND", b"")


def _write(tmp_path, data, name="x.png"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_fast_decoder_is_built():
    assert fast_decoder_available(), "seg_d2.evaluation._png_ids was not compiled: `pip install -e .` needs a C compiler"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), alpha=st.booleans(), kind=st.sampled_from([0, 1, 2, 3, 4, None]),
       parts=st.integers(1, 3))
def test_every_filter_type_decodes_to_the_pixels(tmp_path_factory, seed, alpha, kind, parts):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 9)), int(rng.integers(1, 12))
    pixels = rng.integers(0, 256, (h, w, 4 if alpha else 3), dtype=np.uint8)
    pixels[:, : w // 2] = pixels[:1, :1]  # flat runs too, as segment maps have
    mixed = rng.integers(0, 5, h)
    path = _write(tmp_path_factory.mktemp("png"), _png(pixels, lambda y: mixed[y] if kind is None else kind, parts))
    ids = read_panoptic_png(path)
    assert ids.dtype == np.uint32 and ids.shape == (h, w)
    np.testing.assert_array_equal(ids, rgb2id(pixels[..., :3]))


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("levels", [4, 256])
def test_each_filter_type_on_a_larger_image(tmp_path, kind, levels):
    # few grey levels make the Paeth predictor's ties (pa == pb, pb == pc) common
    pixels = np.random.default_rng(kind).integers(0, levels, (24, 40, 3), dtype=np.uint8)
    path = _write(tmp_path, _png(pixels, lambda y: kind))
    np.testing.assert_array_equal(read_panoptic_png(path), rgb2id(pixels))


def test_pil_written_segment_maps_match_opencv(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(5):
        ids = np.zeros((120, 160), np.int64)
        for k in range(1, 21):
            y, x = rng.integers(0, 120), rng.integers(0, 160)
            ids[y : y + rng.integers(4, 60), x : x + rng.integers(4, 80)] = k * 1000 + 7
        rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)
        path = tmp_path / f"{i}.png"
        Image.fromarray(rgb).save(path)
        out = read_panoptic_png(path)
        np.testing.assert_array_equal(out, ids)
        np.testing.assert_array_equal(out, _decode_opencv(path.read_bytes(), path))


@pytest.mark.parametrize("mode", ["P", "L", "RGB16", "RGBA"])
def test_other_png_kinds_decode_like_pil(tmp_path, mode):
    rgb = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    if mode == "RGB16":  # 16 bits per channel: OpenCV's path, which keeps the top byte as IMREAD_COLOR does
        cv2.imwrite(str(path), rgb[..., ::-1].astype(np.uint16) * 257)
        expected = rgb2id(rgb)
    else:
        image = Image.fromarray(rgb).convert(mode)
        image.save(path)
        expected = rgb2id(np.asarray(image.convert("RGB")))
    np.testing.assert_array_equal(read_panoptic_png(path), expected)


def _id_pixels(ids, alpha):
    rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255] + [np.full_like(ids, 255)] * alpha, -1)
    return rgb.astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_segment_pair_counts_equal_a_brute_force_count(tmp_path_factory, seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
    pool = rng.choice(np.arange(1, 1 << 24), 8, replace=False)
    gt_listed, pred_listed = list(pool[:4]), list(pool[3:7])  # pool[7] is listed nowhere
    maps = []
    for _ in range(2):  # blocks of equal ids (runs, as segment maps have) over a noisy background
        m = rng.choice(np.concatenate([[0], pool]), (h, w))
        m[: h // 2, : w // 2] = rng.choice(pool)
        maps.append(m[np.sort(rng.integers(0, h, h))])  # repeated rows: "Up" rows of zeros, skipped when read
    root = tmp_path_factory.mktemp("pairs")
    kinds = rng.integers(0, 5, h)
    gt = read_png_rows(_write(root, _png(_id_pixels(maps[0], False), lambda y: kinds[y]), "gt.png"))
    pred = read_png_rows(_write(root, _png(_id_pixels(maps[1], True), lambda y: 4 - kinds[y]), "pred.png"))
    counts = segment_pair_counts(gt, pred, gt_listed, pred_listed)

    def label(v, listed):
        return 1 if v == 0 else (2 + listed.index(v) if v in listed else 0)

    expected = np.zeros((len(gt_listed) + 2, len(pred_listed) + 2), np.int64)
    for g, p in zip(maps[0].ravel(), maps[1].ravel()):
        expected[label(g, gt_listed), label(p, pred_listed)] += 1
    np.testing.assert_array_equal(counts, expected)


def test_segment_pair_counts_name_the_image_with_a_bad_row(tmp_path):
    good = read_png_rows(_write(tmp_path, _png(_pixels(), lambda y: 0), "good.png"))
    rows = bytearray(_filtered_rows(_pixels(), lambda y: 0))
    rows[1 * (1 + 5 * 3)] = 7
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(bytes(rows))) + _chunk(b"IEND", b"")
    bad = read_png_rows(_write(tmp_path, data, "bad.png"))
    with pytest.raises(ValueError, match="row 1 of the prediction has an unknown filter type"):
        segment_pair_counts(good, bad, [1], [2])
    with pytest.raises(ValueError, match="differ in size"):
        segment_pair_counts(good, read_png_rows(_write(tmp_path, _png(_pixels()[:2], lambda y: 0))), [1], [2])


def _pixels():
    return np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)


def test_a_crc_error_names_the_file_and_chunk(tmp_path):
    data = bytearray(_png(_pixels(), lambda y: 1))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF
    path = _write(tmp_path, bytes(data), "bad_crc.png")
    with pytest.raises(EvaluationInputError, match=r"bad_crc.png: corrupt PNG \(CRC error in IDAT chunk\)"):
        read_panoptic_png(path)


def test_a_truncated_file_is_refused(tmp_path):
    data = _png(_pixels(), lambda y: 2)
    path = _write(tmp_path, data[: data.index(b"IDAT") + 10], "cut.png")
    with pytest.raises(EvaluationInputError, match=r"cut.png: corrupt PNG \(truncated b'IDAT' chunk\)"):
        read_panoptic_png(path)


def test_an_unknown_filter_type_names_the_row(tmp_path):
    rows = bytearray(_filtered_rows(_pixels(), lambda y: 0))
    rows[2 * (1 + 5 * 3)] = 9  # row 2's filter byte
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(bytes(rows))) + _chunk(b"IEND", b"")
    with pytest.raises(EvaluationInputError, match="row 2 has an unknown filter type"):
        read_panoptic_png(_write(tmp_path, data))


def test_image_data_of_the_wrong_size_is_refused(tmp_path):
    rows = _filtered_rows(_pixels(), lambda y: 0)[:-3]
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")
    with pytest.raises(EvaluationInputError, match="x.png: corrupt PNG"):
        read_panoptic_png(_write(tmp_path, data))


def test_a_header_claiming_more_pixels_than_the_data_can_hold_is_refused(tmp_path):
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1 << 20, 1 << 20, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    with pytest.raises(EvaluationInputError, match="1048576x1048576 pixels cannot fit"):
        read_panoptic_png(_write(tmp_path, data))


def test_missing_and_non_png_files_are_named(tmp_path):
    with pytest.raises(EvaluationInputError, match="nothing.png: cannot read panoptic PNG"):
        read_panoptic_png(tmp_path / "nothing.png")
    with pytest.raises(EvaluationInputError, match="text.png: cannot read panoptic PNG"):
        read_panoptic_png(_write(tmp_path, b"not an image", "text.png"))
