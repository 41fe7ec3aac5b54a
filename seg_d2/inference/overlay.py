"""Overlay pictures of a :class:`Prediction`, drawn with Detectron2's Visualizer.

Large images are drawn at most ``max_side`` pixels a side. Instance masks are painted from their crops at
the picture's size in one image (the Visualizer's own instance path makes one full-size mask and one
matplotlib polygon per outline), the ``max_drawn`` best-scoring ones, then their boxes and labels drawn
by the Visualizer; semantic and stuff regions go through ``draw_sem_seg`` as in Detectron2.
"""
import cv2
import numpy as np
from scipy import ndimage

from detectron2.utils.colormap import random_color
from detectron2.utils.visualizer import Visualizer

__all__ = ["draw_prediction", "draw_prompt"]


def _scale(height, width, max_side):
    return min(1.0, max_side / max(height, width)) if max_side > 0 else 1.0


def _display(image, input_format, scale):
    """The picture to draw on: the model input (uint8, or float 0..255 from seg_d2's reader, BGR or RGB)
    resized by ``scale`` first (no full-size copy of a large image), then as uint8 RGB."""
    if scale != 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
    rgb = image[:, :, ::-1] if input_format == "BGR" else image
    return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb)


def _sample(labels, shape):
    """Nearest-neighbour resampling of an (H, W) integer map to ``shape``, any dtype."""
    rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0], labels.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1], labels.shape[1] - 1).astype(int)
    return labels[np.ix_(rows, cols)]


def _label(names, category, score):
    name = names[category] if names and 0 <= category < len(names) else str(category)
    return name if score is None else f"{name} {score * 100:.0f}%"


def _display_window(x0, y0, shape, scale, size):
    """(c0, r0, c1, r1): the picture's pixels a crop at (x0, y0) of ``shape`` covers, or None if none."""
    c0, r0 = int(np.floor(x0 * scale)), int(np.floor(y0 * scale))
    c1 = min(size[1], max(c0 + 1, int(np.ceil((x0 + shape[1]) * scale))))
    r1 = min(size[0], max(r0 + 1, int(np.ceil((y0 + shape[0]) * scale))))
    return (c0, r0, c1, r1) if c0 < c1 and r0 < r1 and shape[0] and shape[1] else None


def _paint_masks(vis, crops, colors, scale):
    """Every mask at once, as one RGBA image (as Detectron2 draws a mask with holes): filled at alpha 0.5,
    outlined in a darker shade, larger masks first so smaller ones stay visible. One matplotlib polygon per
    outline, as the Visualizer draws masks, took ~15 ms each: 48 s for the 3000 outlines of 87 noisy masks."""
    h, w = vis.img.shape[:2]
    rgba = np.zeros((h, w, 4), dtype=np.float32)
    for i in sorted(range(len(crops)), key=lambda k: -int(crops[k][2].sum())):
        x0, y0, crop = crops[i]
        window = _display_window(x0, y0, crop.shape, scale, (h, w))
        if window is None:
            continue
        c0, r0, c1, r1 = window
        mask = _sample(crop.astype(np.uint8), (r1 - r0, c1 - c0)).astype(bool)
        region = rgba[r0:r1, c0:c1]
        region[mask] = (*colors[i], 0.5)
        region[mask & ~ndimage.binary_erosion(mask)] = (*vis._change_color_brightness(colors[i], -0.7), 1.0)
    vis.output.ax.imshow(rgba, extent=(0, w, h, 0), interpolation="nearest")


def _draw_things(vis, items, names, scale):
    """items: (box XYXY, (x0, y0, crop), category, score); masks painted, then boxes and labels drawn as
    Detectron2 draws instances."""
    if not items:
        return
    boxes = np.array([box for box, _, _, _ in items], dtype=np.float64).reshape(-1, 4) * scale
    colors = [random_color(rgb=True, maximum=1) for _ in items]
    _paint_masks(vis, [mask for _, mask, _, _ in items], colors, scale)
    labels = [_label(names, category, score) for _, _, category, score in items]
    vis.overlay_instances(boxes=boxes, labels=labels, assigned_colors=colors, alpha=0.5)


