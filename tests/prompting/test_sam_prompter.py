"""seg_d2's prompt API on SAM returns exactly what segment_anything.SamPredictor returns for the same prompts."""
import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)
from detectron2.config import get_cfg

from seg_d2.prompting import SamPrompter, build_prompter, load_sam

segment_anything = pytest.importorskip("segment_anything", reason="the optional segment-anything package (seg_d2[sam])")
torch.set_num_threads(1)

PROMPTS = {
    "one point, three masks": dict(point_coords=[[12.0, 18.0]], point_labels=[1], multimask_output=True),
    "positive and negative points": dict(point_coords=[[12, 18], [40, 30], [50, 10]], point_labels=[1, 1, 0],
                                         multimask_output=False),
    "box": dict(box=[4, 6, 30, 34], multimask_output=False),
    "box and a negative point": dict(box=[30, 15, 62, 46], point_coords=[[33.5, 18.5]], point_labels=[0]),
}


def _reference(sam, image_bgr):
    predictor = segment_anything.SamPredictor(sam)
    predictor.set_image(image_bgr, image_format="BGR")
    return predictor


def _sam_arguments(prompt):
    """The prompt as SamPredictor.predict takes it (numpy arrays)."""
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in prompt.items()}


def _assert_same(answer, expected):
    masks, scores, low_res = expected
    assert answer.masks.dtype == bool and answer.masks.shape == masks.shape
    np.testing.assert_array_equal(answer.masks, masks)
    np.testing.assert_array_equal(answer.scores, scores)
    np.testing.assert_array_equal(answer.low_res_logits, low_res)


@pytest.mark.parametrize("name", PROMPTS)
def test_prompts_answer_as_sam_predictor(tiny_sam, scene, name):
    prompter = SamPrompter(tiny_sam, input_format="BGR")
    expected = _reference(tiny_sam, scene).predict(**_sam_arguments(PROMPTS[name]))
    answer = prompter.predict(scene, **PROMPTS[name])
    _assert_same(answer, expected)
    assert len(answer) == (3 if PROMPTS[name].get("multimask_output", True) else 1)
    mask, score = answer.best()
    assert score == answer.scores.max() and np.array_equal(mask, answer.masks[answer.best_index])
    assert [s for _, s in answer.ranked()] == sorted(answer.scores.tolist(), reverse=True)


def test_mask_prompt_refines_as_sam_predictor(tiny_sam, scene):
    """The seed's loop: click, keep the best of three, click again with the best's low-res logits."""
    prompter = SamPrompter(tiny_sam)
    reference = _reference(tiny_sam, scene)
    first = prompter.predict(scene, point_coords=[[12, 18]], point_labels=[1])
    logits = first.low_res_logits[first.best_index][None]
    assert logits.shape == (1, *prompter.mask_input_size) == (1, 16, 16)
    second = prompter.predict(scene, point_coords=[[12, 18], [20, 25]], point_labels=[1, 1], mask_input=logits,
                              multimask_output=False)
    _assert_same(second, reference.predict(np.array([[12, 18], [20, 25]]), np.array([1, 1]), mask_input=logits,
                                           multimask_output=False))
    with pytest.raises(ValueError, match=r"mask_input must be \(1, 16, 16\)"):
        prompter.predict(scene, mask_input=np.zeros((1, 256, 256)))


def _count_encodings(sam):
    calls = []
    sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_image_encoded_once_per_image(tiny_sam, scene):
    calls = _count_encodings(tiny_sam)
    prompter = SamPrompter(tiny_sam)
    for prompt in PROMPTS.values():
        prompter.predict(scene, **prompt)
    prompter.predict_boxes(scene, [[0, 0, 10, 10], [5, 5, 40, 40]])
    assert len(calls) == 1
    other = scene.copy()
    other[0, 0, 0] ^= 1  # one value changed: another image
    prompter.predict(other, box=[0, 0, 9, 9])
    prompter.predict(scene.copy(), box=[0, 0, 9, 9])  # same pixels as the first, another array
    assert len(calls) == 3
    prompter.predict_boxes(scene, np.zeros((0, 4)))  # no box: nothing encoded
    assert len(calls) == 3


def test_boxes_in_batches_answer_as_one_box_each(tiny_sam, scene):
    prompter = SamPrompter(tiny_sam, box_batch=2)
    reference = _reference(tiny_sam, scene)
    boxes = np.array([[4, 6, 30, 34], [30, 15, 62, 46], [0, 0, 63, 47], [10, 10, 12, 40], [20, 2, 50, 20]], float)
    for multimask in (False, True):
        masks, ious = prompter.predict_boxes(scene, boxes, multimask_output=multimask)
        assert masks.shape == (5, 48, 64) and masks.dtype == torch.bool and ious.shape == (5,)
        for box, mask, iou in zip(boxes, masks, ious):
            one_masks, one_scores, _ = reference.predict(box=box, multimask_output=multimask)
            best = int(np.argmax(one_scores))
            # the mask decoder sums a batch of boxes in another order than one box: scores equal to float32 rounding
            assert float(iou) == pytest.approx(float(one_scores[best]), abs=1e-5)
            assert np.mean(mask.numpy() != one_masks[best]) < 1e-3


