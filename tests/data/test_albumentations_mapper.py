import copy

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data.samplers import TrainingSampler
from detectron2.structures import BoxMode

from seg_d2.data.dataset_mappers import AlbumentationsDatasetMapper, build_albumentations
from seg_d2.data.samplers import ResumableTrainLoader

torch.set_num_threads(1)
H, W = 48, 64


def _cfg(pipeline=None):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    if pipeline is not None:
        cfg.INPUT.ALBUMENTATIONS.PIPELINE = pipeline
    return cfg


@pytest.fixture
def dataset_dict(tmp_path):
    """A dark image with a bright disc (class 0, RLE) on the left and a bright square (class 1, polygon)
    on the right, a crowd annotation, and semantic labels 0 / 1 / 2 with an ignored (255) top row."""
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 24) ** 2 + (xx - 14) ** 2 <= 81
    square = (yy >= 15) & (yy < 35) & (xx >= 40) & (xx < 56)
    image = np.full((H, W, 3), 20, np.uint8)
    image[disc | square] = 220
    sem = np.zeros((H, W), np.uint8)
    sem[disc], sem[square], sem[0] = 1, 2, 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(sem).save(tmp_path / "sem.png")
    rle = mask_util.encode(np.asfortranarray(disc.astype(np.uint8)))
    poly = [[40, 15, 56, 15, 56, 35, 40, 35]]
    return {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "height": H,
        "width": W,
        "image_id": 0,
        "annotations": [
            {"bbox": [5, 15, 24, 34], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": rle, "category_id": 0},
            {"bbox": [40, 15, 56, 35], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": poly, "category_id": 1},
            {"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": [[0, 0, 4, 0, 4, 4]],
             "category_id": 1, "iscrowd": 1},
        ],
    }


def _map(pipeline, dataset_dict):
    return AlbumentationsDatasetMapper(_cfg(pipeline), is_train=True)(dataset_dict)


def _tight_boxes(masks):
    boxes = []
    for m in masks.numpy():
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32)


# Every transform of the example pipeline (forced on), plus a resize.
EXAMPLE_TRANSFORMS = [[name, {**params, "p": 1.0}] for name, params in _cfg().INPUT.ALBUMENTATIONS.PIPELINE] + [
    ["Resize", {"height": 96, "width": 80}]
]


@pytest.mark.parametrize("spec", EXAMPLE_TRANSFORMS, ids=lambda s: s[0])
def test_boxes_follow_masks_and_masks_follow_image(spec, dataset_dict):
    out = _map([spec], dataset_dict)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1]  # crowd dropped
    assert torch.equal(inst.gt_boxes.tensor, _tight_boxes(inst.gt_masks.tensor))
    # Aligned: the bright objects are under the masks, the dark background outside them.
    gray = out["image"].float().mean(0)
    inside = inst.gt_masks.tensor.any(0)
    assert gray[inside].mean() > gray[~inside].mean() + 100
    assert out["image"].shape[1:] == inst.image_size == tuple(out["sem_seg"].shape)


def test_flip_moves_known_object(dataset_dict):
    out = _map([["HorizontalFlip", {"p": 1.0}]], dataset_dict)
    # The square at x in [40, 56) lands at [W - 56, W - 40); its class follows it.
    square = out["instances"][out["instances"].gt_classes == 1]
    assert square.gt_boxes.tensor.tolist() == [[W - 56, 15, W - 40, 35]]
    # Row 34 crosses the square only: its pixels at x = 48 move to x = W - 1 - 48 = 15, image and labels.
    assert (out["image"][:, 34, 15] == 220).all() and (out["image"][:, 34, 48] == 20).all()
    assert out["sem_seg"][34, 15] == 2 and out["sem_seg"][34, 48] == 0
    assert out["sem_seg"][24, W - 1 - 14] == 1  # the disc's centre


