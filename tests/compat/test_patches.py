"""Detectron2 v0.6 works on today's numpy / Pillow / setuptools / Python / torch, and only it is changed."""
import random
import sys

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401


def test_numpy_aliases_only_inside_detectron2():
    import detectron2.structures.masks as masks

    assert masks.np.bool is bool and masks.np.float is float
    assert masks.np.zeros is np.zeros
    with pytest.raises(AttributeError):
        np.float  # numpy itself is untouched  # noqa: B018
    polygons = [[np.array([0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0])]]
    mask = masks.polygons_to_bitmask(polygons[0], 5, 5)  # used np.bool before the fix
    assert mask.dtype == bool and mask.sum() == 16


def test_sem_seg_evaluator_runs_with_numpy_2(tmp_path):
    from PIL import Image

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    gt = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = "seg_d2_test_compat_semseg"
    DatasetCatalog.register(name, lambda: [{"file_name": "x.jpg", "sem_seg_file_name": str(tmp_path / "gt.png")}])
    MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255)
    evaluator = SemSegEvaluator(name, distributed=False, output_dir=None)
    evaluator.reset()
    logits = torch.zeros(2, 2, 2)
    logits[0, 0, 0] = logits[1, 0, 1] = logits[0, 1, 0] = 1.0  # predicts [[0, 1], [0, *]]
    evaluator.process([{"file_name": "x.jpg"}], [{"sem_seg": logits}])
    result = evaluator.evaluate()["sem_seg"]
    # class 0: TP 1, FP 1 (pixel (1,0)), FN 0 -> IoU 1/2; class 1: TP 1, FN 1 -> IoU 1/2
    assert result["mIoU"] == pytest.approx(50.0)
    assert result["pACC"] == pytest.approx(200 / 3)


def test_pillow_linear_constant_not_leaked():
    from PIL import Image

    from detectron2.data.transforms import ExtentTransform

    assert ExtentTransform.__init__.__defaults__[-2] == Image.BILINEAR
    assert not hasattr(Image, "LINEAR")


def test_model_zoo_without_pkg_resources():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert path.endswith("mask_rcnn_R_50_FPN_1x.yaml")
    cfg = model_zoo.get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"


def test_config_base_on_model_zoo(tmp_path):
    from detectron2.config import get_cfg

    child = tmp_path / "child.yaml"
    child.write_text('_BASE_: "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"\nSOLVER:\n  BASE_LR: 0.5\n')
    cfg = get_cfg()
    cfg.merge_from_file(str(child))
    assert cfg.MODEL.MASK_ON and cfg.MODEL.RESNETS.DEPTH == 50  # from the zoo file and its own _BASE_
    assert cfg.SOLVER.STEPS == (210000, 250000) and cfg.SOLVER.BASE_LR == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text('_BASE_: "model_zoo://No-Such/config.yaml"\n')
    with pytest.raises(FileNotFoundError, match="No-Such/config.yaml"):
        get_cfg().merge_from_file(str(bad))


def test_map_dataset_fallback_samples_from_set():
    from detectron2.data.common import MapDataset

    calls = []

    def fail_on_zero(index):
        calls.append(index)
        if index == 0:
            return None  # tells MapDataset to try another element
        return index

    dataset = MapDataset(list(range(5)), fail_on_zero)
    assert dataset[0] in {1, 2, 3, 4}
    assert calls[0] == 0 and len(calls) == 2


def test_set_sampling_random_matches_tuple_sampling():
    from seg_d2.compat.patches import _SetSamplingRandom

    population = {5, 3, 11, 7}
    assert _SetSamplingRandom(3).sample(population, 2) == random.Random(3).sample(tuple(population), 2)


def test_export_tracing_and_scripting_import_without_caffe2():
    from detectron2.config import get_cfg
    from detectron2.export import (
        Caffe2Tracer,
        TracingAdapter,
        add_export_config,
        dump_torchscript_IR,
        scripting_with_instances,
    )

    assert callable(TracingAdapter) and callable(scripting_with_instances) and callable(dump_torchscript_IR)
    assert add_export_config(get_cfg()).EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT is False
    with pytest.raises(RuntimeError, match="caffe2.*TracingAdapter"):
        Caffe2Tracer(None, None, None)


