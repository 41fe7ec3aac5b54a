"""Sliding-window inference: a Detectron2 model on an image of any size, tile by tile, stitched.

Each tile (``seg_d2.data.tiling.tile_windows``) goes through the tile predictor (by default Detectron2's
``DefaultPredictor``, so a tile is resized by INPUT.MIN_SIZE_TEST like any image it sees; the default
tile side, INPUT.MIN_SIZE_TEST, keeps the image's own resolution). Then, by what the model returns:

- ``sem_seg`` logits are blended with a pyramid window weight and argmax'ed (:class:`.LogitBlender`);
- ``instances`` are cropped to their masks and merged across seams (:func:`.merge_tile_instances`);
- ``panoptic_seg``: the stitched semantic labels and instances are fused again for the whole image with
  the model's own thresholds (:func:`.fuse_cropped_panoptic`), so no segment stops at a seam. A model
  whose panoptic output is a label map without segments (Panoptic-DeepLab: category * label_divisor +
  instance, grouped around predicted centres) is taken as it is, on whole images only.

An image predicted whole is the one-window case of the same path. Memory follows the objects: masks are
cropped, logits are kept only where windows still overlap, and the outputs are (H, W) label maps.
"""
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from detectron2.config import configurable
from detectron2.engine import DefaultPredictor

from seg_d2.data.tiling import tile_windows
from seg_d2.utils.memory import release_free_heap
from seg_d2.utils.progress import progress

from .blending import LogitBlender
from .cropped_instances import CroppedInstances
from .instance_merge import merge_tile_instances
from .panoptic import fuse_cropped_panoptic

__all__ = ["Prediction", "SlidingWindowPredictor", "panoptic_fusion_params"]


@dataclass
class Prediction:
    """A model's output for one whole image; fields the model does not predict are None.

    sem_seg: (H, W) labels (uint8, or int32 beyond 256 classes); for panoptic models the separated
        form (0 = things, 1..S stuff). instances: :class:`CroppedInstances`. panoptic_seg: (H, W) int32
        segment ids (0 = unassigned) with ``segments_info`` as Detectron2's (contiguous category ids).
    """

    height: int
    width: int
    num_tiles: int = 1
    sem_seg: Optional[np.ndarray] = None
    instances: Optional[CroppedInstances] = None
    panoptic_seg: Optional[np.ndarray] = None
    segments_info: Optional[List[dict]] = None


def _segments_from_labels(labels, label_divisor, thing_ids):
    """Panoptic-DeepLab's panoptic map (category * label_divisor + instance, -1 void) as segment ids 1..K
    with Detectron2's segments_info."""
    values, inverse, areas = np.unique(labels, return_inverse=True, return_counts=True)
    ids = np.zeros(len(values), dtype=np.int32)
    segments = []
    for k, (value, area) in enumerate(zip(values.tolist(), areas.tolist())):
        if value < 0:
            continue
        category = value // label_divisor
        segments.append({"id": len(segments) + 1, "category_id": category, "isthing": category in thing_ids,
                         "area": area})
        ids[k] = len(segments)
    return ids[inverse.reshape(labels.shape)], segments


def panoptic_fusion_params(model):
    """The fusion thresholds of a (stock or seg_d2) Panoptic FPN, as its own inference uses them."""
    limits = getattr(model, "stuff_area_limits", None)  # SegD2PanopticFPN: one per stuff class
    return {
        "overlap_thresh": model.combine_overlap_thresh,
        "stuff_area_limit": model.combine_stuff_area_thresh if limits is None else limits,
        "score_thresh": model.combine_instances_score_thresh,
    }


def _panoptic_labels(metadata):
    """How a Panoptic-DeepLab model (which keeps its training set's metadata as ``meta``) labels its map."""
    if metadata is None or "label_divisor" not in metadata.as_dict():
        return None
    return {"label_divisor": metadata.label_divisor,
            "thing_ids": set(metadata.thing_dataset_id_to_contiguous_id.values())}


class _Stitcher:
    """Collects the tile outputs of one image and stitches them once every tile is in."""

    def __init__(self, outputs, windows, height, width, panoptic_fusion, panoptic_labels):
        self.windows, self.height, self.width = windows, height, width
        self.blender = None
        if "sem_seg" in outputs:
            self.blender = LogitBlender(windows, height, width, num_classes=outputs["sem_seg"].shape[0])
        # Panoptic-DeepLab returns instances only where it found some
        self.tiles = [] if "instances" in outputs or panoptic_labels else None
        self.fusion = self.labels = None
        if "panoptic_seg" not in outputs:
            return
        if outputs["panoptic_seg"][1] is None:  # a label map, not segments from sem_seg + instances
            if len(windows) > 1 or not panoptic_labels:
                raise ValueError("this model's panoptic output is its own label map (as Panoptic-DeepLab's), which "
                                 "cannot be stitched from tiles: predict whole images (--tile 0)")
            self.labels = panoptic_labels
        elif panoptic_fusion is None or self.blender is None or self.tiles is None:
            raise ValueError("tiled panoptic inference needs the model's sem_seg and instances outputs and its "
                             "fusion thresholds (panoptic_fusion=panoptic_fusion_params(model))")
        else:
            self.fusion = panoptic_fusion

    def add(self, window, outputs):
        x0, y0 = window[:2]
        if self.blender is not None:
            self.blender.add(window, outputs["sem_seg"].to("cpu").float().numpy())
        if self.labels is not None:
            self.labels = dict(self.labels, panoptic=outputs["panoptic_seg"][0].to("cpu").numpy())
        if self.tiles is not None and "instances" in outputs:
            instances = outputs["instances"]
            if not instances.has("pred_masks"):
                raise ValueError("the model predicts boxes without masks; seg_d2's inference stitches instance masks")
            self.tiles.append((window, CroppedInstances.from_instances(instances, offset=(x0, y0))))

    def finish(self, merge_iou, merge_class_agnostic):
        out = Prediction(self.height, self.width, num_tiles=len(self.windows))
        if self.blender is not None:
            out.sem_seg = self.blender.finish()
        if self.tiles is not None:
            out.instances = merge_tile_instances(self.tiles, self.height, self.width, merge_iou, merge_class_agnostic)
        if self.fusion is not None:
            out.panoptic_seg, out.segments_info = fuse_cropped_panoptic(out.instances, out.sem_seg, **self.fusion)
        if self.labels is not None:
            out.panoptic_seg, out.segments_info = _segments_from_labels(
                self.labels["panoptic"], self.labels["label_divisor"], self.labels["thing_ids"])
        return out


