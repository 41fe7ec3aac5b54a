"""Synthetic ground truth / predictions shared by the evaluation tests."""
import json
import os

import numpy as np
import pytest
from PIL import Image


def _id2rgb(ids):
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], -1).astype(np.uint8)


def _segments(ids_map, rng, num_cats, crowd_p, ids_of_label):
    labels = [int(v) for v in np.unique(ids_map) if v != 0]
    return [
        {
            "id": ids_of_label[v],
            "category_id": int(rng.integers(1, num_cats + 1)),
            "iscrowd": int(rng.random() < crowd_p),
            "area": int((ids_map == v).sum()),
        }
        for v in labels
    ]


def _random_image(rng, h, w, num_cats, kind):
    """One image: gt and pred label maps at coarse resolution, then noise; random 24-bit segment ids."""
    cell = int(rng.integers(1, 5))
    ng = int(rng.integers(0, 7)) if kind != "empty_gt" else 0
    coarse = rng.integers(0, ng + 1, size=(-(-h // cell), -(-w // cell)))
    gt = np.kron(coarse, np.ones((cell, cell), np.int64))[:h, :w]
    pred = gt.copy()
    flip = rng.random(gt.shape) < rng.choice([0.0, 0.05, 0.3])  # tiny segments and partial overlaps
    pred[flip] = rng.integers(0, ng + 3, size=int(flip.sum()))
    if kind == "empty_pred":
        pred[:] = 0
    gt_ids = {v: int(x) for v, x in enumerate(rng.choice(np.arange(1, 1 << 24), ng + 1, replace=False))}
    pred_ids = {v: int(x) for v, x in enumerate(rng.choice(np.arange(1, 1 << 24), ng + 3, replace=False))}
    gt_segs = _segments(gt, rng, num_cats, 0.2, gt_ids)
    pred_segs = _segments(pred, rng, num_cats, 0.0, pred_ids)
    for s in pred_segs:  # mostly keep the category of the gt segment with the same label
        s.pop("iscrowd"), s.pop("area")
        same = [g for g in gt_segs if g["id"] == gt_ids.get(next(k for k, v in pred_ids.items() if v == s["id"]))]
        if same and rng.random() < 0.8:
            s["category_id"] = same[0]["category_id"]
    if gt_segs and rng.random() < 0.2:  # a listed gt segment absent from the PNG (panopticapi allows it)
        gt_segs.append({"id": gt_ids[0], "category_id": 1, "iscrowd": 0, "area": 3})
    gt_map = np.vectorize(lambda v: gt_ids[v] if v else 0)(gt).astype(np.uint32) if gt.size else gt
    pred_map = np.vectorize(lambda v: pred_ids[v] if v else 0)(pred).astype(np.uint32) if pred.size else pred
    return gt_map, gt_segs, pred_map, pred_segs


def write_panoptic_case(root, seed, num_images, kind):
    rng = np.random.default_rng(seed)
    num_cats = int(rng.integers(1, 5))
    categories = [{"id": c, "name": f"c{c}", "isthing": int(rng.random() < 0.5)} for c in range(1, num_cats + 1)]
    gt_json = {"images": [], "annotations": [], "categories": categories}
    pred_json = {"annotations": []}
    for d in ("gt", "pred"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(num_images):
        h, w = int(rng.integers(3, 24)), int(rng.integers(3, 24))
        gt_map, gt_segs, pred_map, pred_segs = _random_image(rng, h, w, num_cats, kind)
        name = f"{i}.png"
        Image.fromarray(_id2rgb(gt_map)).save(os.path.join(root, "gt", name))
        Image.fromarray(_id2rgb(pred_map)).save(os.path.join(root, "pred", name))
        gt_json["images"].append({"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"})
        gt_json["annotations"].append({"image_id": i, "file_name": name, "segments_info": gt_segs})
        pred_json["annotations"].append({"image_id": i, "file_name": name, "segments_info": pred_segs})
    paths = [os.path.join(root, "gt.json"), os.path.join(root, "pred.json")]
    for p, obj in zip(paths, (gt_json, pred_json)):
        with open(p, "w") as f:
            json.dump(obj, f)
    return gt_json, pred_json, paths


@pytest.fixture
def panoptic_case():
    """``panoptic_case(root, seed, num_images, kind)`` -> (gt_json, pred_json, [gt_path, pred_path])."""
    return write_panoptic_case
