"""Detectron2 v0.6's own tools, as their users run them, on seg_d2's configs and built-in data.

Each helper is a minimal copy of the call sequence of one stock script of Detectron2 v0.6
(github.com/facebookresearch/detectron2, tag v0.6: tools/train_net.py, tools/plain_train_net.py,
demo/demo.py + demo/predictor.py, tools/analyze_model.py, tools/visualize_data.py): ``get_cfg()`` with no
``add_seg_d2_config``, the file, the overrides, and then what the script calls, in its order. Handed out as
the ``stock`` fixture (pytest runs with --import-mode=importlib, so test files cannot import a helper module).
"""
import os
from collections import Counter

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (first: makes Detectron2 whole)
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor, DefaultTrainer, default_argument_parser, default_setup, hooks
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    inference_on_dataset,
)
from detectron2.modeling import build_model
from detectron2.projects import deeplab, panoptic_deeplab, point_rend
from detectron2.solver import build_lr_scheduler, build_optimizer, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils.analysis import FlopCountAnalysis, parameter_count
from detectron2.utils.events import EventStorage
from detectron2.utils.visualizer import Visualizer
from seg_d2.data import register_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILTIN = "seg_d2_shapes"
TINY = "stock_tiny_shapes"  # the built-in data's four forms, 2 training and 2 validation images


def build_evaluator(cfg, dataset_name, output_folder):
    """tools/train_net.py's build_evaluator, for the evaluator types the built-in data has."""
    evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
    evaluators = []
    if evaluator_type in ["sem_seg", "coco_panoptic_seg"]:
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in ["coco", "coco_panoptic_seg"]:
        evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


class StockTrainer(DefaultTrainer):
    """tools/train_net.py's Trainer."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))


class LossRecorder:
    """Keeps every iteration's losses (the stock trainer only logs them)."""

    def __init__(self):
        self.losses = []

    def __call__(self, trainer):
        self.losses.append({k: v.latest() for k, v in trainer.storage.histories().items() if "loss" in k})


