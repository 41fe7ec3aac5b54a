"""bench/bench_peers.py's instance path, without Ultralytics: seg_d2_shapes_val in the bench's YOLO-seg form
(seg_d2's converter) reads back as the same masks, pixel for pixel and class for class, and the ground-truth
masks as the bench's COCO RLE results score AP 100 with its pycocotools scoring."""
import importlib.util
import os

import numpy as np

from seg_d2.data import converters
from seg_d2.data.builtin import dataset_paths, ensure_builtin_data

_spec = importlib.util.spec_from_file_location(
    "bench_peers", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "bench_peers.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # standard library imports only: no Ultralytics in .venv


def test_yolo_dataset_is_pixel_exact_and_truth_scores_100(tmp_path):
    _, category_ids = bench.write_yolo_dataset(str(tmp_path))
    paths = dataset_paths(ensure_builtin_data(), "val")
    truth = converters.read_json(paths["json_file"], ("images", "annotations", "categories"))
    back = converters.yolo_to_coco(str(tmp_path / "labels" / "val"), str(tmp_path / "images" / "val"),
                                   ["unused"] * len(category_ids))
    back_id = {image["file_name"]: image["id"] for image in back["images"]}
    results = []
    for image in truth["images"]:
        height, width = image["height"], image["width"]
        annotations = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        # one YOLO line a polygon, in order: an instance in several parts is several YOLO objects
        expected = [(a["category_id"], converters.segmentation_to_mask([polygon], height, width))
                    for a in annotations for polygon in a["segmentation"]]
        found = [(category_ids[a["category_id"] - 1], converters.segmentation_to_mask(a["segmentation"], height, width))
                 for a in back["annotations"] if a["image_id"] == back_id[image["file_name"]]]
        assert len(found) == len(expected)
        for (category, mask), (found_category, found_mask) in zip(expected, found):
            assert found_category == category and np.array_equal(found_mask, mask)
        masks = [converters.segmentation_to_mask(a["segmentation"], height, width) for a in annotations]
        results += bench.coco_results(image["id"], masks, [1.0] * len(masks), [a["category_id"] for a in annotations])
    assert bench.mask_ap(paths["json_file"], results) == (100.0, 100.0)
