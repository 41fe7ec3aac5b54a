"""Every model family exports to ONNX and TorchScript and the exports answer as the PyTorch model does
(seg_d2.export.TOLERANCES) on real images: built-in validation images, photos from ../shared/data at other
sizes and aspect ratios (dynamic input and output sizes), and, for detectors, images with no detection."""
import os
from collections import namedtuple

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import seg_d2
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model

from seg_d2.export import check_export, export_model, model_family
from seg_d2.export.exporter import _non_standard_ops

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
SHARED = os.path.join(REPO, "..", "shared", "data")
SHARED_PHOTO = os.path.join(SHARED, "voc-labelme", "JPEGImages", "2011_000003.jpg")  # 500x338

# One config (under configs/) per distinct inference graph: the loss-only variants (dice, focal, ...) trace
# identically, and the COCO-* / Semantic configs are these models on a ResNet-50 at COCO sizes.
CONFIGS = {
    "builtin/semantic_fpn_R18": "semantic",
    "builtin/semantic_unet": "semantic",
    "builtin/semantic_deeplabv3plus_R18": "semantic",
    "builtin/segformer_b0": "semantic",
    "timm/semantic_fpn_efficientnet_b0_shapes": "semantic",  # a timm backbone, RGB input
    "builtin/mask_rcnn_R18_shapes": "instance",
    "builtin/mask_rcnn_R18_shapes_cascade_scoring": "instance",
    "builtin/panoptic_fpn_R18_demo": "panoptic",
    "builtin/panoptic_seg_d2_R18_deeplabv3plus_scoring": "panoptic",
}


def _cfg(name):
    cfg = get_cfg()
    seg_d2.add_seg_d2_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", name + ".yaml"))
    return cfg


def _with_and_without_detections(model, image, blank):
    """A random-weight detector keeps up to 100 detections on any image. Sharpen its classifier and raise
    its background logit (bisection) until ``image`` keeps a few detections and ``blank`` none."""
    predictors = model.roi_heads.box_predictor  # one per stage in a cascade, whose scores are averaged
    classifiers = [p.cls_score for p in (predictors if isinstance(predictors, torch.nn.ModuleList) else [predictors])]
    base = []
    for classifier in classifiers:
        classifier.weight.data.mul_(5)
        base.append(classifier.bias.data[-1].item())
    low, high = 0.0, 16.0
    for _ in range(12):
        shift = (low + high) / 2
        for classifier, bias in zip(classifiers, base):
            classifier.bias.data[-1] = bias + shift
        counts = _count(model, image), _count(model, blank)
        if counts[0] > 0 and counts[1] == 0:
            return
        low, high = (shift, high) if counts[1] > 0 else (low, shift)
    raise AssertionError(f"could not calibrate the detector to detect on one image and not the other: {counts}")


def _count(model, image):
    tensor = torch.from_numpy(image.transpose(2, 0, 1).astype("float32"))
    with torch.no_grad():
        return len(model([{"image": tensor}])[0]["instances"])


def _images():
    """Two built-in validation images (128x128), a uniform grey one (an empty scene) and, where present, a
    photo from ../shared/data (resized to 128x189 for the model, answered at 338x500)."""
    records = DatasetCatalog.get("seg_d2_shapes_val")
    images = [read_image(r["file_name"], format="BGR") for r in records[:2]]
    images.append(np.full((128, 128, 3), 120, dtype=np.uint8))
    if os.path.isdir(SHARED):
        images.append(read_image(SHARED_PHOTO, format="BGR"))
    return images


# one exported config: its name, the model, {format: path}, the check images, PyTorch's detection counts
Exported = namedtuple("Exported", "name model paths images counts")


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    name = request.param
    cfg = _cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = _images()
    if CONFIGS[name] != "semantic":
        _with_and_without_detections(model, images[0], images[2])
    paths = export_model(cfg, str(tmp_path_factory.mktemp(name.replace("/", "_"))), model=model, image=images[0])
    counts = [_count(model, image) for image in images] if CONFIGS[name] != "semantic" else None
    return Exported(name, model, paths, images, counts)


def test_family(exported):
    assert model_family(exported.model) == CONFIGS[exported.name]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_reproduces_pytorch(exported, fmt):
    """Same outputs at each image's own size (shapes are compared too), within the stated tolerances."""
    name, model, paths, images, counts = exported
    reports = check_export(paths[fmt], model, images)  # raises beyond seg_d2.export.TOLERANCES
    assert len(reports) == len(images)
    if counts:  # the same count as PyTorch on each image, and that count was 0 on some
        assert all(report["detections"] == 0 for report in reports)
        assert 0 in counts and max(counts) > 0, counts


def test_check_images_include_a_shared_photo(exported):
    if not os.path.isdir(SHARED):
        pytest.skip(f"{SHARED} absent (the shared real-image data): checked on the built-in images only")
    assert exported.images[-1].shape == (338, 500, 3)


def test_onnx_graph_has_only_standard_ops(exported):
    paths = exported.paths
    graph = onnx.load(paths["onnx"])
    onnx.checker.check_model(graph)
    assert {o.domain for o in graph.opset_import} <= {"", "ai.onnx"}
    assert _non_standard_ops(paths["onnx"]) == []


def test_non_standard_op_is_found(tmp_path):
    node = helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft")
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph([node], "g", [tensor], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    onnx.save(helper.make_model(graph), str(tmp_path / "custom.onnx"))
    assert _non_standard_ops(str(tmp_path / "custom.onnx")) == ["com.microsoft::Inverse"]


def test_parity_check_catches_a_wrong_export(exported, tmp_path):
    """The checks can fail: perturb one weight of the PyTorch model and the export no longer matches."""
    name, model, paths, images, _ = exported
    if name != "builtin/mask_rcnn_R18_shapes":
        pytest.skip("one model is enough")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    saved = conv.weight.data.clone()
    try:
        conv.weight.data.add_(0.05)
        with pytest.raises(AssertionError, match="beyond tolerance"):
            check_export(paths["onnx"], model, images[:2])
    finally:
        conv.weight.data.copy_(saved)
