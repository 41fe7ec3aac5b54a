"""add_seg_d2_config(cfg): every config key seg_d2 adds, with its default and why.

One function per area, so each concept's keys live together; the defaults reproduce stock Detectron2.
"""
from detectron2.config import CfgNode as CN


def _add_data_config(cfg):
    pass


def _add_loss_config(cfg):
    """MODEL.ROI_MASK_HEAD.LOSS and MODEL.SEM_SEG_HEAD.LOSS: each head's loss, read by
    ``seg_d2.losses.build_loss``. Both nodes have the same keys; only the default TERMS differ."""

    def loss_node(default_loss):
        node = CN()
        # (registered loss name, weight) pairs; the loss is their weighted sum, e.g.
        # (("BCELoss", 1.0), ("DiceLoss", 0.5)). Names: seg_d2.losses.SEG_LOSS_REGISTRY.
        node.TERMS = ((default_loss, 1.0),)
        # Overall factor on the sum (the mask-head LOSS_WEIGHT Detectron2 lacks). The semantic head also
        # multiplies by Detectron2's own MODEL.SEM_SEG_HEAD.LOSS_WEIGHT; keep one of the two at 1.
        node.WEIGHT = 1.0
        # Per-class weights ((): none; else one per channel) and label smoothing ε in [0, 1].
        node.CE = CN({"CLASS_WEIGHTS": (), "LABEL_SMOOTHING": 0.0})
        # POS_WEIGHT >= 0 scales the foreground term (> 1 favours recall); CLASS_WEIGHTS as for CE.
        node.BCE = CN({"POS_WEIGHT": 1.0, "CLASS_WEIGHTS": ()})
        # Region losses: SMOOTH >= 0 is added to numerator and denominator (an empty target keeps a
        # finite loss and a gradient); EPS floors the denominator; LOG_LOSS uses -log(index) instead of
        # 1 - index; PER_IMAGE computes the overlap per image (ROI) and averages, else over the batch.
        region = {"SMOOTH": 1.0, "EPS": 1e-7, "PER_IMAGE": False}
        node.DICE = CN({**region, "LOG_LOSS": False})
        node.IOU = CN({**region, "LOG_LOSS": False})
        # ALPHA, BETA in [0, 1] weigh false positives and false negatives (BETA > ALPHA: recall).
        node.TVERSKY = CN({**region, "LOG_LOSS": False, "ALPHA": 0.3, "BETA": 0.7})
        # GAMMA >= 0 is the exponent on (1 - Tversky index); 0.75 is Abraham & Khan's best.
        node.FOCAL_TVERSKY = CN({**region, "ALPHA": 0.3, "BETA": 0.7, "GAMMA": 0.75})
        # ALPHA in [0, 1] balances foreground/background (None: off); GAMMA >= 0 focuses on hard pixels.
        node.FOCAL = CN({"ALPHA": 0.25, "GAMMA": 2.0})
        # PER_IMAGE as above; CLASSES: "present" (classes in the target) or "all" (multi-class only).
        node.LOVASZ = CN({"PER_IMAGE": False, "CLASSES": "present"})
        return node

    # Defaults reproduce Detectron2: mean BCE over the ROI pixels of each ROI's class channel, and
    # mean softmax CE over the non-ignored pixels (ignore index = MODEL.SEM_SEG_HEAD.IGNORE_VALUE).
    cfg.MODEL.ROI_MASK_HEAD.LOSS = loss_node("BCELoss")
    cfg.MODEL.SEM_SEG_HEAD.LOSS = loss_node("CrossEntropyLoss")


def _add_mask_head_config(cfg):
    pass


def _add_semantic_config(cfg):
    pass


def _add_panoptic_config(cfg):
    pass


def _add_evaluation_config(cfg):
    pass


def add_seg_d2_config(cfg):
    """Add seg_d2's keys to a Detectron2 config (call once, right after ``get_cfg()``)."""
    cfg.SEG_D2 = CN()
    for add in (
        _add_data_config,
        _add_loss_config,
        _add_mask_head_config,
        _add_semantic_config,
        _add_panoptic_config,
        _add_evaluation_config,
    ):
        add(cfg)
    return cfg
