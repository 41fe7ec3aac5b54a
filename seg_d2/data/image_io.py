"""Reading images from real sensors: the one reader behind every mapper, tool and baseline of seg_d2.

Detectron2's ``read_image`` goes through PIL's 8-bit conversions, so a 16-bit PNG or TIFF comes back
saturated (all white) and a float TIFF does not open. Here every file is decoded at its own bit depth
(PNG and JPEG through PIL as Detectron2 does, 16-bit PNG through OpenCV, TIFF through tifffile, ``.npy``
through numpy), bands are chosen, and the values are brought to the 0..255 range the models' PIXEL_MEAN /
PIXEL_STD expect by an explicit :class:`Normalization`. 8-bit files under the default "auto"
normalisation come back exactly as Detectron2's ``read_image`` returns them (same uint8 array).

    read_image("scene.tif", format="BGR", normalize="percentile", bands=(3, 2, 1))
    read_label_map("labels/scene.png")        # class or instance ids, palette PNGs as indices

Every failure names the file (:class:`ImageReadError`).
"""
import dataclasses
import functools
import logging
import os

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_FORMATS",
    "ImageReadError",
    "NORMALIZE_MODES",
    "Normalization",
    "image_size",
    "normalize_bands",
    "read_bands",
    "read_image",
    "read_label_map",
]

logger = logging.getLogger(__name__)

NORMALIZE_MODES = ("auto", "percentile", "range", "none")
IMAGE_FORMATS = ("BGR", "RGB", "L")
# ITU-R 601 luma, the weights of PIL's convert("L") (used as is for 8-bit images).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_NPY_SIGNATURE = b"\x93NUMPY"
_PIL_TO_RGB = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA"}
_PIL_HIGH_DEPTH = {"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I;16N": np.uint16,
                   "I": np.int32, "F": np.float32}


class ImageReadError(OSError):
    """An image (or label map) that cannot be read as asked; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How raw sensor values become the 0..255 range models are configured for (``INPUT.NORMALIZE``).

    mode: "auto": 8-bit images as they are, any other depth (16-bit, float) as "percentile";
        "percentile": per image, the ``percentiles`` (low, high) of its values go to 0 and 255, values
        beyond them are clipped (a 1/99.8 stretch as in fluorescence microscopy);
        "range": ``value_range`` (low, high) goes to 0..255, the same for every image (sensors with a known
        range); () means the integer type's full range; values outside are clipped, with a warning;
        "none": the values unchanged (as float32, uint8 stays uint8): set PIXEL_MEAN / PIXEL_STD to match.
    per_band: statistics per band instead of over all bands together (which keeps colours balanced).
    """

    mode: str = "auto"
    percentiles: tuple = (1.0, 99.8)
    value_range: tuple = ()
    per_band: bool = False

    def __post_init__(self):
        if self.mode not in NORMALIZE_MODES:
            raise ValueError(f"INPUT.NORMALIZE.MODE must be one of {NORMALIZE_MODES}, got {self.mode!r}")
        lo, hi = _pair(self.percentiles, "INPUT.NORMALIZE.PERCENTILES")
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"INPUT.NORMALIZE.PERCENTILES must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.value_range:
            lo, hi = _pair(self.value_range, "INPUT.NORMALIZE.RANGE")
            if not lo < hi:
                raise ValueError(f"INPUT.NORMALIZE.RANGE must be (low, high) with low < high, got {self.value_range}")
        object.__setattr__(self, "percentiles", tuple(float(v) for v in self.percentiles))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))

    @classmethod
    def from_config(cls, cfg):
        node = cfg.INPUT.NORMALIZE
        return cls(node.MODE, tuple(node.PERCENTILES), tuple(node.RANGE), bool(node.PER_BAND))

    def resolved_mode(self, dtype):
        """The mode actually applied to an image of ``dtype``."""
        if self.mode == "auto":
            return "none" if dtype == np.uint8 else "percentile"
        return self.mode


def _pair(values, key):
    if len(values) != 2:
        raise ValueError(f"{key} must be two numbers (low, high), got {tuple(values)}")
    return float(values[0]), float(values[1])


def _as_normalization(normalize):
    if isinstance(normalize, Normalization):
        return normalize
    return Normalization("none" if normalize is None else normalize)


# ---------------------------------------------------------------- decoding (file -> raw bands)
def _signature(path):
    try:
        with open(path, "rb") as f:
            return f.read(26)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such image file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open: {e}") from None


