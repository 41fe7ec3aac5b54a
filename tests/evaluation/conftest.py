"""Synthetic ground truth / predictions shared by the evaluation tests."""
import contextlib
import copy
import io
import json
import os
import types

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


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


# ------------------------------------------------------------------------------------------- COCO instances
def rle(mask):
    """A binary mask as COCO JSON's RLE (string counts)."""
    out = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    out["counts"] = out["counts"].decode("ascii")
    return out


def blob(rng, h, w):
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    m &= rng.random((h, w)) < rng.choice([1.0, 0.8])  # ragged masks: box and mask areas differ
    if not m.any():
        m[y0, x0] = True
    return m


def polygon(m):
    ys, xs = np.nonzero(m)
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _ids(rng, n, zero_ids):
    """n unique ids: 1, 2, ..., n, or (zero_ids) n of 1..3n in random order, one of them 0 in half the cases."""
    if not zero_ids:
        return list(range(1, n + 1))
    ids = rng.choice(np.arange(1, 3 * n + 1), n, replace=False)
    if n and rng.random() < 0.5:
        ids[rng.integers(n)] = 0
    return [int(i) for i in ids]


def coco_case(seed, kind="normal", zero_ids=False):
    """A random COCO ground truth and its detections (jittered copies of the GT masks plus clutter).

    kind: "normal", "empty_gt" or "empty_pred". zero_ids: image, category and annotation ids drawn at
    random with 0 among them (renumbering annotation ids by file order then defines the reference)."""
    rng = np.random.default_rng(seed)
    num_images, num_cats = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    cat_ids = [1, 3, 7][:num_cats] if not zero_ids else [int(c) for c in rng.choice(6, num_cats, replace=False)]
    cats = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    image_ids = [i + 10 for i in range(num_images)] if not zero_ids else _ids(rng, num_images, True)
    images, anns, dets = [], [], []
    with_box = rng.random() < 0.5  # pycocotools decides box-or-not from the first detection: all or none
    for i in image_ids:
        h, w = int(rng.integers(8, 130)), int(rng.integers(8, 130))
        images.append({"id": i, "height": h, "width": w})
        gt_masks = [] if kind == "empty_gt" else [blob(rng, h, w) for _ in range(int(rng.integers(0, 6)))]
        for m in gt_masks:
            crowd = int(rng.random() < 0.15)
            seg = rle(m) if crowd or rng.random() < 0.7 else polygon(m)
            area = float(m.sum()) if isinstance(seg, dict) else float(mask_util.area(
                mask_util.merge(mask_util.frPyObjects(seg, h, w))))
            anns.append({"id": None, "image_id": i, "category_id": int(rng.choice(cat_ids)),
                         "segmentation": seg, "area": area, "bbox": mask_util.toBbox(rle(m)).tolist(),
                         "iscrowd": crowd})
        if kind == "empty_pred":
            continue
        # detections: jittered copies of gt masks plus clutter; maybe with a box (area from the box!)
        for m in gt_masks + [blob(rng, h, w) for _ in range(int(rng.integers(0, 8)))]:
            m = m ^ (rng.random((h, w)) < rng.choice([0.0, 0.05, 0.4]))
            if not m.any():
                continue
            d = {"image_id": i, "category_id": int(rng.choice(cat_ids)),
                 "score": float(rng.choice([0.5, rng.random()])), "segmentation": rle(m)}
            if with_box:
                x, y, bw, bh = mask_util.toBbox(d["segmentation"]).tolist()
                d["bbox"] = [x, y, bw * rng.uniform(1, 3), bh * rng.uniform(1, 3)]
                if rng.random() < 0.3:  # pycocotools takes polygon results only on its box branch
                    d["segmentation"] = polygon(m)
            dets.append(d)
    for a, i in zip(anns, _ids(rng, len(anns), zero_ids)):
        a["id"] = i
    return {"images": images, "categories": cats, "annotations": anns}, dets


def renumbered(gt):
    """``gt`` with annotation ids 1..N in file order: what seg_d2 evaluates when an id is 0."""
    return {**gt, "annotations": [{**a, "id": k + 1} for k, a in enumerate(gt["annotations"])]}


def oracle(gt, dets, iou_type):
    """pycocotools' COCOeval on copies (its evaluate() turns GT polygons into RLE in place)."""
    gt = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.fixture(scope="session")
def coco():
    """The COCO case helpers: coco.case(seed, kind, zero_ids), coco.oracle(gt, dets, iou_type), coco.rle(mask),
    coco.renumbered(gt), coco.blob(rng, h, w), coco.polygon(mask)."""
    return types.SimpleNamespace(case=coco_case, oracle=oracle, rle=rle, renumbered=renumbered, blob=blob,
                                 polygon=polygon)