class Stock:
    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory

    @staticmethod
    def opts(*names):
        """The command-line overrides in configs/builtin/NAME.opts files (what `grep -v '^#'` gives the shell)."""
        tokens = []
        for name in names:
            with open(os.path.join(REPO, "configs", "builtin", f"{name}.opts")) as f:
                tokens += [t for line in f if not line.startswith("#") for t in line.split()]
        return tokens

    def small(self, config_file, opts=(), max_iter=1, project=None):
        """Overrides that make a run test-sized: the tiny copy of the built-in data, ``max_iter`` iterations of
        2 images, a fresh OUTPUT_DIR."""
        cfg = get_cfg()
        if project:
            PROJECTS[project][0](cfg)
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
        data = [(f"DATASETS.{split}", tuple(name.replace(BUILTIN, TINY) for name in cfg.DATASETS[split]))
                for split in ("TRAIN", "TEST")]
        return list(opts) + [x for pair in data for x in pair] + [
            "SOLVER.MAX_ITER", max_iter, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1,
            "OUTPUT_DIR", str(self.tmp_path_factory.mktemp("output")), "DATALOADER.NUM_WORKERS", 0,
        ]

    @staticmethod
    def setup(config_file, opts, eval_only=False, add_project_config=None):
        """tools/train_net.py and plain_train_net.py's setup(args); a project's train_net.py first adds the
        project's keys (``add_project_config``)."""
        args = default_argument_parser().parse_args(
            ["--config-file", config_file] + (["--eval-only"] if eval_only else []) + [str(o) for o in opts]
        )
        cfg = get_cfg()
        if add_project_config:
            add_project_config(cfg)
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.freeze()
        default_setup(cfg, args)
        return cfg

    def train_net(self, config_file, opts, project=None):
        """tools/train_net.py main() (or the ``project``'s train_net.py, by configs/projects folder name):
        Trainer(cfg), resume_or_load, train (which evaluates at the end).
        Returns (cfg, evaluation results, losses of each iteration)."""
        add_project_config, trainer_class = PROJECTS[project] if project else (None, StockTrainer)
        cfg = self.setup(config_file, opts, add_project_config=add_project_config)
        trainer = trainer_class(cfg)
        trainer.resume_or_load(resume=False)
        recorder = LossRecorder()
        trainer.register_hooks([hooks.CallbackHook(after_step=recorder)])
        trainer.train()
        # what its EvalHook computed at the end (train() returns it only with TEST.EXPECTED_RESULTS)
        return cfg, trainer._last_eval_results, recorder.losses

    def eval_only(self, config_file, opts):
        """tools/train_net.py main() with --eval-only: build_model, load MODEL.WEIGHTS, test."""
        cfg = self.setup(config_file, opts, eval_only=True)
        model = StockTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
        return StockTrainer.test(cfg, model)

    def plain_train_net(self, config_file, opts):
        """tools/plain_train_net.py main(): do_train then do_test. Returns (cfg, results, total losses)."""
        cfg = self.setup(config_file, opts)
        model = build_model(cfg)
        model.train()
        optimizer = build_optimizer(cfg, model)
        scheduler = build_lr_scheduler(cfg, optimizer)
        DetectionCheckpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=scheduler).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=False)
        losses = []
        with EventStorage(0) as storage:
            for data, iteration in zip(build_detection_train_loader(cfg), range(cfg.SOLVER.MAX_ITER)):
                storage.iter = iteration
                loss_dict = model(data)
                total = sum(loss_dict.values())
                assert torch.isfinite(total).all(), loss_dict
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                scheduler.step()
                losses.append(total.item())
        results = {}
        for name in cfg.DATASETS.TEST:
            output = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            results[name] = inference_on_dataset(model, build_detection_test_loader(cfg, name),
                                                 build_evaluator(cfg, name, output))
        return cfg, results, losses

    @staticmethod
    def demo(config_file, opts, image_path, confidence_threshold=0.5):
        """demo/demo.py setup_cfg + VisualizationDemo.run_on_image on one image: (predictions, drawing)."""
        cfg = get_cfg()
        cfg.merge_from_file(config_file)
        cfg.merge_from_list([str(o) for o in opts])
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = confidence_threshold
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = confidence_threshold
        cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = confidence_threshold
        cfg.freeze()
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
        predictor = DefaultPredictor(cfg)
        image = utils.read_image(image_path, format="BGR")
        predictions = predictor(image)
        visualizer = Visualizer(image[:, :, ::-1], metadata)
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            drawing = visualizer.draw_panoptic_seg_predictions(panoptic_seg.to("cpu"), segments_info)
        else:
            if "sem_seg" in predictions:
                drawing = visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))
            if "instances" in predictions:
                drawing = visualizer.draw_instance_predictions(predictions=predictions["instances"].to("cpu"))
        return predictions, drawing.get_image()

    @staticmethod
    def analyze_model(config_file, opts):
        """tools/analyze_model.py --tasks parameter flop (on one input): (parameters, GFlops by operator)."""
        cfg = get_cfg()
        cfg.merge_from_file(config_file)
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.merge_from_list([str(o) for o in opts])
        cfg.freeze()
        model = build_model(cfg)
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        model.eval()
        data = next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))
        flops = FlopCountAnalysis(model, data)
        return parameter_count(model)[""], Counter(flops.by_operator())

    @staticmethod
    def visualize_data(config_file, opts, source):
        """tools/visualize_data.py --source annotation|dataloader: the first pictures it would save."""
        cfg = get_cfg()
        cfg.merge_from_file(config_file)
        cfg.merge_from_list([str(o) for o in opts])
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.freeze()
        metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        pictures = []
        if source == "dataloader":
            for per_image in next(iter(build_detection_train_loader(cfg))):
                img = utils.convert_image_to_rgb(per_image["image"].permute(1, 2, 0).cpu().numpy(), cfg.INPUT.FORMAT)
                target_fields = per_image["instances"].get_fields()
                labels = [metadata.thing_classes[i] for i in target_fields["gt_classes"]]
                vis = Visualizer(img, metadata=metadata).overlay_instances(
                    labels=labels, boxes=target_fields.get("gt_boxes", None), masks=target_fields.get("gt_masks", None))
                pictures.append(vis.get_image())
        else:
            for dic in DatasetCatalog.get(cfg.DATASETS.TRAIN[0]):
                img = utils.read_image(dic["file_name"], "RGB")
                pictures.append(Visualizer(img, metadata=metadata).draw_dataset_dict(dic).get_image())
        return pictures

    @staticmethod
    def is_picture(picture, min_colours=8):
        """A drawing: an (H, W, 3) uint8 picture with something on it."""
        colours = np.unique(picture.reshape(-1, picture.shape[-1]), axis=0)
        return picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8 and len(colours) > min_colours