class SlidingWindowPredictor:
    """``predictor(image)`` -> :class:`Prediction` for an (H, W, C) image in the model's INPUT.FORMAT.

    Images of more than ``tile_above_pixels`` pixels are predicted in tiles of ``tile_size`` (neighbours
    sharing ``overlap`` pixels), the others whole.
    """

    @configurable
    def __init__(self, predictor, *, tile_size: int, overlap: int, tile_above_pixels: int, merge_iou: float = 0.5,
                 merge_class_agnostic: bool = False, panoptic_fusion: Optional[dict] = None,
                 panoptic_labels: Optional[dict] = None):
        """
        Args:
            predictor: callable (H, W, C) image -> Detectron2 outputs dict (e.g. ``DefaultPredictor``).
            tile_size: tile side in pixels; overlap: pixels shared by neighbouring tiles (< tile_size).
            tile_above_pixels: images with more pixels than this are tiled (0: all; -1: none).
            merge_iou, merge_class_agnostic: see :func:`.merge_tile_instances`.
            panoptic_fusion: thresholds for panoptic models (:func:`panoptic_fusion_params`).
            panoptic_labels: for models whose panoptic output is a label map (Panoptic-DeepLab):
                {"label_divisor": int, "thing_ids": contiguous ids of the thing classes}.
        """
        if tile_size <= 0 or not 0 <= overlap < tile_size:
            raise ValueError(f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size} and {overlap}")
        if not 0.0 < merge_iou <= 1.0:
            raise ValueError(f"merge_iou must be in (0, 1], got {merge_iou}")
        self.predictor = predictor
        self.tile_size, self.overlap, self.tile_above_pixels = tile_size, overlap, tile_above_pixels
        self.merge_iou, self.merge_class_agnostic = merge_iou, merge_class_agnostic
        self.panoptic_fusion = panoptic_fusion
        self.panoptic_labels = panoptic_labels

    @classmethod
    def from_config(cls, cfg, predictor=None):
        node = cfg.SEG_D2.INFERENCE
        predictor = predictor or DefaultPredictor(cfg)
        tile_size = node.TILE_SIZE or cfg.INPUT.MIN_SIZE_TEST
        if not 0.0 <= node.TILE_OVERLAP < 1.0:
            raise ValueError(f"SEG_D2.INFERENCE.TILE_OVERLAP is a fraction of the tile side in [0, 1), "
                             f"got {node.TILE_OVERLAP}")
        model = getattr(predictor, "model", None)
        return {
            "predictor": predictor,
            "tile_size": tile_size,
            "overlap": int(round(node.TILE_OVERLAP * tile_size)),
            "tile_above_pixels": node.TILE_ABOVE_PIXELS,
            "merge_iou": node.MERGE_IOU,
            "merge_class_agnostic": node.MERGE_CLASS_AGNOSTIC,
            "panoptic_fusion": panoptic_fusion_params(model) if hasattr(model, "combine_overlap_thresh") else None,
            "panoptic_labels": _panoptic_labels(getattr(model, "meta", None)),
        }

    def windows(self, height, width):
        """The windows (x0, y0, x1, y1) an image of this size is predicted in."""
        if self.tile_above_pixels < 0 or height * width <= self.tile_above_pixels:
            return [(0, 0, width, height)]
        return tile_windows(height, width, self.tile_size, self.overlap)

    def __call__(self, image):
        height, width = image.shape[:2]
        windows = self.windows(height, width)
        stitcher = None
        tiles = progress(windows, desc="tiles", unit="tile", leave=False) if len(windows) > 1 else windows
        for window in tiles:
            x0, y0, x1, y1 = window
            outputs = self.predictor(image[y0:y1, x0:x1])
            if stitcher is None:
                stitcher = _Stitcher(outputs, windows, height, width, self.panoptic_fusion, self.panoptic_labels)
            stitcher.add(window, outputs)
            del outputs
            if len(windows) > 1:
                release_free_heap()  # else the heap fragments between the tiles' outputs and the kept crops
        return stitcher.finish(self.merge_iou, self.merge_class_agnostic)
