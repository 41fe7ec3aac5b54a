"""image_io: every bit depth, band layout and normalisation, against the source arrays and Detectron2's reader."""
import logging
import os

import cv2
import numpy as np
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import tifffile
from PIL import Image

from detectron2.data.detection_utils import read_image as detectron2_read_image
from seg_d2.data.image_io import ImageReadError, Normalization, image_size, read_bands, read_image, read_label_map

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
NUCLEI = os.path.join(SHARED, "nuclei-stardist", "img2d.tif")
VOC_JPEG = os.path.join(SHARED, "voc-labelme", "JPEGImages", "2011_000003.jpg")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"{SHARED} absent (the shared real-image data)")


def _rgb8(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _stretch(values, lo_pct=1.0, hi_pct=99.8):
    """The percentile stretch written out: percentiles -> 0 and 255, clipped."""
    lo, hi = np.percentile(values.astype(np.float64), (lo_pct, hi_pct))
    return np.clip((values.astype(np.float64) - lo) / (hi - lo) * 255, 0, 255)


# ---------------------------------------------------------------- 8-bit files: exactly Detectron2's reader
def _eight_bit_files(tmp_path):
    rgb = _rgb8()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    palette = Image.fromarray((rgb[:, :, 0] % 5).astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200, 255, 255, 0])
    palette.save(tmp_path / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    return sorted(tmp_path.iterdir())


@pytest.mark.parametrize("image_format", ["BGR", "RGB", "L"])
def test_eight_bit_files_read_exactly_as_detectron2(tmp_path, image_format):
    for path in _eight_bit_files(tmp_path):
        ours = read_image(str(path), image_format)
        theirs = detectron2_read_image(str(path), image_format)
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape, path.name
        np.testing.assert_array_equal(ours, theirs, err_msg=path.name)
        assert image_size(str(path)) == ours.shape[:2], path.name


@needs_shared
def test_voc_photo_as_detectron2():
    np.testing.assert_array_equal(read_image(VOC_JPEG), detectron2_read_image(VOC_JPEG, "BGR"))


# ---------------------------------------------------------------- high bit depths
def test_16bit_gray_png_is_stretched_not_saturated(tmp_path):
    values = (np.arange(40 * 50).reshape(40, 50) * 7 + 300).astype(np.uint16)  # 300 .. 14293
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    assert detectron2_read_image(str(tmp_path / "g16.png"), "BGR").min() == 255  # the bug: all white
    image = read_image(str(tmp_path / "g16.png"), "BGR")
    assert image.dtype == np.float32 and image.shape == (40, 50, 3)
    np.testing.assert_allclose(image[:, :, 0], _stretch(values), atol=1e-3)
    assert (image[:, :, 0] == image[:, :, 2]).all()


def test_16bit_colour_png_keeps_band_order(tmp_path):
    rgb = np.stack([np.full((6, 7), v, np.uint16) for v in (1000, 20000, 60000)], -1)
    rgb[0, 0] = (0, 0, 0)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[:, :, ::-1])  # OpenCV writes BGR
    raw = read_bands(str(tmp_path / "c16.png"))
    np.testing.assert_array_equal(raw, rgb)
    ranged = read_image(str(tmp_path / "c16.png"), "RGB", Normalization("range"))
    np.testing.assert_allclose(ranged[1, 1], np.array([1000, 20000, 60000]) * 255 / 65535, rtol=1e-6)
    np.testing.assert_array_equal(read_image(str(tmp_path / "c16.png"), "BGR", "range"), ranged[:, :, ::-1])


