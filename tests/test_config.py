"""seg_d2's keys are in Detectron2's own get_cfg() after any import order, and add_seg_d2_config is idempotent."""
import glob
import os
import subprocess
import sys

import pytest
import seg_d2  # noqa: F401  (before detectron2)

from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from seg_d2.config import add_seg_d2_config, stock_detectron2_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/projects/ need their Detectron2 project's keys first (tests/stock/test_projects.py)
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                 if os.sep + "projects" + os.sep not in p)
# A few seg_d2 keys (hand-picked from several areas) and their defaults.
SEG_D2_KEYS = {
    "MODEL.ROI_MASKIOU_HEAD.CONV_DIM": 256,
    "MODEL.ROI_MASK_HEAD.LOSS.TERMS": (("BCELoss", 1.0),),
    "MODEL.UNET.DEPTH": 4,
    "SEG_D2.EVALUATION.COCO_ENGINE": "auto",
    "INPUT.ALBUMENTATIONS.ENABLED": False,
}


def _get(cfg, key):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def _flat(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for name, child in node.items() for k, v in _flat(child, f"{prefix}.{name}".lstrip(".")).items()}


def test_get_cfg_has_seg_d2_keys_in_a_process_that_never_imports_seg_d2():
    """What a stock tool does: Detectron2 imports only (seg_d2's Detectron2 build imports seg_d2 itself).
    This test module imported seg_d2 first: the other order."""
    code = (
        "from detectron2.config import get_cfg\ncfg = get_cfg()\nvalues = []\n"
        f"for key in {list(SEG_D2_KEYS)!r}:\n    node = cfg\n    for name in key.split('.'):\n"
        "        node = node[name]\n    values.append(node)\nprint(repr(values))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == repr(list(SEG_D2_KEYS.values()))


def test_get_cfg_equals_stock_defaults_plus_seg_d2_keys():
    stock, cfg = _flat(stock_detectron2_config()), _flat(get_cfg())
    assert {k: cfg[k] for k in stock} == stock  # stock defaults unchanged
    assert {k: cfg[k] for k in SEG_D2_KEYS} == SEG_D2_KEYS
    assert not any(k in stock for k in SEG_D2_KEYS)
    assert _flat(add_seg_d2_config(stock_detectron2_config())) == cfg


def test_add_seg_d2_config_keeps_values_and_is_idempotent():
    cfg = get_cfg()
    cfg.MODEL.UNET.DEPTH = 5
    cfg.MODEL.ROI_MASK_HEAD.LOSS.TERMS = (("DiceLoss", 1.0),)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    before = cfg.clone()
    assert add_seg_d2_config(cfg) is cfg and cfg == before
    assert add_seg_d2_config(add_seg_d2_config(cfg)) == before

    cfg.freeze()
    add_seg_d2_config(cfg)  # nothing missing: a frozen config is fine
    stock = stock_detectron2_config()
    stock.freeze()
    with pytest.raises(AttributeError, match="immutable"):
        add_seg_d2_config(stock)


def test_add_seg_d2_config_fills_a_partial_node():
    """A user's own CfgNode with part of a seg_d2 node (e.g. written by an older seg_d2) gets the rest."""
    cfg = stock_detectron2_config()
    cfg.MODEL.UNET = CfgNode({"DEPTH": 3})
    add_seg_d2_config(cfg)
    assert cfg.MODEL.UNET.DEPTH == 3 and cfg.MODEL.UNET.BASE_CHANNELS == get_cfg().MODEL.UNET.BASE_CHANNELS


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_config_merges_into_plain_get_cfg(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE


def test_model_zoo_get_config_has_seg_d2_keys():
    cfg = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert {k: _get(cfg, k) for k in SEG_D2_KEYS} == SEG_D2_KEYS
    cfg.merge_from_file(os.path.join(REPO, "configs", "builtin", "mask_rcnn_R18_shapes_dice.yaml"))
    assert cfg.MODEL.ROI_MASK_HEAD.LOSS.TERMS == (("DiceLoss", 1.0),)
