"""check_config: ignored losses and wrong NUM_CLASSES are errors naming the key and numbers, other ignored
seg_d2 keys are warnings naming the key, NUM_CLASSES -1 comes from the dataset."""
import glob
import logging
import os

import pytest
import seg_d2  # noqa: F401  (before detectron2)

from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY
from seg_d2.config_checks import check_config, unused_keys
from seg_d2.modeling.roi_heads import MaskRCNNConvUpsampleLossHead

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/projects/ need their Detectron2 project's keys first (tests/stock/test_projects.py)
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                 if os.sep + "projects" + os.sep not in p)
ZOO = sorted(glob.glob(os.path.join(os.path.dirname(model_zoo.__file__), "configs", "**", "*.yaml"), recursive=True))
DICE = (("DiceLoss", 1.0),)


@ROI_MASK_HEAD_REGISTRY.register()
class _TestLossHeadSubclass(MaskRCNNConvUpsampleLossHead):
    """A user's subclass of a loss-reading head reads the loss too."""


def _cfg(name, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "builtin", name))
    cfg.merge_from_list(list(opts))
    return cfg


def _unused(cfg):
    return sorted(key for _, key, _ in unused_keys(cfg))


@pytest.mark.parametrize(
    "opts, key",
    [
        (("MODEL.ROI_MASK_HEAD.LOSS.TERMS", DICE), "MODEL.ROI_MASK_HEAD.LOSS.TERMS"),  # stock mask head
        (("MODEL.ROI_MASK_HEAD.LOSS.DICE.SMOOTH", 0.0), "MODEL.ROI_MASK_HEAD.LOSS.DICE.SMOOTH"),
        (("MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleLossHead", "MODEL.MASK_ON", False,
          "MODEL.ROI_MASK_HEAD.LOSS.WEIGHT", 2.0), "MODEL.ROI_MASK_HEAD.LOSS.WEIGHT"),  # no mask head at all
        (("MODEL.SEM_SEG_HEAD.LOSS.TERMS", DICE), "MODEL.SEM_SEG_HEAD.LOSS.TERMS"),  # no semantic head
    ],
)
def test_loss_on_a_head_that_ignores_it_is_an_error_naming_the_key(opts, key):
    with pytest.raises(ValueError, match=rf"{key.replace('.', '[.]')} = .* has no effect"):
        check_config(_cfg("mask_rcnn_R18_shapes.yaml", *opts))


def test_semantic_loss_on_stock_sem_seg_fpn_head_is_an_error():
    cfg = _cfg("semantic_fpn_R18.yaml", "MODEL.SEM_SEG_HEAD.LOSS.TERMS", DICE)
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.NAME = 'SemSegFPNHead'"):
        check_config(cfg)


@pytest.mark.parametrize(
    "name, opts",
    [
        ("mask_rcnn_R18_shapes_dice.yaml", ()),
        ("mask_rcnn_R18_shapes.yaml", ("MODEL.ROI_MASK_HEAD.NAME", "_TestLossHeadSubclass",
                                       "MODEL.ROI_MASK_HEAD.LOSS.TERMS", DICE)),
        ("mask_rcnn_R18_shapes.yaml", ("MODEL.ROI_MASK_HEAD.NAME", "NotRegisteredHead",  # unknown: no verdict
                                       "MODEL.ROI_MASK_HEAD.LOSS.TERMS", DICE)),
        ("mask_rcnn_R18_shapes.yaml", ("MODEL.META_ARCHITECTURE", "UsersOwnArch", "MODEL.ROI_MASK_HEAD.LOSS.TERMS",
                                       DICE, "MODEL.UNET.DEPTH", 2)),
        ("panoptic_seg_d2_R18_unet_head.yaml", ("MODEL.SEM_SEG_HEAD.LOSS.TERMS", DICE)),
        ("semantic_unet.yaml", ("MODEL.SEM_SEG_HEAD.LOSS.TERMS", DICE)),
        ("semantic_fcn_R18.yaml", ("MODEL.SEM_SEG_HEAD.LOSS.TERMS", DICE)),
    ],
)
def test_loss_read_by_the_head_passes(name, opts):
    cfg = _cfg(name, *opts)
    check_config(cfg)
    assert _unused(cfg) == []


