"""Deterministic synthetic "shapes" scenes: coloured shapes ("things") on textured "stuff" regions.

A scene is an RGB image plus one segment map (0 = void, else a segment id) and the segment list;
every annotation form (COCO instances, COCO panoptic, semantic) is derived from that single map, so
the forms agree by construction. Rasterisation is plain numpy on pixel centres (no drawing library),
so the same seed gives the same arrays on every platform.

What makes it learnable yet not trivial: each stuff class has its own texture, but a thing's class
is decided by its shape only (colours are random); things vary in size, rotation, are occluded by
later things and cut by the border.
"""
import colorsys
from dataclasses import dataclass
from typing import List

import numpy as np

# COCO-style categories; things first so thing ids 1..3 map to contiguous 0..2 in every form.
CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "rectangle", "isthing": 1, "color": [0, 0, 230]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [250, 170, 30]},
    {"id": 4, "name": "sky", "isthing": 0, "color": [135, 190, 235]},
    {"id": 5, "name": "grass", "isthing": 0, "color": [70, 140, 60]},
    {"id": 6, "name": "sand", "isthing": 0, "color": [200, 170, 110]},
]
THING_IDS = [c["id"] for c in CATEGORIES if c["isthing"]]
STUFF_IDS = [c["id"] for c in CATEGORIES if not c["isthing"]]

IMAGE_SIZE = (128, 128)  # (height, width)
MIN_THING_AREA = 24  # things whose visible part is smaller become void: too small to learn from
NUM_THINGS = (2, 7)  # [low, high) things per image
NUM_REGIONS = (3, 6)  # [low, high) Voronoi cells of stuff per image
# Segment ids are category_id * ID_DIVISOR + instance index, so a segment id names its category.
ID_DIVISOR = 1000


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    segment_map: np.ndarray  # (H, W) int32: 0 = void, else a segment id
    segments: List[dict]  # [{"id", "category_id"}], things in painting order, then stuff


def _stuff_texture(category_id, rng, yy, xx):
    """Full-image texture of one stuff class: base colour (jittered per image) + its own pattern."""
    base = np.array(CATEGORIES[category_id - 1]["color"], np.float32) + rng.uniform(-15, 15, 3)
    h, w = yy.shape
    if category_id == 4:  # sky: smooth vertical gradient, faint noise
        pattern = (yy / h - 0.5)[..., None] * 40 + rng.normal(0, 3, (h, w, 1))
    elif category_id == 5:  # grass: strong per-pixel, per-channel noise
        pattern = rng.normal(0, 18, (h, w, 3))
    else:  # sand: diagonal stripes
        pattern = 22 * np.sign(np.sin((xx + yy) * 0.7))[..., None] + rng.normal(0, 5, (h, w, 1))
    return base + pattern


def _stuff_layout(rng, yy, xx):
    """Stuff category id per pixel: Voronoi cells with wavy borders (warped coordinates)."""
    h, w = yy.shape
    n = rng.integers(*NUM_REGIONS)
    seeds = rng.uniform(0, 1, (n, 2)) * (h, w)
    labels = rng.choice(STUFF_IDS, n)
    amplitude, frequency = rng.uniform(3, 10), rng.uniform(0.05, 0.15)
    phase = rng.uniform(0, 6.3, 2)
    wy = yy + amplitude * np.sin(xx * frequency + phase[0])
    wx = xx + amplitude * np.sin(yy * frequency + phase[1])
    dist = (wy[None] - seeds[:, 0, None, None]) ** 2 + (wx[None] - seeds[:, 1, None, None]) ** 2
    return labels[dist.argmin(0)]


def _thing_mask(category_id, rng, yy, xx):
    """Mask of one shape of the given class, centred anywhere in the image (so some are cut)."""
    h, w = yy.shape
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    dy, dx = yy - cy, xx - cx
    angle = rng.uniform(0, np.pi)
    if category_id == 1:  # circle
        return dy**2 + dx**2 <= rng.uniform(7, 22) ** 2
    if category_id == 2:  # rectangle, rotated
        half_h, half_w = rng.uniform(5, 20, 2)
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    # triangle: 3 vertices roughly 120 degrees apart; inside = left of every counter-clockwise edge
    radius = rng.uniform(10, 26)
    angles = angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    vy, vx = radius * np.sin(angles), radius * np.cos(angles)
    inside = np.ones_like(dy, dtype=bool)
    for i in range(3):
        j = (i + 1) % 3
        inside &= (vx[j] - vx[i]) * (dy - vy[i]) - (vy[j] - vy[i]) * (dx - vx[i]) >= 0
    return inside


def _thing_color(rng):
    """A random saturated colour: colour says nothing about a thing's class."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.6, 1), rng.uniform(0.55, 1))
    return np.array(rgb, np.float32) * 255


def generate_scene(rng: np.random.Generator, image_size=IMAGE_SIZE) -> Scene:
    """One scene from ``rng``. Later things occlude earlier ones; segments are the visible parts."""
    h, w = image_size
    # pixel centres, so a shape covers a pixel when it covers the pixel's centre
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    stuff = _stuff_layout(rng, yy, xx)
    image = np.zeros((h, w, 3), np.float32)
    segment_map = np.zeros((h, w), np.int32)
    for category_id in STUFF_IDS:
        texture = _stuff_texture(category_id, rng, yy, xx)  # drawn for every class: stable rng use
        region = stuff == category_id
        image[region] = texture[region]
        segment_map[region] = category_id * ID_DIVISOR

    things = []
    for index in range(1, rng.integers(*NUM_THINGS) + 1):
        category_id = int(rng.choice(THING_IDS))
        mask = _thing_mask(category_id, rng, yy, xx)
        image[mask] = _thing_color(rng) + rng.normal(0, 5, (int(mask.sum()), 3))
        segment_id = category_id * ID_DIVISOR + index
        segment_map[mask] = segment_id
        things.append({"id": segment_id, "category_id": category_id})

    kept = []
    for thing in things:
        visible = segment_map == thing["id"]
        if visible.sum() < MIN_THING_AREA:
            segment_map[visible] = 0  # still drawn in the image, so neither thing nor stuff: void
        else:
            kept.append(thing)
    stuff_segments = [
        {"id": c * ID_DIVISOR, "category_id": c}
        for c in STUFF_IDS
        if (segment_map == c * ID_DIVISOR).any()
    ]
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(image=image, segment_map=segment_map, segments=kept + stuff_segments)