def test_tracing_adapter_traces_a_detectron2_model():
    from detectron2.export import TracingAdapter
    from detectron2.structures import Boxes, Instances

    class TinyDetector(torch.nn.Module):
        def forward(self, inputs):
            image = inputs[0]["image"].float()
            instances = Instances(image.shape[1:])
            instances.pred_boxes = Boxes(image.mean(dim=(0,)).reshape(-1, 4)[:2])
            instances.scores = image.mean().reshape(1).repeat(2)
            return [instances]

    model = TinyDetector()
    inputs = [{"image": torch.arange(48.0).reshape(3, 4, 4)}]
    adapter = TracingAdapter(model, inputs)
    traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    out = adapter.outputs_schema(traced(*adapter.flattened_inputs))[0]
    expected = model(inputs)[0]
    assert torch.equal(out.pred_boxes.tensor, expected.pred_boxes.tensor)


def test_compiled_ops_replaced_and_collect_env_runs():
    from detectron2.utils.collect_env import collect_env_info

    import detectron2._C as C

    assert getattr(C, "IS_SEG_D2_COMPAT", False) == (not seg_d2.compat.has_compiled_ops())
    info = collect_env_info()
    assert "detectron2" in info and "Compiler" in info


def test_no_global_pkg_resources_stub():
    module = sys.modules.get("pkg_resources")
    assert module is None or hasattr(module, "working_set")


def test_deformable_convs_train_on_cpu():
    from detectron2.layers import DeformConv, ModulatedDeformConv

    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    for layer in (DeformConv(4, 6, 3, padding=1, groups=2, deformable_groups=2),
                  ModulatedDeformConv(4, 6, 3, padding=1, deformable_groups=2)):
        offset = torch.zeros(2, 2 * 2 * 9, 7, 7, requires_grad=True)
        args = (x, offset) if isinstance(layer, DeformConv) else (x, offset, torch.ones(2, 2 * 9, 7, 7))
        out = layer(*args)
        bias = getattr(layer, "bias", None)
        expected = torch.nn.functional.conv2d(x, layer.weight, bias, padding=1, groups=layer.groups)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # zero offsets: a plain conv
        out.square().sum().backward()
        assert offset.grad.abs().sum() > 0 and layer.weight.grad is not None


