"""build_mapper / SegD2DatasetMapper: Detectron2's DatasetMapper output for 8-bit data, sane values for the rest."""
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import seg_d2  # noqa: F401  (before detectron2)
import tifffile
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode
from seg_d2.data.dataset_mappers import AlbumentationsDatasetMapper, SegD2DatasetMapper, build_mapper
from seg_d2.data.image_io import ImageReadError, read_image

H, W = 40, 56


def _cfg(**overrides):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (32, 48)  # a random resize and flip: both mappers must draw alike
    cfg.INPUT.MIN_SIZE_TEST = 44
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.merge_from_list([v for kv in overrides.items() for v in kv])
    return cfg


def _scene(tmp_path, image):
    """``image`` saved, labels 0/1/2 in an L-mode PNG, one RLE and one polygon instance."""
    yy, xx = np.mgrid[:H, :W]
    disc = ((yy - 20) ** 2 + (xx - 14) ** 2 <= 64).astype(np.uint8)
    sem = np.where(disc, 1, 0).astype(np.uint8)
    sem[5:15, 30:50] = 2
    Image.fromarray(sem).save(tmp_path / "sem.png")
    path = tmp_path / ("img.tif" if image.dtype != np.uint8 else "img.png")
    (tifffile.imwrite(path, image) if image.dtype != np.uint8 else Image.fromarray(image).save(path))
    return {
        "file_name": str(path), "sem_seg_file_name": str(tmp_path / "sem.png"), "height": H, "width": W,
        "image_id": 1,
        "annotations": [
            {"bbox": [6, 12, 22, 28], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
             "segmentation": mask_util.encode(np.asfortranarray(disc))},
            {"bbox": [30, 5, 50, 15], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1,
             "segmentation": [[30, 5, 50, 5, 50, 15, 30, 15]]},
        ],
    }


def _rgb8():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _assert_same(ours, theirs):
    assert ours.keys() == theirs.keys()
    for key in ours:
        if key == "instances":
            for field in ("gt_boxes", "gt_classes", "gt_masks"):
                a, b = ours[key].get(field), theirs[key].get(field)
                a, b = (a.tensor, b.tensor) if hasattr(a, "tensor") else (a, b)
                assert torch.equal(a, b), field
        elif isinstance(ours[key], torch.Tensor):
            assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key


@pytest.mark.parametrize("is_train", [True, False])
def test_eight_bit_data_maps_exactly_as_detectron2(tmp_path, is_train):
    record = _scene(tmp_path, _rgb8())
    ours, theirs = SegD2DatasetMapper(_cfg(), is_train=is_train), DatasetMapper(_cfg(), is_train=is_train)
    for seed in range(4):
        np.random.seed(seed)
        a = ours(record)
        np.random.seed(seed)
        _assert_same(a, theirs(record))
    assert "annotations" in record  # the record itself is untouched


def test_build_mapper_choice():
    assert type(build_mapper(_cfg(), is_train=False)) is SegD2DatasetMapper
    assert type(build_mapper(_cfg(), is_train=True)) is SegD2DatasetMapper
    albumentations = _cfg(**{"INPUT.ALBUMENTATIONS.ENABLED": True})
    assert type(build_mapper(albumentations, is_train=True)) is AlbumentationsDatasetMapper
    assert type(build_mapper(albumentations, is_train=False)) is SegD2DatasetMapper


def test_16bit_image_trains_on_normalised_values(tmp_path):
    raw = np.random.default_rng(1).integers(800, 3000, (H, W), dtype=np.uint16)
    record = _scene(tmp_path, raw)
    stock = DatasetMapper(_cfg(), is_train=False)(record)["image"]
    assert stock.float().min() == 255  # what Detectron2 alone trains on: a white image
    image = SegD2DatasetMapper(_cfg(**{"INPUT.MIN_SIZE_TEST": 0}), is_train=False)(record)["image"]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert image.min() == 0 and image.max() == 255 and 100 < image.mean() < 155
    np.testing.assert_array_equal(image.numpy().transpose(1, 2, 0), read_image(record["file_name"]))
    mapper = SegD2DatasetMapper(_cfg(**{"INPUT.NORMALIZE.MODE": "range", "INPUT.NORMALIZE.RANGE": (0, 4000),
                                        "INPUT.MIN_SIZE_TEST": 0}), is_train=False)
    np.testing.assert_allclose(mapper(record)["image"][0].numpy(), raw.astype(np.float64) * 255 / 4000, rtol=1e-6)


def test_window_maps_the_crop(tmp_path):
    record = _scene(tmp_path, _rgb8())
    window = dict(record, window=[8, 4, 40, 36], height=32, width=32)
    window.pop("annotations")
    window.pop("sem_seg_file_name")
    mapper = SegD2DatasetMapper(_cfg(**{"INPUT.MIN_SIZE_TEST": 0}), is_train=False)
    whole = mapper(dict(record, annotations=[]))["image"]
    assert torch.equal(mapper(window)["image"], whole[:, 4:36, 8:40])


def test_palette_and_16bit_labels_are_ids(tmp_path):
    record = _scene(tmp_path, _rgb8())
    sem = np.asarray(Image.open(record["sem_seg_file_name"]))
    palette = Image.fromarray(sem, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    palette.save(tmp_path / "palette.png")
    cv2.imwrite(str(tmp_path / "sem16.png"), sem.astype(np.uint16) * 300)
    mapper = SegD2DatasetMapper(_cfg(), is_train=True)
    for name, factor in (("palette.png", 1), ("sem16.png", 300)):
        np.random.seed(0)
        out = mapper(dict(record, sem_seg_file_name=str(tmp_path / name)))["sem_seg"]
        np.random.seed(0)
        reference = mapper(record)["sem_seg"]  # the L-mode PNG of the same ids, same augmentation
        assert torch.equal(out, reference * factor), name  # same pixels picked by the resize


def test_albumentations_mapper_keeps_float_images_in_range(tmp_path):
    raw = np.random.default_rng(2).integers(0, 60000, (H, W), dtype=np.uint16)
    record = _scene(tmp_path, raw)
    identity = [["RandomBrightnessContrast", {"brightness_limit": [0, 0], "contrast_limit": [0, 0], "p": 1.0}],
                ["HorizontalFlip", {"p": 1.0}]]
    cfg = _cfg(**{"INPUT.ALBUMENTATIONS.ENABLED": True, "INPUT.ALBUMENTATIONS.PIPELINE": identity})
    image = AlbumentationsDatasetMapper(cfg, is_train=True)(record)["image"]
    expected = read_image(record["file_name"])[:, ::-1].transpose(2, 0, 1)
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-3)  # not clipped at 1.0


def test_undecodable_image_names_its_file(tmp_path):
    record = _scene(tmp_path, _rgb8())
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (H, W, 3), np.uint8)).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) - 100])
    for mapper in (SegD2DatasetMapper(_cfg(), is_train=True),
                   AlbumentationsDatasetMapper(_cfg(**{"INPUT.ALBUMENTATIONS.ENABLED": True}), is_train=True)):
        with pytest.raises(ImageReadError, match=r"cut\.jpg: cannot decode image"):
            mapper(dict(record, file_name=str(tmp_path / "cut.jpg")))
