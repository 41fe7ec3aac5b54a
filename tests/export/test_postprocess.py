"""seg_d2.export.postprocess against Detectron2's own post-processing, which it replaces in exported graphs."""
import pytest
import torch

import seg_d2  # noqa: F401  (first: makes Detectron2 whole)
from detectron2.layers.mask_ops import _do_paste_mask, paste_masks_in_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from seg_d2.export.postprocess import _axis_weights, detection_outputs, paste_masks

HEIGHT, WIDTH = 61, 83


def _boxes_in_image(n, generator, tiny=False):
    """``n`` boxes inside (HEIGHT, WIDTH), some touching the borders; ``tiny``: widths below a pixel."""
    corner = torch.rand(n, 2, generator=generator) * torch.tensor([WIDTH, HEIGHT]) * 1.1 - 3
    size = torch.rand(n, 2, generator=generator) * (0.9 if tiny else 60) + 0.05
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, WIDTH)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, HEIGHT)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


@pytest.mark.parametrize("tiny", [False, True])
def test_paste_masks_equals_detectron2(tiny):
    generator = torch.Generator().manual_seed(3)
    boxes = _boxes_in_image(40, generator, tiny)
    masks = torch.rand(len(boxes), 28, 28, generator=generator)
    expected = paste_masks_in_image(masks, Boxes(boxes), (HEIGHT, WIDTH))
    pasted = paste_masks(masks, boxes, torch.tensor([HEIGHT, WIDTH]))
    assert pasted.dtype == torch.bool and pasted.shape == expected.shape
    assert torch.equal(pasted, expected)
    assert expected.any()  # the comparison saw foreground


def test_soft_paste_matches_grid_sample_per_box():
    """Before thresholding: Wy @ mask @ Wx^T equals Detectron2's grid_sample paste, window included."""
    generator = torch.Generator().manual_seed(4)
    boxes = _boxes_in_image(20, generator)
    masks = torch.rand(len(boxes), 28, 28, generator=generator)
    rows = _axis_weights(boxes[:, 1], boxes[:, 3], torch.tensor(HEIGHT), 28)
    cols = _axis_weights(boxes[:, 0], boxes[:, 2], torch.tensor(WIDTH), 28)
    soft = rows @ masks @ cols.transpose(1, 2)
    for i, box in enumerate(boxes):
        expected = torch.zeros(HEIGHT, WIDTH)
        values, window = _do_paste_mask(masks[i : i + 1, None], box[None], HEIGHT, WIDTH, skip_empty=True)
        expected[window] = values[0]
        torch.testing.assert_close(soft[i], expected, atol=2e-6, rtol=0)


def test_paste_masks_without_masks():
    pasted = paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.tensor([HEIGHT, WIDTH]))
    assert pasted.shape == (0, HEIGHT, WIDTH)


def _raw_detections(generator, n=30):
    """Detector outputs at a 50x70 input: boxes partly outside the image and some empty after clipping."""
    boxes = torch.rand(n, 4, generator=generator) * 90 - 10
    boxes[:, 2:] = boxes[:, :2] + torch.rand(n, 2, generator=generator) * 30
    boxes[:3, 2] = boxes[:3, 0]  # zero width
    return Instances(
        (50, 70),
        pred_boxes=Boxes(boxes),
        scores=torch.rand(n, generator=generator),
        pred_classes=torch.randint(0, 5, (n,), generator=generator),
        pred_masks=torch.rand(n, 1, 28, 28, generator=generator),
        pred_mask_ious=torch.rand(n, generator=generator),
    )


@pytest.mark.parametrize("scripted", [False, True])
def test_detection_outputs_equal_detector_postprocess(scripted):
    raw = _raw_detections(torch.Generator().manual_seed(5))
    function = torch.jit.script(detection_outputs) if scripted else detection_outputs
    outputs = function(raw.pred_boxes.tensor, raw.scores, raw.pred_classes, torch.tensor(raw.image_size),
                       torch.tensor([HEIGHT, WIDTH]), raw.pred_masks, raw.pred_mask_ious, 0.5)
    expected = detector_postprocess(raw, HEIGHT, WIDTH)  # last: it scales raw's boxes in place
    assert 0 < len(expected) < len(raw)  # some boxes were dropped as empty
    torch.testing.assert_close(outputs["boxes"], expected.pred_boxes.tensor, atol=1e-4, rtol=0)
    assert torch.equal(outputs["scores"], expected.scores)
    assert torch.equal(outputs["classes"], expected.pred_classes)
    assert torch.equal(outputs["mask_ious"], expected.pred_mask_ious)
    assert torch.equal(outputs["masks"], expected.pred_masks)