def _is_16bit_png(head):
    return head.startswith(_PNG_SIGNATURE) and len(head) > 24 and head[24] == 16  # IHDR bit depth


def _read_tiff(path, window):
    """(H, W, C) array of a TIFF's first series, window read from a memory map when uncompressed."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        data = None
        if window is not None:
            try:
                data = tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or not contiguous: decode it all
                data = None
        if data is None:
            data = series.asarray()
    data = _to_yxc(np.asarray(data) if window is None else data, axes, shape, path)
    return data if window is None else np.array(_crop(data, window))


def _tiff_layout(axes, shape, path):
    """(axes kept, their sizes) of a TIFF series: Y, X and one band axis, singleton extras dropped."""
    keep = [i for i, (axis, n) in enumerate(zip(axes, shape)) if axis in "YX" or n > 1]
    kept = "".join(axes[i] for i in keep)
    if kept not in ("YX", "SYX", "CYX", "YXS", "YXC"):  # S: samples (planar or not), C: ImageJ/OME channels
        raise ImageReadError(f"{path}: TIFF axes {axes} of shape {tuple(shape)}; seg_d2 reads one 2D image with "
                             "bands (YX, YXS, SYX, CYX)")
    return kept, [shape[i] for i in keep]


def _to_yxc(data, axes, shape, path):
    """TIFF axes (YX, YXS, SYX, ... with singleton extras) -> (H, W, C)."""
    kept, sizes = _tiff_layout(axes, shape, path)
    data = data.reshape(sizes)
    if kept == "YX":
        return data[:, :, None]
    return np.moveaxis(data, 0, -1) if kept[0] in "SC" else data


def _read_png16(path):
    """16-bit PNG through OpenCV (PIL reduces 16-bit colour PNGs to 8 bits); bands in RGB(A) order."""
    data = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ValueError("OpenCV could not decode it")
    if data.ndim == 2:
        return data[:, :, None]
    return data[:, :, [2, 1, 0, 3][: data.shape[2]]] if data.shape[2] in (3, 4) else data


def _pil_array(image):
    """(H, W, C) array of a PIL image: 8-bit modes as L/LA/RGB/RGBA, deeper ones at their own depth."""
    if image.mode in _PIL_HIGH_DEPTH:
        return np.asarray(image).astype(_PIL_HIGH_DEPTH[image.mode])[:, :, None]
    if image.mode in ("P", "PA"):
        target = "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
    else:
        target = _PIL_TO_RGB.get(image.mode, "RGB")  # CMYK, YCbCr, LAB, HSV -> RGB, as Detectron2
    data = np.asarray(image.convert(target) if image.mode != target else image)
    return data[:, :, None] if data.ndim == 2 else data


def _read_pil(path):
    with Image.open(path) as image:
        return _pil_array(ImageOps.exif_transpose(image))


def _decode(path):
    """(H, W, C) array of any supported file, at its own depth, bands in the file's (RGB) order."""
    head = _signature(path)
    try:
        if head.startswith(_TIFF_SIGNATURES):
            return _read_tiff(path, None)
        if head.startswith(_NPY_SIGNATURE):
            return _npy_yxc(np.load(path, allow_pickle=False), path)
        if _is_16bit_png(head):
            return _read_png16(path)
        return _read_pil(path)
    except ImageReadError:
        raise
    except Exception as e:  # PIL, OpenCV, tifffile and numpy raise many kinds for a bad file
        raise ImageReadError(f"{path}: cannot decode image: {type(e).__name__}: {e}") from e


def _npy_yxc(data, path):
    if data.ndim == 2:
        return data[:, :, None]
    if data.ndim == 3:
        return data
    raise ImageReadError(f"{path}: array of shape {data.shape}; expected (H, W) or (H, W, C)")


def _check_window(window, height, width, path):
    x0, y0, x1, y1 = (int(v) for v in window)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ImageReadError(f"{path}: window {tuple(window)} (x0, y0, x1, y1) is not inside the {width}x{height} image")
    return x0, y0, x1, y1


def _crop(data, window):
    x0, y0, x1, y1 = window
    return data[y0:y1, x0:x1]


def _decode_window(path, window):
    """The raw bands of ``window`` (x0, y0, x1, y1) of the image, or of all of it (``window`` None)."""
    if window is None:
        return _decode(path)
    height, width = image_size(path)
    window = _check_window(window, height, width, path)
    if _signature(path).startswith(_TIFF_SIGNATURES):
        try:
            return _read_tiff(path, window)
        except ImageReadError:
            raise
        except Exception as e:
            raise ImageReadError(f"{path}: cannot decode image: {type(e).__name__}: {e}") from e
    return np.ascontiguousarray(_crop(_decode(path), window))