def test_boxes_at_an_original_size(tiny_sam, scene):
    """A detector's resized input: masks come at the instances' size, boxes in their coordinates."""
    prompter = SamPrompter(tiny_sam)
    masks, _ = prompter.predict_boxes(scene, [[8, 12, 60, 68]], original_size=(96, 128))
    assert masks.shape == (1, 96, 128)
    reference = segment_anything.SamPredictor(tiny_sam)
    reference.set_torch_image(torch.as_tensor(reference.transform.apply_image(scene[:, :, ::-1].copy()))
                              .permute(2, 0, 1)[None], (96, 128))
    expected, _, _ = reference.predict(box=np.array([8, 12, 60, 68]), multimask_output=False)
    np.testing.assert_array_equal(masks.numpy(), expected)


def test_float_gray_and_rgb_images(tiny_sam, scene):
    """seg_d2's reader gives float32 0..255 for 16-bit files and HxWx1 for INPUT.FORMAT "L"."""
    point = dict(point_coords=[[12, 18]], point_labels=[1])
    as_bgr = SamPrompter(tiny_sam, input_format="BGR").predict(scene, **point)
    as_float = SamPrompter(tiny_sam, input_format="BGR").predict(scene.astype(np.float32) + 0.3, **point)
    as_rgb = SamPrompter(tiny_sam, input_format="RGB").predict(scene[:, :, ::-1].copy(), **point)
    for answer in (as_float, as_rgb):
        _assert_same(answer, (as_bgr.masks, as_bgr.scores, as_bgr.low_res_logits))
    gray = scene[:, :, :1]
    as_gray = SamPrompter(tiny_sam, input_format="L").predict(gray, **point)
    _assert_same(as_gray, _reference(tiny_sam, np.repeat(gray, 3, axis=2)).predict(np.array([[12, 18]]), np.array([1])))


@pytest.mark.parametrize("prompt, match", [
    ({}, "an empty prompt"),
    ({"point_coords": [[1, 2]]}, "go together"),
    ({"point_coords": [1, 2], "point_labels": [1]}, r"\(N, 2\)"),
    ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "finite"),
    ({"point_coords": [[1, 2]], "point_labels": [2]}, "1 \\(positive\\) or 0"),
    ({"box": [10, 10, 5, 20]}, "x0 <= x1"),
    ({"box": [1, 2, 3]}, r"\(4,\)"),
])
def test_bad_prompts(tiny_sam, scene, prompt, match):
    with pytest.raises(ValueError, match=match):
        SamPrompter(tiny_sam).predict(scene, **prompt)


def _cfg(model_type, checkpoint):
    cfg = get_cfg()
    cfg.MODEL.SAM.TYPE, cfg.MODEL.SAM.CHECKPOINT, cfg.MODEL.DEVICE = model_type, str(checkpoint), "cpu"
    return cfg


def test_built_from_the_config_through_sam_model_registry(tiny_sam_checkpoint, scene, tiny_sam):
    model_type, checkpoint = tiny_sam_checkpoint
    prompter = build_prompter(_cfg(model_type, checkpoint))
    assert isinstance(prompter, SamPrompter) and prompter.input_format == "BGR"
    loaded = prompter.predictor.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_sam.state_dict().items())
    assert not prompter.predictor.model.training


def test_checkpoint_errors_say_what_to_do(tiny_sam_checkpoint, sam_builder, tmp_path):
    from segment_anything import sam_model_registry

    model_type, checkpoint = tiny_sam_checkpoint
    missing = tmp_path / "sam_vit_h_4b8939.pth"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file.*downloads nothing.*sam_vit_h_4b8939.pth"
                                                r".*segment-anything#model-checkpoints"):
        build_prompter(_cfg("vit_h", missing))
    with pytest.raises(ValueError, match="MODEL.SAM.CHECKPOINT is empty.*sam_vit_b_01ec64.pth"):
        load_sam("", "vit_b")
    with pytest.raises(ValueError, match="'vit_x' is not in segment_anything.sam_model_registry.*vit_b, vit_h, vit_l"):
        load_sam(checkpoint, "vit_x")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{garbage}: not a PyTorch state_dict"):
        load_sam(str(garbage), model_type)
    wider = tmp_path / "wider.pth"
    torch.save(sam_builder(width=48).state_dict(), wider)
    with pytest.raises(ValueError, match=f"{wider} does not fit MODEL.SAM.TYPE '{model_type}'.*size mismatch"):
        load_sam(str(wider), model_type)
    assert model_type in sam_model_registry


def test_full_vit_b_once(scene):
    """The official ViT-B architecture (random weights, from sam_model_registry) on one image: seg_d2 feeds its
    encoder exactly SamPredictor's input, and answers a point prompt exactly as SamPredictor does. The encoder
    (~0.7 TFLOP at 1024x1024) runs once: the reference run gets the same encoding back for the same input."""
    torch.manual_seed(0)
    sam = segment_anything.sam_model_registry["vit_b"]()
    seen = []
    sam.image_encoder.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0], output)))
    prompter = SamPrompter(sam)
    point = dict(point_coords=[[12, 18]], point_labels=[1], multimask_output=True)
    answer = prompter.predict(scene, **point)
    (encoded_input, embedding), = seen
    assert embedding.shape == (1, 256, 64, 64) and answer.low_res_logits.shape == (3, 256, 256)

    def replay(x):
        assert torch.equal(x, encoded_input), "seg_d2 and SamPredictor feed SAM's encoder different inputs"
        return embedding

    sam.image_encoder.forward = replay
    _assert_same(answer, _reference(sam, scene).predict(**_sam_arguments(point)))