def test_float_tiff_percentile_range_and_nan(tmp_path, caplog):
    values = np.random.default_rng(1).normal(1000.0, 300.0, (64, 48)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", values)
    image = read_image(str(tmp_path / "f.tif"), "L")
    assert image.dtype == np.float32 and image.shape == (64, 48, 1)
    np.testing.assert_allclose(image[:, :, 0], _stretch(values), atol=2e-3)
    assert 0.15 < np.mean(image == 255) * 100 < 0.3 and 0.9 < np.mean(image == 0) * 100 < 1.1  # 0.2 % / 1 %
    values[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values)
    with caplog.at_level(logging.WARNING, logger="seg_d2.data.image_io"):
        with_nan = read_image(str(tmp_path / "nan.tif"), "L")
    assert with_nan[3, 4, 0] == 0 and np.isfinite(with_nan).all()
    assert "nan.tif: 1 NaN/inf values read as 0" in caplog.text


def test_range_and_none_modes(tmp_path, caplog):
    values = np.array([[0, 1024, 2048], [3072, 4095, 5000]], np.uint16)
    tifffile.imwrite(tmp_path / "u12.tif", values)
    with caplog.at_level(logging.WARNING, logger="seg_d2.data.image_io"):
        image = read_image(str(tmp_path / "u12.tif"), "L", Normalization("range", value_range=(0, 4095)))
    np.testing.assert_allclose(image[:, :, 0], np.minimum(values / 4095 * 255, 255), rtol=1e-6)
    assert "u12.tif: 1 values outside INPUT.NORMALIZE.RANGE 0.0..4095.0 clipped" in caplog.text
    raw = read_image(str(tmp_path / "u12.tif"), "L", "none")
    assert raw.dtype == np.float32 and (raw[:, :, 0] == values).all()
    tifffile.imwrite(tmp_path / "f.tif", values.astype(np.float32))
    with pytest.raises(ImageReadError, match=r"f\.tif: .*'range' of a float32 image needs INPUT.NORMALIZE.RANGE"):
        read_image(str(tmp_path / "f.tif"), normalize="range")


def test_per_band_statistics(tmp_path):
    bands = np.stack([np.linspace(0, 10, 100), np.linspace(0, 1000, 100), np.linspace(5, 6, 100)], -1)
    tifffile.imwrite(tmp_path / "b.tif", bands.reshape(10, 10, 3).astype(np.float32), photometric="rgb")
    joint = read_image(str(tmp_path / "b.tif"), "RGB", Normalization("percentile", (0, 100)))
    per_band = read_image(str(tmp_path / "b.tif"), "RGB", Normalization("percentile", (0, 100), per_band=True))
    assert per_band.reshape(-1, 3).max(axis=0).tolist() == [255, 255, 255]
    assert joint.reshape(-1, 3).max(axis=0)[1] == 255 and joint.reshape(-1, 3).max(axis=0)[0] < 3


# ---------------------------------------------------------------- bands
def test_tiff_layouts_and_band_selection(tmp_path):
    bands = np.random.default_rng(2).integers(0, 4096, (4, 9, 11), dtype=np.uint16)  # R, G, B, NIR
    tifffile.imwrite(tmp_path / "planar.tif", bands, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(bands, 0, -1), photometric="rgb", extrasamples=[0])
    for name in ("planar.tif", "contig.tif"):
        assert image_size(str(tmp_path / name)) == (9, 11)
        np.testing.assert_array_equal(read_bands(str(tmp_path / name)), np.moveaxis(bands[:3], 0, -1))
        false_colour = read_image(str(tmp_path / name), "RGB", "none", bands=(3, 0, 1))
        np.testing.assert_array_equal(false_colour, np.moveaxis(bands[[3, 0, 1]], 0, -1))
        np.testing.assert_array_equal(read_image(str(tmp_path / name), "L", "none", bands=(3,))[:, :, 0], bands[3])


def test_band_errors_name_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "six.tif", np.zeros((6, 8, 8), np.uint16), photometric="minisblack",
                     planarconfig="separate")
    with pytest.raises(ImageReadError, match=r"six\.tif: the image has 6 bands; set INPUT.BANDS"):
        read_image(str(tmp_path / "six.tif"))
    with pytest.raises(ImageReadError, match=r"six\.tif: INPUT.BANDS \(0, 9\) names band\(s\) \[9\]"):
        read_image(str(tmp_path / "six.tif"), bands=(0, 9))
    with pytest.raises(ImageReadError, match=r"six\.tif: INPUT.BANDS \(0, 1\) selects 2 bands"):
        read_image(str(tmp_path / "six.tif"), bands=(0, 1))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 8, 8), np.uint16), photometric="minisblack")  # pages
    with pytest.raises(ImageReadError, match=r"stack\.tif: TIFF axes QYX"):
        read_image(str(tmp_path / "stack.tif"))