def image_size(path):
    """(height, width) of an image from its header (EXIF orientation applied, as the readers do)."""
    head = _signature(path)
    try:
        if head.startswith(_TIFF_SIGNATURES):
            with tifffile.TiffFile(path) as tif:
                kept, sizes = _tiff_layout(tif.series[0].axes, tif.series[0].shape, path)
                return sizes[kept.index("Y")], sizes[kept.index("X")]
        if head.startswith(_NPY_SIGNATURE):
            return _npy_yxc(np.load(path, mmap_mode="r"), path).shape[:2]
        with Image.open(path) as image:
            width, height = image.size
            # EXIF orientations 5..8 are transposed: width and height swap once applied.
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            return height, width
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(f"{path}: cannot read the image header: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- bands and normalisation
def _select_bands(data, bands, path):
    """The 1 or 3 bands to use: ``bands`` (indices) if given, else all of a 1- or 3-band image, band 0
    of a 2-band one (gray + alpha) and the first three of a 4-band one (RGB + alpha)."""
    count = data.shape[2]
    if bands:
        bad = [b for b in bands if not -count <= b < count]
        if bad:
            raise ImageReadError(f"{path}: INPUT.BANDS {tuple(bands)} names band(s) {bad}; the image has {count}")
        if len(bands) not in (1, 3):
            raise ImageReadError(f"{path}: INPUT.BANDS {tuple(bands)} selects {len(bands)} bands; use 1 or 3")
        return data[:, :, list(bands)]
    if count in (1, 3):
        return data
    if count in (2, 4):
        return data[:, :, : count - 1]
    raise ImageReadError(f"{path}: the image has {count} bands; set INPUT.BANDS to 1 or 3 of them, e.g. (0,) or (2, 1, 0)")


def read_bands(path, bands=None, window=None):
    """The selected bands (H, W, 1 or 3) of ``window`` of the image, unnormalised, in the file's dtype."""
    return _select_bands(_decode_window(path, window), bands, path)


def _percentile_limits(data, percentiles, per_band):
    axis = (0, 1) if per_band else None
    nan = np.issubdtype(data.dtype, np.floating) and np.isnan(data).any()
    lo, hi = (np.nanpercentile if nan else np.percentile)(data, percentiles, axis=axis)
    return np.atleast_1d(lo).astype(np.float32), np.atleast_1d(hi).astype(np.float32)


def _range_limits(dtype, value_range, path):
    if value_range:
        return np.float32([value_range[0]]), np.float32([value_range[1]])
    if not np.issubdtype(dtype, np.integer):
        raise ImageReadError(f"{path}: INPUT.NORMALIZE.MODE 'range' of a {dtype} image needs INPUT.NORMALIZE.RANGE (low, high)")
    info = np.iinfo(dtype)
    return np.float32([info.min]), np.float32([info.max])


@functools.lru_cache(maxsize=64)
def _whole_image_limits(path, _mtime_ns, _size, bands, percentiles, per_band):
    """Percentile limits of the whole image, cached: every window of an image is stretched alike."""
    return _percentile_limits(read_bands(path, bands), percentiles, per_band)


_warned = set()


def _warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def _limits(data, norm, mode, path, bands, window):
    if mode == "range":
        return _range_limits(data.dtype, norm.value_range, path)
    if window is None:
        return _percentile_limits(data, norm.percentiles, norm.per_band)
    stat = os.stat(path)
    return _whole_image_limits(path, stat.st_mtime_ns, stat.st_size, tuple(bands or ()), norm.percentiles,
                               norm.per_band)


def normalize_bands(data, normalize="auto", path="image", bands=None, window=None):
    """``data`` (H, W, C) from :func:`read_bands` brought to 0..255 float32 (uint8 kept as it is where the
    mode leaves values unchanged). With ``window``, percentiles are those of the whole image at ``path``."""
    norm = _as_normalization(normalize)
    mode = norm.resolved_mode(data.dtype)
    if norm.mode == "auto" and mode != "none":
        _warn_once(("auto", data.dtype.str), f"INPUT.NORMALIZE.MODE 'auto': {data.dtype} images are stretched per "
                   f"image between their {norm.percentiles} percentiles to 0..255 (first: {path}); set "
                   "INPUT.NORMALIZE.MODE 'range' (with RANGE) for one fixed scale, or 'none'")
    if mode == "none":
        return data if data.dtype == np.uint8 else data.astype(np.float32)
    lo, hi = _limits(data, norm, mode, path, bands, window)
    # float32 holds every 16-bit value exactly, at a quarter of float64's memory on large images
    scaled = (data.astype(np.float32) - lo) * (np.float32(255) / np.where(hi > lo, hi - lo, np.float32(1)))
    finite = np.isfinite(scaled)
    if not finite.all():
        _warn_once(("nonfinite", path), f"{path}: {int((~finite).sum())} NaN/inf values read as 0")
        scaled[~finite] = 0.0
    if mode == "range":
        outside = int(((scaled < 0) | (scaled > 255)).sum())
        if outside:
            _warn_once(("range", path), f"{path}: {outside} values outside INPUT.NORMALIZE.RANGE {float(lo[0])}..{float(hi[0])} "
                       f"clipped (of {scaled.size})")
    return np.clip(scaled, 0, 255, out=scaled)


def _to_format(data, image_format):
    """1 or 3 bands in RGB order -> HxWx3 BGR / RGB or HxWx1 L."""
    if image_format == "L":
        if data.shape[2] == 1:
            return data
        if data.dtype == np.uint8:  # PIL's integer luma, exactly as Detectron2's read_image(format="L")
            return np.asarray(Image.fromarray(np.ascontiguousarray(data)).convert("L"))[:, :, None]
        return (data.astype(np.float32) @ _LUMA)[:, :, None]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data[:, :, ::-1]) if image_format == "BGR" else data


