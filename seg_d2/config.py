"""add_seg_d2_config(cfg): every config key seg_d2 adds, with its default and why.

One function per area, so each concept's keys live together; the defaults reproduce stock Detectron2.
"""
from detectron2.config import CfgNode as CN


def _add_data_config(cfg):
    pass


def _add_loss_config(cfg):
    pass


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