# ---------------------------------------------------------------- windows
@pytest.mark.parametrize("compression", [None, "zlib"])  # memory-mapped window / decode-then-crop
def test_window_equals_crop_of_whole_image(tmp_path, compression):
    values = np.random.default_rng(3).gamma(2.0, 500.0, (70, 90)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", values, compression=compression)
    cv2.imwrite(str(tmp_path / "big.png"), values)
    for name in ("big.tif", "big.png"):
        whole = read_image(str(tmp_path / name))
        window = read_image(str(tmp_path / name), window=(10, 20, 60, 45))
        np.testing.assert_array_equal(window, whole[20:45, 10:60])  # whole-image statistics, not the window's
    with pytest.raises(ImageReadError, match=r"big\.tif: window \(80, 0, 100, 10\) .* not inside the 90x70 image"):
        read_image(str(tmp_path / "big.tif"), window=(80, 0, 100, 10))


# ---------------------------------------------------------------- bad files
def test_decode_errors_name_the_file(tmp_path):
    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    cv2.imwrite(str(tmp_path / "g16.png"), np.ones((30, 30), np.uint16))
    (tmp_path / "truncated16.png").write_bytes((tmp_path / "g16.png").read_bytes()[:60])
    for name in ("truncated.jpg", "text.png", "truncated16.png"):
        with pytest.raises(ImageReadError, match=rf"{name}: cannot decode image"):
            read_image(str(tmp_path / name))
    with pytest.raises(ImageReadError, match=r"missing\.png: no such image file"):
        read_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageReadError, match=r"text\.png: cannot read the image header"):
        image_size(str(tmp_path / "text.png"))
    assert isinstance(ImageReadError("x"), OSError)  # code catching OSError (PIL's own errors) still catches it


# ---------------------------------------------------------------- label maps
def test_label_maps_are_ids(tmp_path):
    ids = np.random.default_rng(4).integers(0, 21, (10, 12)).astype(np.uint8)
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette(list(np.random.default_rng(5).integers(0, 256, 768)))
    palette.save(tmp_path / "voc.png")
    assert not (detectron2_read_image(str(tmp_path / "voc.png"), "L")[:, :, 0] == ids).all()  # luma of colours
    big = (ids.astype(np.uint16) * 1000)
    cv2.imwrite(str(tmp_path / "u16.png"), big)
    tifffile.imwrite(tmp_path / "i32.tif", ids.astype(np.int32) * 100000)
    np.save(tmp_path / "ids.npy", ids.astype(np.int64))
    for name, expected in (("voc.png", ids), ("u16.png", big), ("i32.tif", ids.astype(np.int32) * 100000), ("ids.npy", ids)):
        np.testing.assert_array_equal(read_label_map(str(tmp_path / name)), expected, err_msg=name)
    np.testing.assert_array_equal(read_label_map(str(tmp_path / "voc.png"), window=(2, 3, 7, 9)), ids[3:9, 2:7])
    Image.fromarray(_rgb8()).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match=r"colour\.png: a RGB image is not a label map"):
        read_label_map(str(tmp_path / "colour.png"))
    tifffile.imwrite(tmp_path / "float.tif", np.full((4, 4), 0.5, np.float32))
    with pytest.raises(ImageReadError, match=r"float\.tif: float32 values that are not integers"):
        read_label_map(str(tmp_path / "float.tif"))


# ---------------------------------------------------------------- the real 16-bit image
@needs_shared
def test_nuclei_16bit_tiff_sane_statistics():
    raw = tifffile.imread(NUCLEI)
    assert raw.dtype == np.uint16 and raw.max() < 256  # 8 bits of signal in a 16-bit file
    image = read_image(NUCLEI, "BGR")
    np.testing.assert_allclose(image[:, :, 0], _stretch(raw), atol=1e-3)
    assert image.min() == 0 and image.max() == 255 and 20 < image.mean() < 120
    assert read_image(NUCLEI, "BGR", Normalization("range")).max() < 1  # full uint16 range: nearly black
