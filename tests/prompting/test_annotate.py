"""tools/annotate.py: prompts / a detector's boxes / SAM's automatic masks -> COCO JSON that registers
(DATASETS.REGISTER), evaluates (FastCOCOEvaluator) and draws (Visualizer) as any dataset."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer

from seg_d2.data.config_datasets import register_dataset_entry
from seg_d2.data.converters import segmentation_to_mask
from seg_d2.engine import setup_cfg
from seg_d2.evaluation import FastCOCOEvaluator
from seg_d2.prompting.annotation import PromptFileError, read_prompts

segment_anything = pytest.importorskip("segment_anything", reason="the optional segment-anything package (seg_d2[sam])")
torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MASK_RCNN = os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml")

CSV = """image,points,box,category
a.png,"12,18,1",,cat
sub/b.png,"40,30,1;50,10,0",,dog
a.png,,"30,15,62,46",
sub/b.png,"33.5,18.5,0","4,6,30,34",cat
"""
JSON = [
    {"image": "a.png", "points": [[12, 18, 1]], "category": "cat"},
    {"image": "b.png", "points": [[40, 30, 1], [50, 10, 0]], "category": "dog"},
    {"image": "a.png", "box": [30, 15, 62, 46]},
    {"image": "sub/b.png", "points": [[33.5, 18.5, 0]], "box": [4, 6, 30, 34], "category": "cat"},
]


def _tool():
    spec = importlib.util.spec_from_file_location("annotate", os.path.join(ROOT, "tools", "annotate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def images(tmp_path, scene):
    """{relative name: BGR pixels} of two images written under tmp_path/img (one in a subfolder)."""
    os.makedirs(tmp_path / "img" / "sub")
    written = {"a.png": scene, "sub/b.png": np.ascontiguousarray(scene[::-1, ::-1])}
    for name, pixels in written.items():
        Image.fromarray(pixels[:, :, ::-1]).save(tmp_path / "img" / name)
    return written


def _sam_opts(tiny_sam_checkpoint):
    return ["--opts", "MODEL.SAM.TYPE", tiny_sam_checkpoint[0], "MODEL.SAM.CHECKPOINT", tiny_sam_checkpoint[1]]


def _annotate(tmp_path, *argv):
    out = tmp_path / "ann.json"
    code = _tool().main(["--config-file", MASK_RCNN, "--input", str(tmp_path / "img" / "**" / "*.png"), "--output", str(out),
                         *map(str, argv)])
    return code, out


def test_csv_and_json_prompt_files_say_the_same(tmp_path):
    (tmp_path / "p.csv").write_text(CSV)
    (tmp_path / "p.json").write_text(json.dumps({"prompts": JSON}))
    from_csv, from_json = read_prompts(str(tmp_path / "p.csv")), read_prompts(str(tmp_path / "p.json"))
    strip = [(p.category, p.point_coords, p.point_labels, p.box, p.multimask_output) for p in from_csv]
    assert strip == [(p.category, p.point_coords, p.point_labels, p.box, p.multimask_output) for p in from_json]
    assert strip[0] == ("cat", ((12.0, 18.0),), (1,), None, True)  # one click: three candidates, best kept
    assert strip[2] == ("object", None, None, (30.0, 15.0, 62.0, 46.0), False)
    assert from_csv[1].where == f"{tmp_path / 'p.csv'} line 3"


@pytest.mark.parametrize("name, text, match", [
    ("p.csv", "image,points\na.png,\"12,18,2\"\n", r"p.csv line 2: '12,18,2' is not 'x,y,label'"),
    ("p.csv", "file,points\n", "must be a header with 'image'"),
    ("p.csv", "image,box\na.png,\"1,2,3\"\n", "p.csv line 2: '1,2,3' is not a box"),
    ("p.csv", "image,points,box\na.png,,\n", "p.csv line 2: neither 'points' nor 'box'"),
    ("p.json", '[{"points": [[1, 2, 1]]}]', r"p.json prompt #0: no 'image'"),
    ("p.json", '[{"image": "a.png", "points": [[1, 2]]}]', r"p.json prompt #0: 'points' must be \[\[x, y, label\]"),
    ("p.json", "[{", "p.json: malformed JSON at line 1"),
    ("p.txt", "", "a prompt file is .json or .csv"),
])
def test_bad_prompt_files_name_file_and_record(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(PromptFileError, match=match):
        read_prompts(str(tmp_path / name))


def _reference_answers(sam, images):
    """What SamPredictor answers to the CSV's prompts, the best of three for a single click: [(image, mask, score)],
    image by image (the order annotate.py writes them), each image's prompts in the file's order."""
    predictor = segment_anything.SamPredictor(sam)
    answers = []
    for image, points, labels, box in [("a.png", [[12, 18]], [1], None), ("a.png", None, None, [30, 15, 62, 46]),
                                       ("sub/b.png", [[40, 30], [50, 10]], [1, 0], None),
                                       ("sub/b.png", [[33.5, 18.5]], [0], [4, 6, 30, 34])]:
        predictor.set_image(images[image], image_format="BGR")
        masks, scores, _ = predictor.predict(None if points is None else np.array(points),
                                             None if labels is None else np.array(labels),
                                             None if box is None else np.array(box),
                                             multimask_output=box is None and len(points) == 1)
        best = int(np.argmax(scores))
        answers.append((image, masks[best], float(scores[best])))
    return answers


def _evaluate_as_predictions(dataset_name, records):
    """FastCOCOEvaluator on the registered dataset, fed its own annotations as predictions (score 1)."""
    evaluator = FastCOCOEvaluator(dataset_name, tasks=("segm",), distributed=False)
    evaluator.reset()
    for record in records:
        h, w = record["height"], record["width"]
        instances = Instances((h, w))
        masks = [segmentation_to_mask(a["segmentation"], h, w) for a in record["annotations"]]
        instances.pred_masks = torch.as_tensor(np.stack(masks))
        instances.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                                   for a in record["annotations"]], dtype=torch.float32))
        instances.scores = torch.ones(len(masks))
        instances.pred_classes = torch.tensor([a["category_id"] for a in record["annotations"]])
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()["segm"]


@pytest.mark.parametrize("polygons", [False, True], ids=["rle", "polygons"])
def test_prompts_round_trip_through_registration_and_evaluation(tmp_path, images, tiny_sam, tiny_sam_checkpoint,
                                                                 polygons):
    (tmp_path / "p.csv").write_text(CSV)
    code, out = _annotate(tmp_path, "--prompts", tmp_path / "p.csv", *(["--polygons"] if polygons else []),
                          "--overlays", tmp_path / "review", *_sam_opts(tiny_sam_checkpoint))
    assert code == 0
    coco = json.loads(out.read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", os.path.join("sub", "b.png")]
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "object"]
    assert all(isinstance(a["segmentation"], list if polygons else dict) for a in coco["annotations"])

    name = f"annotated_{'polygons' if polygons else 'rle'}"
    register_dataset_entry((name, "coco", str(out), str(tmp_path / "img")))
    records = DatasetCatalog.get(name)
    by_file = {os.path.relpath(r["file_name"], tmp_path / "img"): r for r in records}
    expected = _reference_answers(tiny_sam, images)
    registered = [(file, a) for file, r in by_file.items() for a in r["annotations"]]
    assert len(registered) == len(expected) == 4
    scores = {a["id"]: a["score"] for a in coco["annotations"]}
    for (file, mask, score), ann in zip(expected, sorted(coco["annotations"], key=lambda a: a["id"])):
        image = coco["images"][ann["image_id"] - 1]
        assert image["file_name"] == os.path.normpath(file)
        np.testing.assert_array_equal(segmentation_to_mask(ann["segmentation"], image["height"], image["width"]), mask)
        assert scores[ann["id"]] == pytest.approx(score, abs=1e-6)
    assert MetadataCatalog.get(name).thing_classes == ["cat", "dog", "object"]
    assert _evaluate_as_predictions(name, records)["AP"] == pytest.approx(100.0)

    drawing = Visualizer(images["a.png"][:, :, ::-1], MetadataCatalog.get(name)).draw_dataset_dict(by_file["a.png"])
    assert not np.array_equal(drawing.get_image(), images["a.png"][:, :, ::-1])
    review = np.asarray(Image.open(tmp_path / "review" / "sub__b.png"))
    assert review.shape[:2] == (48, 64) and not np.array_equal(review[:, :, :3], images["sub/b.png"][:, :, ::-1])


def test_automatic_masks_are_sams(tmp_path, images, tiny_sam, tiny_sam_checkpoint):
    options = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    code, out = _annotate(tmp_path, "--auto", "--category", "thing", "--points-per-side", 4, "--pred-iou-thresh", 0,
                          "--stability-score-thresh", 0, *_sam_opts(tiny_sam_checkpoint))
    assert code == 0
    coco = json.loads(out.read_text())
    generator = segment_anything.SamAutomaticMaskGenerator(tiny_sam, **options)
    for image in coco["images"]:
        expected = [r for r in generator.generate(images[image["file_name"].replace(os.sep, "/")][:, :, ::-1].copy())
                    if r["segmentation"].any()]
        got = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(got) == len(expected) > 0
        for ann, record in zip(got, expected):
            np.testing.assert_array_equal(segmentation_to_mask(ann["segmentation"], 48, 64), record["segmentation"])
            assert ann["score"] == pytest.approx(record["predicted_iou"], abs=1e-6)
            assert ann["stability_score"] == pytest.approx(record["stability_score"], abs=1e-6)
    assert coco["categories"] == [{"id": 1, "name": "thing"}]


def test_detector_boxes_become_sam_annotations(tmp_path, images, trained_detector, tiny_sam_checkpoint):
    code, out = _annotate(tmp_path, "--detector", "--score-thresh", 0.0, *_sam_opts(tiny_sam_checkpoint),
                          "MODEL.WEIGHTS", trained_detector, "TEST.DETECTIONS_PER_IMAGE", 3)
    assert code == 0
    coco = json.loads(out.read_text())
    cfg = setup_cfg(MASK_RCNN, ["MODEL.WEIGHTS", trained_detector, "TEST.DETECTIONS_PER_IMAGE", "3",
                                "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.META_ARCHITECTURE", "SamDetector",
                                "MODEL.SAM.TYPE", tiny_sam_checkpoint[0], "MODEL.SAM.CHECKPOINT", tiny_sam_checkpoint[1]])
    instances = DefaultPredictor(cfg)(images["a.png"])["instances"]
    got = [a for a in coco["annotations"] if a["image_id"] == 1]
    kept = [i for i in range(len(instances)) if instances.pred_masks[i].any()]
    assert len(got) == len(kept) > 0
    names = MetadataCatalog.get("seg_d2_shapes_val").thing_classes
    for ann, i in zip(got, kept):
        np.testing.assert_array_equal(segmentation_to_mask(ann["segmentation"], 48, 64), instances.pred_masks[i].numpy())
        assert ann["score"] == pytest.approx(float(instances.scores[i]), abs=1e-6)
        assert ann["sam_iou"] == pytest.approx(float(instances.sam_ious[i]), abs=1e-6)
        assert coco["categories"][ann["category_id"] - 1]["name"] == names[int(instances.pred_classes[i])]


def test_failures_are_named(tmp_path, images, tiny_sam_checkpoint, capsys):
    (tmp_path / "p.json").write_text(json.dumps([{"image": "missing.png", "box": [0, 0, 5, 5]}]))
    assert _annotate(tmp_path, "--prompts", tmp_path / "p.json", *_sam_opts(tiny_sam_checkpoint))[0] == 2
    assert "p.json prompt #0: image 'missing.png' is not among the inputs" in capsys.readouterr().err
    assert _annotate(tmp_path, "--auto")[0] == 2
    assert "--auto needs SAM: set MODEL.SAM.CHECKPOINT" in capsys.readouterr().err
    # without SAM, prompts select among the config's model's instances; a box nothing overlaps is listed
    (tmp_path / "p.json").write_text(json.dumps([{"image": "a.png", "box": [0, 0, 1, 1]}]))
    code, out = _annotate(tmp_path, "--prompts", tmp_path / "p.json", "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0")
    assert code == 1 and "FAILED" in capsys.readouterr().err and json.loads(out.read_text())["annotations"] == []