def read_image(path, format="BGR", normalize="auto", bands=None, window=None):
    """An image ready for a model: HxWx3 ("BGR", "RGB") or HxWx1 ("L").

    Args:
        path: PNG (8/16-bit), JPEG or anything else PIL reads, TIFF (any depth, YX / YXS / SYX), ``.npy``.
        format: Detectron2's INPUT.FORMAT: "BGR", "RGB" or "L".
        normalize: a :class:`Normalization` or a mode name ("auto", "percentile", "range", "none").
        bands: indices of the file's bands to use (1 or 3 of them; e.g. (3, 2, 1) for NIR-R-G); None:
            all of a gray or RGB image, dropping an alpha band.
        window: (x0, y0, x1, y1) pixels to read; percentile statistics are still the whole image's, so a
            window holds exactly the values of the same pixels of the whole image.

    Returns:
        uint8 for 8-bit files left unchanged by the normalisation (identical to Detectron2's read_image),
        else float32 in 0..255 ("none": the raw values).
    """
    if format not in IMAGE_FORMATS:
        raise ValueError(f"format must be one of {IMAGE_FORMATS}, got {format!r} (reading {path})")
    bands = tuple(bands) if bands else None
    data = normalize_bands(read_bands(path, bands, window), normalize, path, bands, window)
    return _to_format(data, format)


def read_label_map(path, window=None):
    """(H, W) integer ids of a label map or instance raster: PNG (8/16-bit gray, palette PNGs as their
    indices, not colours), TIFF or ``.npy`` of integers. A colour or float image is refused."""
    head = _signature(path)
    try:
        if head.startswith(_TIFF_SIGNATURES + (_NPY_SIGNATURE,)) or _is_16bit_png(head):
            data = _decode_window(path, window)
        else:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)
                if image.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
                    raise ImageReadError(f"{path}: a {image.mode} image is not a label map; label maps hold one "
                                         "band of integer ids (gray or palette PNG, integer TIFF or .npy)")
                data = np.asarray(image.convert("L") if image.mode == "1" else image)
            data = data.astype(_PIL_HIGH_DEPTH.get(image.mode, data.dtype))[:, :, None]
            if window is not None:
                data = _crop(data, _check_window(window, *data.shape[:2], path))
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(f"{path}: cannot decode label map: {type(e).__name__}: {e}") from e
    return _integer_ids(data, path)


def _integer_ids(data, path):
    if data.shape[2] != 1:
        raise ImageReadError(f"{path}: {data.shape[2]} bands; a label map has one band of integer ids")
    data = data[:, :, 0]
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        if not (np.isfinite(data).all() and (data == np.round(data)).all()):
            raise ImageReadError(f"{path}: {data.dtype} values that are not integers; a label map holds integer ids")
        data = data.astype(np.int64)
    return np.ascontiguousarray(data)