@pytest.mark.parametrize(
    "name, opts, expected",
    [
        ("mask_rcnn_R18_shapes.yaml", ("MODEL.UNET.DEPTH", 3, "MODEL.MIT.VARIANT", "B1", "MODEL.TIMM.NAME", "resnet50",
                                       "MODEL.MOBILENET.WIDTH_MULT", 0.5),
         ["MODEL.MIT.VARIANT", "MODEL.MOBILENET.WIDTH_MULT", "MODEL.TIMM.NAME", "MODEL.UNET.DEPTH"]),
        ("mask_rcnn_R18_shapes.yaml", ("MODEL.BACKBONE.NAME", "build_timm_fpn_backbone", "MODEL.TIMM.NAME", "resnet50"),
         []),
        ("semantic_fpn_R18.yaml", ("MODEL.SEM_SEG_HEAD.ASPP_RATES", [1, 2, 4],
                                   "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS", [8]),
         ["MODEL.SEM_SEG_HEAD.ASPP_RATES", "MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS"]),
        ("semantic_fcn_R18.yaml", ("MODEL.SEM_SEG_HEAD.CLASSIFIER_DROPOUT", 0.0), []),  # FCNHead reads it
        ("segformer_b0.yaml", ("MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS", [8]), ["MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS"]),
        ("panoptic_fpn_R18_demo.yaml", ("MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT", 0.5),
         ["MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT"]),
        ("panoptic_seg_d2_R18_unet_head.yaml", ("MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT", 0.5), []),
        ("mask_rcnn_R18_shapes_scoring.yaml", ("MODEL.ROI_MASKIOU_HEAD.NUM_FC", 1), []),
        ("mask_rcnn_R18_shapes.yaml", ("MODEL.ROI_MASKIOU_HEAD.NUM_FC", 1), ["MODEL.ROI_MASKIOU_HEAD.NUM_FC"]),
        ("semantic_unet.yaml", ("INPUT.ALBUMENTATIONS.PIPELINE", [["HorizontalFlip", {"p": 1.0}]]),
         ["INPUT.ALBUMENTATIONS.PIPELINE"]),
        ("semantic_unet.yaml", ("INPUT.ALBUMENTATIONS.ENABLED", True,
                                "INPUT.ALBUMENTATIONS.PIPELINE", [["HorizontalFlip", {"p": 1.0}]]), []),
    ],
)
def test_ignored_seg_d2_keys_are_found(name, opts, expected):
    cfg = _cfg(name, *opts)
    check_config(cfg)  # warnings only
    assert _unused(cfg) == expected