def test_sem_seg_nearest_and_fill_is_ignore(dataset_dict):
    pipeline = [["ElasticTransform", {"alpha": 40.0, "sigma": 4.0, "p": 1.0}], ["Resize", {"height": 37, "width": 53}],
                ["PadIfNeeded", {"min_height": 60, "min_width": 53, "position": "top_left", "border_mode": 0}]]
    out = _map(pipeline, dataset_dict)
    sem = out["sem_seg"]
    assert sem.dtype == torch.int64 and sem.shape == (60, 53)
    assert set(sem.unique().tolist()) <= {0, 1, 2, 255}
    assert (sem[37:] == 255).all()  # padding is ignored, not background class 0
    assert not out["instances"].gt_masks.tensor[:, 37:].any()


def test_instance_leaving_the_image_is_dropped(dataset_dict):
    out = _map([["Crop", {"x_min": 32, "y_min": 0, "x_max": 64, "y_max": 48}]], dataset_dict)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1]
    assert inst.gt_boxes.tensor.tolist() == [[8, 15, 24, 35]]


def test_empty_pipeline_matches_detectron2_dataset_mapper(dataset_dict):
    cfg = _cfg([])
    ours = AlbumentationsDatasetMapper(cfg, is_train=True)(dataset_dict)
    d2 = DatasetMapper(is_train=True, augmentations=[], image_format=cfg.INPUT.FORMAT, use_instance_mask=True,
                       instance_mask_format="bitmask", recompute_boxes=True)(dataset_dict)
    assert set(ours) == set(d2)
    assert torch.equal(ours["image"], d2["image"]) and torch.equal(ours["sem_seg"], d2["sem_seg"])
    assert ours["sem_seg"].dtype == d2["sem_seg"].dtype
    a, b = ours["instances"], d2["instances"]
    assert a.get_fields().keys() == b.get_fields().keys()
    assert torch.equal(a.gt_masks.tensor, b.gt_masks.tensor)
    assert torch.equal(a.gt_boxes.tensor, b.gt_boxes.tensor)
    assert torch.equal(a.gt_classes, b.gt_classes)


def test_eval_mode_drops_annotations(dataset_dict):
    out = AlbumentationsDatasetMapper(_cfg([]), is_train=False)(dataset_dict)
    assert "instances" not in out and "annotations" not in out and "sem_seg_file_name" not in out


@pytest.mark.parametrize(
    "pipeline, match",
    [
        ([["HorizontalFlip", {}], ["NoSuchFlip", {}]], r"PIPELINE\[1\]: unknown albumentations transform 'NoSuchFlip'"),
        ([["HorizontalFlip", {"probability": 0.5}]], r"PIPELINE\[0\]: HorizontalFlip has no parameter.*probability"),
        ([["GaussNoise", {"std_range": 5}]], r"PIPELINE\[0\]: bad parameters for GaussNoise"),
        ([{"HorizontalFlip": {}}], r"PIPELINE\[0\]: expected \[name, \{params\}\]"),
    ],
)
def test_bad_pipeline_names_the_key(pipeline, match):
    with pytest.raises(ValueError, match=match):
        build_albumentations(pipeline)


def test_feeds_a_mask_rcnn_training_step(dataset_dict):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    cfg = _cfg([["Resize", {"height": 64, "width": 64}], ["HorizontalFlip", {"p": 0.5}]])
    cfg.merge_from_file("configs/builtin/mask_rcnn_R18_shapes.yaml")
    cfg.INPUT.ALBUMENTATIONS.ENABLED = True
    mapper = AlbumentationsDatasetMapper(cfg, is_train=True)
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model([mapper(dataset_dict), mapper(dataset_dict)])
    assert {"loss_mask", "loss_cls", "loss_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_semantic_only_records_match_detectron2_dataset_mapper():
    cfg = _cfg([])
    cfg.merge_from_file("configs/builtin/semantic_unet.yaml")
    d2 = DatasetMapper(is_train=True, augmentations=[], image_format=cfg.INPUT.FORMAT)
    ours = AlbumentationsDatasetMapper(cfg, is_train=True)
    for record in DatasetCatalog.get("seg_d2_shapes_train_sem_seg")[:2]:  # no "annotations": no "instances"
        a, b = ours(record), d2(record)
        assert set(a) == set(b) and "instances" not in a
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["sem_seg"], b["sem_seg"])


