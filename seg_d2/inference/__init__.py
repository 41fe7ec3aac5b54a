"""Inference on images of any size: sliding windows stitched for semantic, instance and panoptic models,
masks kept cropped to their objects, and the files tools/predict.py writes (overlays, label PNGs, COCO JSON)."""
from .blending import LogitBlender, window_weights
from .cropped_instances import CroppedInstances, crop_to_rle
from .instance_merge import merge_tile_instances
from .panoptic import fuse_cropped_panoptic
from .sliding_window import Prediction, SlidingWindowPredictor, panoptic_fusion_params

__all__ = [
    "CroppedInstances",
    "LogitBlender",
    "Prediction",
    "SlidingWindowPredictor",
    "crop_to_rle",
    "fuse_cropped_panoptic",
    "merge_tile_instances",
    "panoptic_fusion_params",
    "window_weights",
]