def _instance_items(instances, max_drawn):
    best = np.argsort(-instances.scores, kind="stable")[:max_drawn]
    return [(instances.boxes[i], instances.masks[i], int(instances.classes[i]), float(instances.scores[i]))
            for i in best]


def _segment_items(prediction, max_drawn):
    """Things of a panoptic prediction: the pixels each segment holds, in its bounding box (one pass)."""
    boxes = ndimage.find_objects(prediction.panoptic_seg, max_label=len(prediction.segments_info))
    things = sorted((s for s in prediction.segments_info if s["isthing"]), key=lambda s: -s.get("score", 0.0))
    items = []
    for segment in things[:max_drawn]:
        rows, cols = boxes[segment["id"] - 1] or (slice(0, 0), slice(0, 0))
        own = prediction.panoptic_seg[rows, cols] == segment["id"]
        items.append(((cols.start, rows.start, cols.stop, rows.stop), (cols.start, rows.start, own),
                      segment["category_id"], segment.get("score")))
    return items


def _stuff_labels(prediction, shape):
    """The stuff category of each pixel at ``shape`` (things and unassigned pixels: 65535, not drawn)."""
    lookup = np.full(len(prediction.segments_info) + 1, 65535, dtype=np.int64)
    for segment in prediction.segments_info:
        if not segment["isthing"]:
            lookup[segment["id"]] = segment["category_id"]
    return lookup[_sample(prediction.panoptic_seg, shape)]


def draw_prediction(image, input_format, prediction, metadata, max_side=1600, max_drawn=300):
    """The overlay (a Detectron2 ``VisImage``) of ``prediction`` on ``image`` (the model's input)."""
    scale = _scale(prediction.height, prediction.width, max_side)
    vis = Visualizer(_display(image, input_format, scale), metadata)
    shape = vis.img.shape[:2]
    names = metadata.get("thing_classes", None)
    if prediction.panoptic_seg is not None:
        vis.draw_sem_seg(_stuff_labels(prediction, shape), alpha=0.5)
        _draw_things(vis, _segment_items(prediction, max_drawn), names, scale)
    elif prediction.sem_seg is not None:
        vis.draw_sem_seg(_sample(prediction.sem_seg, shape), alpha=0.5)
    elif prediction.instances is not None:
        _draw_things(vis, _instance_items(prediction.instances, max_drawn), names, scale)
    return vis.get_output()


def draw_prompt(image, input_format, answers, prompts, metadata, max_side=1600):
    """Prompt answers on ``image`` (the model input). ``prompts``: SAM-style prompts (dicts with
    ``point_coords``/``point_labels`` and/or ``box``); ``answers``: for each, its (mask, score) candidates
    best first (the best in lime, alternatives faint yellow). Points are green (positive) or red (negative),
    boxes white."""
    scale = _scale(image.shape[0], image.shape[1], max_side)
    vis = Visualizer(_display(image, input_format, scale), metadata)
    shape = vis.img.shape[:2]
    for candidates in answers:
        for rank, (mask, score) in enumerate(candidates):
            vis.draw_binary_mask(_sample(mask.astype(np.uint8), shape), color="lime" if rank == 0 else "yellow",
                                 text=f"#{rank + 1} {score:.2f}", alpha=0.5 if rank == 0 else 0.25)
    for prompt in prompts:
        for (x, y), label in zip(prompt.get("point_coords", ()), prompt.get("point_labels", ())):
            vis.draw_circle((x * scale, y * scale), color="green" if label else "red", radius=4)
        if prompt.get("box") is not None:
            vis.draw_box([v * scale for v in prompt["box"]], edge_color="white")
    return vis.get_output()