def test_ignored_key_is_logged_as_a_warning_naming_the_key(caplog):
    cfg = _cfg("semantic_fpn_R18.yaml", "MODEL.UNET.BASE_CHANNELS", 12345)
    with caplog.at_level(logging.WARNING, logger="seg_d2.config_checks"):
        check_config(cfg)
    (record,) = [r for r in caplog.records if "12345" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("MODEL.UNET.BASE_CHANNELS = 12345 has no effect")
    assert "MODEL.BACKBONE.NAME = 'build_resnet_fpn_backbone'" in record.getMessage()


@pytest.mark.parametrize(
    "name, key, value, count, dataset",
    [
        ("mask_rcnn_R18_shapes.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 2, 3, "seg_d2_shapes_train"),
        ("mask_rcnn_R18_shapes.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 80, 3, "seg_d2_shapes_train"),
        ("semantic_unet.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5, 6, "seg_d2_shapes_train_sem_seg"),
        ("panoptic_fpn_R18_demo.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 6, 4,
         "seg_d2_shapes_train_panoptic_separated"),
        ("panoptic_fpn_R18_demo.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 4, 3, "seg_d2_shapes_train_panoptic_separated"),
    ],
)
def test_num_classes_that_differ_from_the_training_data_are_an_error_naming_both(name, key, value, count, dataset):
    with pytest.raises(ValueError) as error:
        check_config(_cfg(name, key, value))
    assert str(error.value).startswith(f"{key} = {value}, but training dataset '{dataset}' has {count} ")


def test_panoptic_fpn_on_the_standard_panoptic_form_is_refused():
    """The standard form lists all 6 classes as stuff: Panoptic FPN's 4 semantic classes need the separated one."""
    cfg = _cfg("panoptic_fpn_R18_demo.yaml", "DATASETS.TRAIN", ("seg_d2_shapes_train_panoptic",))
    with pytest.raises(ValueError, match="NUM_CLASSES = 4, but training dataset 'seg_d2_shapes_train_panoptic' has 6"):
        check_config(cfg)


def test_num_classes_minus_one_is_set_from_the_training_data():
    cfg = _cfg("panoptic_fpn_R18_demo.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", -1, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", -1)
    cfg.freeze()
    check_config(cfg)
    assert (cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (3, 4)
    assert cfg.is_frozen()

    cfg = _cfg("semantic_unet.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", -1)
    check_config(cfg)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 6 and not cfg.is_frozen()


@pytest.mark.parametrize(
    "train, test, match",
    [
        ((), (), r"no dataset there \(\[\], \[\]\)"),
        (("seg_d2_shapes_train", "coco_2017_train"), (), "the training datasets disagree"),
        (("my_unregistered_train",), ("seg_d2_shapes_val", "coco_2017_val"), "the test datasets disagree"),
    ],
)
def test_num_classes_minus_one_needs_one_answer(train, test, match):
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", -1, "DATASETS.TRAIN", train,
               "DATASETS.TEST", test)
    with pytest.raises(ValueError, match=match):
        check_config(cfg)


def test_num_classes_minus_one_from_the_test_data_when_no_training_dataset_is_registered():
    """Evaluation or prediction where the training data is not registered (another machine)."""
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", -1, "DATASETS.TRAIN",
               ("my_unregistered_train",))
    check_config(cfg)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3


def test_num_classes_that_differ_from_a_test_dataset_are_an_error():
    """Evaluating a 3-class model on COCO's 80 classes would score the wrong classes silently."""
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "DATASETS.TEST", ("seg_d2_shapes_val", "coco_2017_val"))
    with pytest.raises(ValueError, match="NUM_CLASSES = 3, but test dataset 'coco_2017_val' has 80 thing classes"):
        check_config(cfg)


def test_sam_detector_is_checked_as_its_detector_and_its_keys_elsewhere_warn():
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "MODEL.META_ARCHITECTURE", "SamDetector", "MODEL.ROI_HEADS.NUM_CLASSES", 2)
    with pytest.raises(ValueError, match="NUM_CLASSES = 2, but training dataset 'seg_d2_shapes_train' has 3"):
        check_config(cfg)
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "MODEL.META_ARCHITECTURE", "SamDetector",
               "MODEL.SAM.KEEP_DETECTOR_MASKS", True)
    assert _unused(cfg) == []
    cfg = _cfg("mask_rcnn_R18_shapes.yaml", "MODEL.SAM.KEEP_DETECTOR_MASKS", True, "MODEL.SAM.CHECKPOINT", "sam.pth")
    assert _unused(cfg) == ["MODEL.SAM.KEEP_DETECTOR_MASKS"]


def test_num_classes_are_not_checked_where_the_model_does_not_read_them():
    check_config(_cfg("semantic_unet.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 2))
    check_config(_cfg("mask_rcnn_R18_shapes.yaml", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_seg_d2_config_passes_without_ignored_keys(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    check_config(cfg)
    assert _unused(cfg) == []


def test_every_detectron2_model_zoo_config_passes():
    """Detectron2's own configs on its own datasets: no error (their NUM_CLASSES match), nothing ignored."""
    assert len(ZOO) > 50
    for path in ZOO:
        cfg = get_cfg()
        cfg.merge_from_file(path)
        check_config(cfg)
        assert _unused(cfg) == [], path
