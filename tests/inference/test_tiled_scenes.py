"""Sliding-window inference on scenes several tiles wide, with a model that sees one tile at a time:
the same instances as whole-image inference, objects cut by seams joined into ONE instance, semantic and
panoptic outputs identical to whole-image ones, and full-image COCO evaluation of the stitched output."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

import seg_d2  # noqa: F401  (before detectron2)
from seg_d2.data.tiling import tile_windows
from seg_d2.evaluation import evaluate_coco
from seg_d2.inference import CroppedInstances, SlidingWindowPredictor, merge_tile_instances

TILE, OVERLAP = 64, 16
FUSION = dict(overlap_thresh=0.5, stuff_area_limit=0, score_thresh=0.0)


def _objects(s):
    """(value, class, shape); cut_by_seam says which ones a tile border inside the image crosses."""
    return [
        (101, 0, s.disc(20, 20, 8)),          # inside the first tile only
        (102, 1, s.disc(52, 30, 6)),          # inside the shared band of tiles 0 and 1: both see it whole
        (103, 2, s.rect(40, 70, 110, 84)),    # cut by the seams at x=48 and x=64
        (104, 0, s.disc(96, 96, 14)),         # on a corner where four tiles meet
        (105, 1, s.rect(10, 150, 170, 158)),  # a bar across three tiles
        (106, 2, s.rect(120, 20, 131, 60)),   # two neighbours 1 px apart, both cut by a seam:
        (107, 2, s.rect(132, 20, 140, 60)),   #   they must stay two
        (108, 0, s.disc(150, 120, 5)),
    ]


def _whole_and_tiled(s, outputs, **kwargs):
    image = s.paint(170, 180, _objects(s), stuff=1 + (np.arange(180)[None, :] > 90).repeat(170, 0))
    model = s.StandInModel(outputs)
    common = dict(tile_size=TILE, overlap=OVERLAP, panoptic_fusion=FUSION, **kwargs)
    whole = SlidingWindowPredictor(model, tile_above_pixels=-1, **common)(image)
    model.calls = 0
    tiled = SlidingWindowPredictor(model, tile_above_pixels=0, **common)(image)
    assert tiled.num_tiles == model.calls == len(tile_windows(170, 180, TILE, OVERLAP)) > 4
    return image, whole, tiled


def _as_set(instances, height, width):
    return sorted((round(float(s), 4), int(c), r["counts"]) for s, c, r in
                  zip(instances.scores, instances.classes, instances.to_rles(height, width)))


def test_seams_cut_the_scene_as_intended(scenes):
    windows = tile_windows(170, 180, TILE, OVERLAP)
    seams = {x for w in windows for x in (w[0], w[2])} - {0, 180}
    assert {48, 64, 96, 112} <= seams  # the objects above are placed against this grid


def test_tiled_instances_equal_whole_image_instances(scenes):
    _, whole, tiled = _whole_and_tiled(scenes, ("instances",))
    assert len(whole.instances) == len(_objects(scenes)) == 8
    assert _as_set(tiled.instances, 170, 180) == _as_set(whole.instances, 170, 180)
    # boxes: the union of the parts' boxes is the whole object's box
    order_w, order_t = np.argsort(whole.instances.scores), np.argsort(tiled.instances.scores)
    np.testing.assert_array_equal(tiled.instances.boxes[order_t], whole.instances.boxes[order_w])


def test_scene_needs_merging(scenes):
    """Without stitching the tiles' instances would hold duplicates and parts: over twice the objects."""
    image = scenes.paint(170, 180, _objects(scenes))
    model = scenes.StandInModel()
    count = sum(len(model(image[y0:y1, x0:x1])["instances"]) for x0, y0, x1, y1 in tile_windows(170, 180, TILE, OVERLAP))
    assert count > 2 * len(_objects(scenes))


def test_two_instances_of_one_tile_never_become_one():
    # tile A holds two objects; tile B one instance covering both inside the shared window
    a = CroppedInstances(np.array([[0, 0, 6, 4], [6, 0, 10, 4]], float), np.array([0.9, 0.8]), np.array([0, 0]),
                         [(0, 0, np.ones((4, 6), bool)), (6, 0, np.ones((4, 4), bool))])
    b = CroppedInstances(np.array([[4, 0, 12, 4]], float), np.array([0.7]), np.array([0]),
                         [(4, 0, np.ones((4, 8), bool))])
    merged = merge_tile_instances([((0, 0, 10, 4), a), ((4, 0, 12, 4), b)], 4, 12, iou_thresh=0.3)
    assert len(merged) == 2  # B joins its better match (IoU 4/6 inside the shared window), not both
    # the joined object takes columns 4, 5 from tile A, whose weight there is higher: A saw them as the other object
    assert [(x0, y0, c.shape) for x0, y0, c in merged.masks] == [(0, 0, (4, 6)), (6, 0, (4, 6))]


def test_class_aware_merge_keeps_classes_apart(scenes):
    part = lambda cls: CroppedInstances(np.array([[2, 0, 8, 4]], float), np.array([0.5 + cls / 10]),  # noqa: E731
                                        np.array([cls]), [(2, 0, np.ones((4, 6), bool))])
    tiles = [((0, 0, 8, 4), part(0)), ((2, 0, 10, 4), part(1))]
    assert len(merge_tile_instances(tiles, 4, 10)) == 2
    joined = merge_tile_instances(tiles, 4, 10, class_agnostic=True)
    assert len(joined) == 1 and joined.classes.tolist() == [1]


def test_tiled_semantic_and_panoptic_equal_whole_image(scenes):
    image, whole, tiled = _whole_and_tiled(scenes, ("instances", "sem_seg", "panoptic_seg"))
    assert np.array_equal(whole.sem_seg, scenes.StandInModel.semantic_labels(image))
    assert np.array_equal(tiled.sem_seg, whole.sem_seg)
    assert np.array_equal(tiled.panoptic_seg, whole.panoptic_seg)  # unique scores: same segment ids
    assert tiled.segments_info == whole.segments_info
    things = [s for s in tiled.segments_info if s["isthing"]]
    assert len(things) == 8 and {s["category_id"] for s in tiled.segments_info if not s["isthing"]} == {1, 2}


def test_full_image_coco_evaluation_of_stitched_output(scenes, tmp_path):
    """The stitched instances, written as COCO results with RLE, score AP 100 against the scene's truth."""
    image, _, tiled = _whole_and_tiled(scenes, ("instances",))
    annotations = []
    for k, (value, cls, _) in enumerate(_objects(scenes)):
        rle = mask_util.encode(np.asfortranarray((image[..., 2] == value).astype(np.uint8)))
        annotations.append({"id": k + 1, "image_id": 1, "category_id": cls + 1, "iscrowd": 0,
                            "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist(),
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    gt = {"images": [{"id": 1, "file_name": "scene.png", "height": 170, "width": 180}],
          "annotations": annotations, "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(3)]}
    results = [{"image_id": 1, "category_id": int(c) + 1, "score": float(s), "segmentation": r}
               for s, c, r in zip(tiled.instances.scores, tiled.instances.classes, tiled.instances.to_rles(170, 180))]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    metrics = evaluate_coco(str(tmp_path / "gt.json"), str(tmp_path / "results.json"), "segm", "pycocotools")
    assert metrics["AP"] == pytest.approx(100.0)