def test_only_crowd_annotations_give_empty_instances(dataset_dict):
    dataset_dict["annotations"] = [a for a in dataset_dict["annotations"] if a.get("iscrowd")]
    inst = _map([["HorizontalFlip", {"p": 1.0}]], dataset_dict)["instances"]
    assert len(inst) == 0 and inst.gt_boxes.tensor.shape == (0, 4) and inst.gt_masks.tensor.shape == (0, H, W)


def _flips(image, reference):
    """(horizontal, vertical) flips that turn ``reference`` (C, H, W) into ``image``."""
    for flips in ((False, False), (True, False), (False, True), (True, True)):
        dims = [d for d, flipped in zip((2, 1), flips) if flipped]
        if torch.equal(image, reference.flip(dims) if dims else reference):
            return flips
    raise AssertionError("not a flip of the reference image")


def test_seeded_augmentation_repeats_and_transforms_draw_independently(dataset_dict):
    mapper = AlbumentationsDatasetMapper(_cfg([["HorizontalFlip", {"p": 0.5}], ["VerticalFlip", {"p": 0.5}]]))
    reference = _map([], dataset_dict)["image"]
    flips = []
    for seed in range(24):
        mapper.set_random_seed(seed)
        first = mapper(dataset_dict)
        mapper.set_random_seed(seed)
        again = mapper(dataset_dict)
        assert torch.equal(first["image"], again["image"]) and torch.equal(first["sem_seg"], again["sem_seg"])
        assert torch.equal(first["instances"].gt_masks.tensor, again["instances"].gt_masks.tensor)
        flips.append(_flips(first["image"], reference))
    # One generator per transform seeded alike (albumentations' Compose.set_random_seed) flips both or neither.
    assert set(flips) == {(False, False), (True, False), (False, True), (True, True)}


RANDOM_PIPELINE = [["Affine", {"scale": [0.8, 1.2], "rotate": [-20, 20], "p": 1.0}], ["HorizontalFlip", {"p": 0.5}],
                   ["RandomBrightnessContrast", {"p": 1.0}]]


def _tensors(batches):
    return [(d["image_id"], d["image"], d["sem_seg"], d["instances"].gt_masks.tensor) for b in batches for d in b]


@pytest.mark.parametrize("stop, workers", [(2, 0), (1, 2)])
def test_resumed_loader_augments_as_an_uninterrupted_one(dataset_dict, stop, workers):
    records = [{**copy.deepcopy(dataset_dict), "image_id": i} for i in range(4)]

    def loader():  # a fresh mapper each time: a resumed run builds its own pipeline
        mapper = AlbumentationsDatasetMapper(_cfg(RANDOM_PIPELINE), is_train=True)
        return ResumableTrainLoader(records, mapper=mapper, sampler=lambda seed: TrainingSampler(4, seed=seed),
                                    total_batch_size=2, seed=3, num_workers=workers)

    uninterrupted = iter(loader())
    reference = _tensors([next(uninterrupted) for _ in range(4)])
    first = loader()
    batches = iter(first)
    for _ in range(stop):
        next(batches)
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    batches = iter(resumed)
    after = _tensors([next(batches) for _ in range(4 - stop)])
    assert len(after) == len(reference[2 * stop:])
    for got, expected in zip(after, reference[2 * stop:]):
        assert got[0] == expected[0] and all(torch.equal(a, b) for a, b in zip(got[1:], expected[1:]))
