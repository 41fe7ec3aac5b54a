"""``import seg_d2`` is cheap, and registers everything with Detectron2 whatever the import order.

Each case runs in a fresh interpreter: what is imported, and in which order, is the point.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import seg_d2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "torchvision", "detectron2", "fvcore")


def _run(code, cwd=REPO):
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _evaluation_files(folder):
    """A one-image ground truth and prediction for each CLI task: COCO instances, panoptic, semantic."""
    coco = {"images": [{"id": 1, "width": 4, "height": 4}], "categories": [{"id": 3, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4,
                             "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]}
    dets = [{"image_id": 1, "category_id": 3, "score": 0.9, "bbox": [0, 0, 2, 2],
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]
    segments = [{"id": 1, "category_id": 3, "iscrowd": 0, "area": 4}]
    panoptic = {"images": [{"id": 1, "width": 4, "height": 4, "file_name": "a.jpg"}],
                "categories": [{"id": 3, "name": "cat", "isthing": 1}],
                "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}]}
    ids = np.zeros((4, 4, 3), np.uint8)
    ids[:2, :2, 0] = 1
    for sub in ("gt", "pred", "sem_gt", "sem_pred"):
        os.makedirs(os.path.join(folder, sub))
    for sub in ("gt", "pred"):
        Image.fromarray(ids).save(os.path.join(folder, sub, "a.png"))
        Image.fromarray(ids[..., 0]).save(os.path.join(folder, f"sem_{sub}", "a.png"))
    for name, obj in (("gt.json", coco), ("dets.json", dets), ("panoptic.json", panoptic)):
        with open(os.path.join(folder, name), "w") as f:
            json.dump(obj, f)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    return [["instances", "--gt", p("gt.json"), "--results", p("dets.json"), "--iou-type", "segm", "bbox"],
            ["panoptic", "--gt", p("panoptic.json"), "--pred", p("panoptic.json"), "--gt-folder", p("gt"),
             "--pred-folder", p("pred")],
            ["semantic", "--gt-dir", p("sem_gt"), "--pred-dir", p("sem_pred"), "--num-classes", "2"]]


def test_import_seg_d2_and_offline_evaluation_import_neither_torch_nor_detectron2(tmp_path):
    commands = _evaluation_files(str(tmp_path))
    code = f"""
import json, runpy, sys
heavy = lambda: sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
import seg_d2
after = {{"import seg_d2": heavy()}}
seg_d2.compat.has_compiled_ops()
after["has_compiled_ops"] = heavy()
import seg_d2.evaluation.coco_mask_ap
after["coco_mask_ap"] = heavy()
cli = runpy.run_path("tools/evaluate.py")
for argv in {commands!r}:
    assert cli["main"](argv) == 0, argv
    after[argv[0]] = heavy()
print(json.dumps(after))
"""
    after = _run(code)
    assert after == {step: [] for step in ("import seg_d2", "has_compiled_ops", "coco_mask_ap", "instances",
                                           "panoptic", "semantic")}


# What a process holds once seg_d2 registered itself: every Registry in a loaded module, the dataset
# catalog, get_cfg()'s keys, and the compat fixes. It imports nothing of seg_d2 itself.
_STATE = """
import json, sys
import torch
from fvcore.common.registry import Registry
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
registries = {}
for module in list(sys.modules.values()):
    for value in list(vars(module).values()) if module is not None else ():
        if isinstance(value, Registry):
            registries[value._name] = sorted(value._obj_map)
def keys(node, prefix=""):
    return [k for name, v in node.items() for k in (keys(v, prefix + name + ".") if isinstance(v, dict) else [prefix + name])]
masks = sys.modules["detectron2.structures.masks"]
print(json.dumps({"registries": registries, "datasets": sorted(DatasetCatalog.list()), "cfg": sorted(keys(get_cfg())),
                  "compat": [sys.modules["detectron2._C"].__name__, masks.np.bool is bool,
                             hasattr(torch.ops.detectron2, "nms_rotated")]}))
"""
# The first lines of a user's program, in each import order (seg_d2's Detectron2 build imports seg_d2 at the
# end of detectron2/__init__.py; a seg_d2 module imported first imports Detectron2 half-way through itself).
ORDERS = {
    "seg_d2 first": "import seg_d2\nimport detectron2.modeling",
    "detectron2 first": "import detectron2",
    "build_model first": "from detectron2.modeling import build_model",
    "a seg_d2 data function first": "from seg_d2.data import register_coco_instances_dataset",
    "seg_d2.config first": "from seg_d2.config import add_seg_d2_config",
}
_DETECTRON2_FIRST = ("detectron2 first", "build_model first")


@pytest.fixture(scope="module")
def seg_d2_first_state():
    return _run(ORDERS["seg_d2 first"] + "\n" + _STATE)


def test_seg_d2_first_registers_everything(seg_d2_first_state):
    state = seg_d2_first_state
    assert "UNetSegmentor" in state["registries"]["META_ARCH"]
    assert "UNetHead" in state["registries"]["SEM_SEG_HEADS"]
    assert "DiceLoss" in state["registries"]["SEG_LOSS"]
    assert {"seg_d2_shapes_train", "seg_d2_shapes_val_panoptic"} <= set(state["datasets"])
    assert "SEG_D2.EVALUATION.COCO_ENGINE" in state["cfg"] and "MODEL.UNET.DEPTH" in state["cfg"]
    compiled = seg_d2.compat.has_compiled_ops()
    assert state["compat"] == ["detectron2._C" if compiled else "seg_d2.compat.c_ops", True, True]


@pytest.mark.parametrize("order", [o for o in ORDERS if o != "seg_d2 first"])
def test_every_import_order_registers_the_same(order, seg_d2_first_state):
    if order in _DETECTRON2_FIRST and seg_d2.compat.has_compiled_ops():
        pytest.skip("a compiled Detectron2 does not import seg_d2 itself: import seg_d2 first")
    state = _run(ORDERS[order] + "\n" + _STATE)
    assert state == seg_d2_first_state
