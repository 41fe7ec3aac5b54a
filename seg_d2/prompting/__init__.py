"""Prompted segmentation on top of seg_d2's trained models (SAM-style point prompts)."""
from .point_prompts import NoMatchingInstance, predict_from_points, select_instances

__all__ = ["NoMatchingInstance", "predict_from_points", "select_instances"]