@pytest.mark.skipif(seg_d2.compat.has_compiled_ops(), reason="only seg_d2's own build of Detectron2 imports seg_d2")
def test_detectron2_first_import_order_works():
    import subprocess

    code = ("from detectron2.engine import DefaultPredictor\n"
            "from detectron2.modeling import META_ARCH_REGISTRY\n"
            "import detectron2.layers, detectron2.model_zoo, detectron2.export\n"
            "print('UNetSegmentor' in META_ARCH_REGISTRY._obj_map)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("True")


class _SquaredOutput(torch.nn.Linear):
    def forward(self, batch):
        return {"loss": super().forward(batch).square().mean()}


def _train_with_step_lr(checkpoint_dir, max_iter, resume):
    """SimpleTrainer + LRScheduler hook on torch's StepLR; returns the LR of each iteration run and the scheduler."""
    from detectron2.checkpoint import Checkpointer
    from detectron2.engine import SimpleTrainer, hooks

    torch.manual_seed(0)
    model = _SquaredOutput(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=999.0 if resume else 0.1)  # resume must load 0.1's decay
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    data = iter(lambda: torch.ones(4, 2), None)
    trainer = SimpleTrainer(model, data, optimizer)
    checkpoint_dir.mkdir(exist_ok=True)
    checkpointer = Checkpointer(model, str(checkpoint_dir), optimizer=optimizer, trainer=trainer)
    lrs = []
    record = hooks.CallbackHook(before_step=lambda t: lrs.append(optimizer.param_groups[0]["lr"]))
    scheduler_hook = hooks.LRScheduler(scheduler=scheduler)
    trainer.register_hooks([record, scheduler_hook, hooks.PeriodicCheckpointer(checkpointer, 5)])
    start_iter = checkpointer.resume_or_load("none.pth", resume=True).get("iteration", -1) + 1 if resume else 0
    trainer.train(start_iter, max_iter)
    return lrs, scheduler


def test_torch2_scheduler_state_is_checkpointed_and_resumed(tmp_path):
    from detectron2.engine import hooks

    full_lrs, full_scheduler = _train_with_step_lr(tmp_path / "full", 12, resume=False)
    _train_with_step_lr(tmp_path / "cut", 7, resume=False)  # its last checkpoint: model_final, after iteration 6
    resumed_lrs, resumed_scheduler = _train_with_step_lr(tmp_path / "cut", 12, resume=True)
    assert len(set(full_lrs[7:])) == 2 and resumed_lrs == full_lrs[7:]  # iterations 7..11, across a decay
    assert resumed_scheduler.last_epoch == full_scheduler.last_epoch == 12
    # a scheduler without state (fvcore's ParamScheduler before before_train wraps it) is still skipped
    assert hooks.LRScheduler(scheduler=object()).state_dict() == {}



def test_lazy_config_to_py_is_formatted_by_black():
    from omegaconf import OmegaConf

    from detectron2.config import LazyCall, LazyConfig

    layer = LazyCall(torch.nn.Conv2d)(in_channels=3, out_channels=64, kernel_size=3, padding=1, bias=False)
    cfg = OmegaConf.create({"model": {"stem": layer, "names": ["conv"]}})
    # unformatted, the call is one 102-character line; black (line length 88) wraps its arguments
    assert LazyConfig.to_py(cfg) == (
        'cfg.model.names = ["conv"]\n'
        "cfg.model.stem = torch.nn.Conv2d(\n"
        "    bias=False, in_channels=3, kernel_size=3, out_channels=64, padding=1\n"
        ")\n"
    )


def test_polygon_crop_keeps_the_start_vertex_of_an_uncut_polygon():
    from detectron2.data.transforms import CropTransform

    crop = CropTransform(10, 10, 50, 50)
    square = np.array([[20.0, 20], [40, 20], [40, 40], [20, 40]])  # counter-clockwise for y up
    # clockwise for y up, as GEOS makes shells (v0.6's tests expect it), from the same start; GEOS 3.14 starts at v3
    np.testing.assert_array_equal(crop.apply_polygons([square])[0], [[10, 10], [10, 30], [30, 30], [30, 10]])
    clockwise = square[::-1].copy()
    np.testing.assert_array_equal(crop.apply_polygons([clockwise])[0], clockwise - 10)


def test_polygon_crop_of_a_cut_polygon_is_shapelys_region_in_canonical_order():
    import shapely

    from detectron2.data.transforms import CropTransform

    crop = CropTransform(10, 10, 50, 50)
    arrow = np.array([[30.0, 0], [70, 30], [30, 55], [35, 30]])  # v0 and v1 fall outside the crop
    (ring,) = crop.apply_polygons([arrow])
    expected = shapely.intersection(shapely.Polygon(arrow), shapely.box(10, 10, 60, 60))
    assert shapely.Polygon(ring + 10).symmetric_difference(expected).area == 0
    assert len(ring) == len(expected.exterior.coords) - 1
    np.testing.assert_array_equal(ring[0], [20, 45])  # v2, the first vertex the crop keeps
    (covering,) = crop.apply_polygons([np.array([[0.0, 0], [100, 0], [100, 100], [0, 100]])])
    np.testing.assert_array_equal(covering, [[0, 0], [0, 50], [50, 50], [50, 0]])  # no vertex kept: smallest (x, y)


def test_polygon_crop_order_does_not_depend_on_where_geos_starts_the_ring():
    from seg_d2.compat.patches import _in_canonical_order

    original = np.array([[5.0, 1], [9, 4], [6, 9], [2, 6], [1, 3]])
    ring = original[[0, 4, 3, 2, 1]]  # the region's vertices, clockwise for y up
    expected = _in_canonical_order(ring, original)
    np.testing.assert_array_equal(expected, ring)
    for k in range(len(ring)):
        for order in (np.roll(ring, k, axis=0), np.roll(ring[::-1], k, axis=0)):
            np.testing.assert_array_equal(_in_canonical_order(order, original), expected)