# ---------------------------------------------------------------- Detectron2 v0.6's projects' train_net.py
def _sem_seg_train_augmentations(cfg, crop):
    """Their build_sem_seg_train_aug: resize, crop (``crop``: the project's crop augmentation), flip."""
    augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(crop(cfg))
    return augs + [T.RandomFlip()]


def _category_area_crop(cfg):
    return T.RandomCrop_CategoryAreaConstraint(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE,
                                               cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)


class DeepLabTrainer(StockTrainer):
    """projects/DeepLab/train_net.py's Trainer: semantic augmentations with a category-area crop, poly LR."""

    @classmethod
    def semantic_augmentations(cls, cfg):
        return _sem_seg_train_augmentations(cfg, _category_area_crop)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = None
        if "SemanticSegmentor" in cfg.MODEL.META_ARCHITECTURE:
            mapper = DatasetMapper(cfg, is_train=True, augmentations=cls.semantic_augmentations(cfg))
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return deeplab.build_lr_scheduler(cfg, optimizer)


class PointRendTrainer(DeepLabTrainer):
    """projects/PointRend/train_net.py's Trainer: the same loader plus SSD colour augmentation, stock LR
    schedule; COCO and semantic evaluators as in tools/train_net.py."""

    @classmethod
    def semantic_augmentations(cls, cfg):
        augmentations = super().semantic_augmentations(cfg)
        if cfg.INPUT.COLOR_AUG_SSD:
            augmentations.insert(-1, point_rend.ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
        return augmentations

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)


class PanopticDeepLabTrainer(DeepLabTrainer):
    """projects/Panoptic-DeepLab/train_net.py's Trainer. Its COCOEvaluator reads the instance form of each
    panoptic dataset from a fixed name map; the built-in names are added here as a user would add theirs."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        instance_form = dataset_name[: -len("_panoptic")]  # seg_d2_shapes_val_panoptic -> seg_d2_shapes_val
        return DatasetEvaluators([COCOPanopticEvaluator(dataset_name, output_folder),
                                  COCOEvaluator(instance_form, output_dir=output_folder)])

    @classmethod
    def build_train_loader(cls, cfg):
        augmentations = _sem_seg_train_augmentations(cfg, lambda c: T.RandomCrop(c.INPUT.CROP.TYPE, c.INPUT.CROP.SIZE))
        return build_detection_train_loader(cfg, mapper=panoptic_deeplab.PanopticDeeplabDatasetMapper(
            cfg, augmentations=augmentations))

    @classmethod
    def build_optimizer(cls, cfg, model):
        params = get_default_optimizer_params(model, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
                                              weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM)
        if cfg.SOLVER.OPTIMIZER == "SGD":
            return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
                params, cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
        return maybe_add_gradient_clipping(cfg, torch.optim.Adam)(params, cfg.SOLVER.BASE_LR)


PROJECTS = {  # folder in configs/projects: (its add_*_config, its Trainer)
    "PointRend": (point_rend.add_pointrend_config, PointRendTrainer),
    "DeepLab": (deeplab.add_deeplab_config, DeepLabTrainer),
    "Panoptic-DeepLab": (panoptic_deeplab.add_panoptic_deeplab_config, PanopticDeepLabTrainer),
}


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """The built-in data's forms as ``stock_tiny_shapes_*``: 2 training and 2 validation images."""
    register_shapes(TINY, root=str(tmp_path_factory.mktemp("shapes") / "data"), seed=0,
                    split_sizes={"train": 2, "val": 2})
    return TINY


@pytest.fixture(scope="session")
def stock(tiny_shapes, tmp_path_factory):
    return Stock(tmp_path_factory)


@pytest.fixture(scope="session")
def config_path():
    return lambda *parts: os.path.join(REPO, "configs", *parts)


@pytest.fixture(scope="session")
def zoo_path():
    from detectron2 import model_zoo

    return model_zoo.get_config_file


@pytest.fixture(scope="session")
def val_image(tiny_shapes):
    return DatasetCatalog.get(f"{tiny_shapes}_val")[0]["file_name"]

