"""add_seg_d2_config(cfg): every config key seg_d2 adds, with its default and why.

One function per area, so each concept's keys live together; the defaults reproduce stock Detectron2.
``import seg_d2`` adds them to Detectron2's own defaults (:func:`extend_detectron2_defaults`), so
``get_cfg()`` has them and stock tools (tools/train_net.py, demo/demo.py, ...) read seg_d2's configs.
"""
import copy

from detectron2.config import CfgNode as CN
from detectron2.config import defaults as _detectron2_defaults

# Detectron2's defaults as Detectron2 defines them, taken before seg_d2 extends them.
_STOCK_DEFAULTS = _detectron2_defaults._C.clone()


def _add_loss_config(cfg):
    """MODEL.ROI_MASK_HEAD.LOSS and MODEL.SEM_SEG_HEAD.LOSS: each head's loss, read by
    ``seg_d2.losses.build_loss``. Both nodes have the same keys; only the default TERMS differ."""

    def loss_node(default_loss):
        node = CN()
        # (registered loss name, weight) pairs; the loss is their weighted sum, e.g.
        # (("BCELoss", 1.0), ("DiceLoss", 0.5)). Names: seg_d2.losses.SEG_LOSS_REGISTRY.
        node.TERMS = ((default_loss, 1.0),)
        # Overall factor on the sum (the mask-head LOSS_WEIGHT Detectron2 lacks). The semantic head also
        # multiplies by Detectron2's own MODEL.SEM_SEG_HEAD.LOSS_WEIGHT; keep one of the two at 1.
        node.WEIGHT = 1.0
        # Per-class weights ((): none; else one per channel) and label smoothing ε in [0, 1].
        node.CE = CN({"CLASS_WEIGHTS": (), "LABEL_SMOOTHING": 0.0})
        # POS_WEIGHT >= 0 scales the foreground term (> 1 favours recall); CLASS_WEIGHTS as for CE.
        node.BCE = CN({"POS_WEIGHT": 1.0, "CLASS_WEIGHTS": ()})
        # Region losses: SMOOTH >= 0 is added to numerator and denominator (an empty target keeps a
        # finite loss and a gradient); EPS floors the denominator; LOG_LOSS uses -log(index) instead of
        # 1 - index; PER_IMAGE computes the overlap per image (ROI) and averages, else over the batch.
        region = {"SMOOTH": 1.0, "EPS": 1e-7, "PER_IMAGE": False}
        node.DICE = CN({**region, "LOG_LOSS": False})
        node.IOU = CN({**region, "LOG_LOSS": False})
        # ALPHA, BETA in [0, 1] weigh false positives and false negatives (BETA > ALPHA: recall).
        node.TVERSKY = CN({**region, "LOG_LOSS": False, "ALPHA": 0.3, "BETA": 0.7})
        # GAMMA >= 0 is the exponent on (1 - Tversky index); 0.75 is Abraham & Khan's best.
        node.FOCAL_TVERSKY = CN({**region, "ALPHA": 0.3, "BETA": 0.7, "GAMMA": 0.75})
        # ALPHA in [0, 1] balances foreground/background (None: off); GAMMA >= 0 focuses on hard pixels.
        node.FOCAL = CN({"ALPHA": 0.25, "GAMMA": 2.0})
        # PER_IMAGE as above; CLASSES: "present" (classes in the target) or "all" (multi-class only).
        node.LOVASZ = CN({"PER_IMAGE": False, "CLASSES": "present"})
        return node

    # Defaults reproduce Detectron2: mean BCE over the ROI pixels of each ROI's class channel, and
    # mean softmax CE over the non-ignored pixels (ignore index = MODEL.SEM_SEG_HEAD.IGNORE_VALUE).
    cfg.MODEL.ROI_MASK_HEAD.LOSS = loss_node("BCELoss")
    cfg.MODEL.SEM_SEG_HEAD.LOSS = loss_node("CrossEntropyLoss")


def _add_mask_head_config(cfg):
    """MODEL.ROI_MASKIOU_HEAD: Mask Scoring R-CNN's MaskIoU head (ROI_HEADS.NAME "MaskScoringROIHeads" or
    "CascadeMaskScoringROIHeads"). Defaults follow Huang et al. 2019: 4 convs of 256 (the last with
    stride 2), 2 FCs of 1024, then one IoU per class (one in all with ROI_MASK_HEAD.CLS_AGNOSTIC_MASK).
    The mask head's loss is MODEL.ROI_MASK_HEAD.LOSS with ROI_MASK_HEAD.NAME "MaskRCNNConvUpsampleLossHead"."""
    cfg.MODEL.ROI_MASKIOU_HEAD = CN()
    cfg.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 256
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_MASKIOU_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_FC = 2
    # Normalisation of the convs ("", "GN", "BN", ...; see detectron2.layers.get_norm).
    cfg.MODEL.ROI_MASKIOU_HEAD.NORM = ""
    # Weight of the L2 loss between predicted and actual mask IoU ("loss_maskiou").
    cfg.MODEL.ROI_MASKIOU_HEAD.LOSS_WEIGHT = 1.0


def _add_semantic_config(cfg):
    """U-Net backbone (build_unet_backbone) and seg_d2's semantic heads (UNetHead, DeepLabV3PlusASPPHead)."""
    # The classic U-Net (Ronneberger et al., 2015) as a backbone; see seg_d2/modeling/backbone/unet.py.
    cfg.MODEL.UNET = CN()
    # Number of 2x poolings (levels below full resolution); inputs are padded to multiples of 2**DEPTH.
    cfg.MODEL.UNET.DEPTH = 4
    # Width of the full-resolution level; doubles at each level down (64 -> 1024 in the paper).
    cfg.MODEL.UNET.BASE_CHANNELS = 64
    # 1 for grayscale (with 1-value MODEL.PIXEL_MEAN/STD; UNetSegmentor turns 3-channel BGR/RGB input into
    # luma, so INPUT.FORMAT may stay BGR, as DefaultPredictor requires; "L" also trains), 3 for colour.
    cfg.MODEL.UNET.IN_CHANNELS = 3
    # Norm after every 3x3 conv ("" as in the paper; "BN"/"GN"/"SyncBN" train faster from scratch).
    cfg.MODEL.UNET.NORM = "BN"
    # Upsample with bilinear + 1x1 conv instead of the paper's 2x2 transposed conv.
    cfg.MODEL.UNET.BILINEAR = False
    # Features to output: "dec1" (decoder, full resolution) .. "dec{DEPTH}", "enc1" .. "enc{DEPTH+1}".
    cfg.MODEL.UNET.OUT_FEATURES = ["dec1"]

    # UNetHead: width of each 2x decoder step from the coarsest IN_FEATURE's stride S down to stride 1,
    # log2(S) entries, coarse to fine (5 for p2..p5 / res2..res5; [] for the U-Net backbone's "dec1").
    cfg.MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS = [128, 128, 128, 64, 32]
    # DeepLabV3PlusASPPHead (Chen et al., 2018): IN_FEATURES names the ASPP input (e.g. ["res5"]).
    # The three atrous rates of the ASPP's 3x3 branches (DeepLabV3's 6/12/18 at output stride 16).
    cfg.MODEL.SEM_SEG_HEAD.ASPP_RATES = [6, 12, 18]
    # Width of every ASPP branch and of its projection.
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    # Dropout after the ASPP projection (0.1 in DeepLab).
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    # The stride-4 feature the decoder concatenates (after a 1x1 reduction) with the upsampled ASPP output.
    cfg.MODEL.SEM_SEG_HEAD.LOW_LEVEL_FEATURE = "res2"
    # Width of that 1x1 reduction (48 in the paper: few enough not to outweigh the ASPP features).
    # The decoder's two 3x3 convs take their width from MODEL.SEM_SEG_HEAD.CONVS_DIM.
    cfg.MODEL.SEM_SEG_HEAD.LOW_LEVEL_CHANNELS = 48


def _add_fcn_segformer_config(cfg):
    """FCNHead (Long et al., 2015), the MiT backbone (build_mit_backbone) and SegFormerHead (Xie et al., 2021)."""
    # FCNHead: width of each 3x3 conv on its single IN_FEATURE before the 1x1 classifier ([]: none).
    cfg.MODEL.SEM_SEG_HEAD.FCN_CONV_DIMS = [512, 512]
    # FCNHead and SegFormerHead: dropout before the classifier. SegFormerHead's common width is CONVS_DIM.
    cfg.MODEL.SEM_SEG_HEAD.CLASSIFIER_DROPOUT = 0.1

    # Mix Transformer encoder of SegFormer; see seg_d2/modeling/backbone/mit.py.
    cfg.MODEL.MIT = CN()
    # "B0" (widths 32/64/160/256, 3.3M parameters) or "B1" (64/128/320/512, 13.1M); 2 blocks per stage.
    cfg.MODEL.MIT.VARIANT = "B0"
    # Stochastic depth, rising linearly over the blocks to this rate (0.1 in the paper).
    cfg.MODEL.MIT.DROP_PATH_RATE = 0.1
    # Features to output: "mit1" .. "mit4" at strides 4, 8, 16, 32.
    cfg.MODEL.MIT.OUT_FEATURES = ["mit1", "mit2", "mit3", "mit4"]
    # Path to an encoder state_dict (torch.save) to start from ("": random init). Mismatching keys are
    # reported and keep their initial values. MODEL.WEIGHTS, loaded afterwards, still overrides it.
    cfg.MODEL.MIT.PRETRAINED = ""


def _add_panoptic_config(cfg):
    """MODEL.SEG_D2_PANOPTIC: what SegD2PanopticFPN adds to Detectron2's MODEL.PANOPTIC_FPN.COMBINE
    (OVERLAP_THRESH, STUFF_AREA_LIMIT, INSTANCES_CONFIDENCE_THRESH), whose keys it reads as they are."""
    cfg.MODEL.SEG_D2_PANOPTIC = CN()
    # Minimum area (output pixels) of each stuff class's segment, one per stuff class (semantic labels
    # 1..NUM_CLASSES-1); (): COMBINE.STUFF_AREA_LIMIT for all. Small classes can then keep small regions.
    cfg.MODEL.SEG_D2_PANOPTIC.STUFF_AREA_LIMITS = ()
    # Factor on every proposal and ROI-head loss (any ROI head; stock PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT
    # must stay 1.0). The semantic loss keeps MODEL.SEM_SEG_HEAD.LOSS_WEIGHT (0.5 in Kirillov et al.).
    cfg.MODEL.SEG_D2_PANOPTIC.INSTANCE_LOSS_WEIGHT = 1.0


def _add_evaluation_config(cfg):
    # seg_d2's evaluators (seg_d2.evaluation.build_evaluators); results equal the reference tools'
    cfg.SEG_D2.EVALUATION = CN()
    # "seg_d2": PQ per image in process(), no PNG round trip; "panopticapi": Detectron2's COCOPanopticEvaluator
    cfg.SEG_D2.EVALUATION.PANOPTIC_ENGINE = "seg_d2"
    # exact COCO AP engine: "auto" (fastest installed), "ultrafast", "hotcoco" or "pycocotools"
    cfg.SEG_D2.EVALUATION.COCO_ENGINE = "auto"
    # Boundary IoU band width as a fraction of the image diagonal (Cheng et al. 2021 use 0.02)
    cfg.SEG_D2.EVALUATION.BOUNDARY_DILATION_RATIO = 0.02
    # a semantic class only predicted (no ground-truth pixel): "zero" (IoU 0, in the means, as Detectron2's
    # mIoU counts it) or "nan" (left out of the means); echoed as predicted_only_IoU (seg_d2.evaluation)
    cfg.SEG_D2.EVALUATION.SEM_SEG_PREDICTED_ONLY = "zero"


def _add_albumentations_config(cfg):
    """INPUT.ALBUMENTATIONS: train-time augmentation with albumentations (AlbumentationsDatasetMapper in
    seg_d2.data.dataset_mappers), applied to image, instance masks and semantic labels together."""
    cfg.INPUT.ALBUMENTATIONS = CN()
    # False: Detectron2's DatasetMapper and INPUT.* resizing/flip, as stock.
    cfg.INPUT.ALBUMENTATIONS.ENABLED = False
    # [name, {params}] per transform, in order; name is an albumentations class (A.<name>), params its
    # keyword arguments (YAML lists become tuples). Masks are always resampled with nearest neighbour.
    # Replaces INPUT.MIN_SIZE_TRAIN etc.: add a resize here (e.g. ["Resize", {"height": 128, "width": 128}]).
    cfg.INPUT.ALBUMENTATIONS.PIPELINE = [
        ["HorizontalFlip", {"p": 0.5}],
        ["RandomBrightnessContrast", {"brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}],
        ["ElasticTransform", {"alpha": 30.0, "sigma": 6.0, "p": 0.2}],
        ["GaussNoise", {"std_range": [0.02, 0.08], "p": 0.3}],
    ]


def _add_data_config(cfg):
    """A user's own data: datasets declared in the config (seg_d2.data.config_datasets) and how images
    from real sensors are read (seg_d2.data.image_io, used by every mapper and tool); see docs/own_data.md."""
    # Datasets registered before any model or loader is built, one tuple each, e.g.
    # (("cells_train", "coco", "ann/train.json", "img"),). Formats and their arguments: docs/own_data.md.
    cfg.DATASETS.REGISTER = ()
    # At registration: "header" opens every image's header (exists, is an image, its size matches the
    # annotations; fast), "decode" also decodes every pixel (finds truncated files before training), "none".
    cfg.DATASETS.CHECK_IMAGES = "header"
    # Raw sensor values -> the 0..255 range PIXEL_MEAN/STD expect. "auto": 8-bit as is (stock), other depths
    # per-image percentile stretch; "percentile"; "range" (RANGE, same for every image); "none" (raw).
    cfg.INPUT.NORMALIZE = CN()
    cfg.INPUT.NORMALIZE.MODE = "auto"
    # (low, high) percentiles mapped to 0 and 255 by "percentile" (1/99.8: robust to a few hot pixels).
    cfg.INPUT.NORMALIZE.PERCENTILES = (1.0, 99.8)
    # (low, high) values mapped to 0 and 255 by "range"; (): the integer type's full range (0..65535).
    cfg.INPUT.NORMALIZE.RANGE = ()
    # Statistics per band (multispectral) instead of over all bands together (keeps colours balanced).
    cfg.INPUT.NORMALIZE.PER_BAND = False
    # Indices of the file's bands to use, 1 or 3 of them (e.g. (3, 2, 1): NIR-R-G of a 4-band TIFF);
    # (): all of a gray or RGB image, an alpha band dropped.
    cfg.INPUT.BANDS = ()


def _add_predict_config(cfg):
    """SEG_D2.INFERENCE: sliding-window inference of large images (seg_d2.inference, tools/predict.py);
    SEG_D2.PROGRESS: what training shows while it runs (seg_d2.engine.progress). See docs/predict.md."""
    cfg.SEG_D2.INFERENCE = CN()
    # Tile side in pixels; 0: INPUT.MIN_SIZE_TEST, so that a square tile is not resized and the model sees
    # the image at its own resolution. Each tile goes through DefaultPredictor's resize like any image.
    cfg.SEG_D2.INFERENCE.TILE_SIZE = 0
    # Fraction of the tile side that neighbouring tiles share, in [0, 1): objects up to that size lie whole
    # in some tile, and larger ones cut by a seam are joined by their masks in the shared band.
    cfg.SEG_D2.INFERENCE.TILE_OVERLAP = 0.25
    # Images with more pixels than this are predicted in tiles (0: every image; -1: none). Whole-image
    # inference holds one full-size mask per instance: 8.4 MP x 100 instances is already 0.8 GB.
    cfg.SEG_D2.INFERENCE.TILE_ABOVE_PIXELS = 4096 * 2048
    # Two tiles' instances are one object when their masks' IoU inside the tiles' shared window reaches this.
    cfg.SEG_D2.INFERENCE.MERGE_IOU = 0.5
    # Also join instances of different classes (the joined one takes its best-scoring part's class).
    cfg.SEG_D2.INFERENCE.MERGE_CLASS_AGNOSTIC = False

    cfg.SEG_D2.PROGRESS = CN()
    # Training writes its log line (losses, ETA), metrics.json and TensorBoard every LOG_PERIOD iterations
    # (Detectron2's 20) and also after these early iterations since the start or resume, so the first ETA
    # comes within seconds on a CPU (Detectron2 times iterations from the 3rd on).
    cfg.SEG_D2.PROGRESS.LOG_PERIOD = 20
    cfg.SEG_D2.PROGRESS.EARLY_LOG_ITERS = (3, 10)
    # Draw OUTPUT_DIR/curves.png (losses, learning rate, evaluation metrics) after each evaluation and at the end.
    cfg.SEG_D2.PROGRESS.CURVES = True


def _add_fault_tolerance_config(cfg):
    """Checkpoints that survive faults and bad samples that do not end a run (seg_d2.engine.Trainer);
    see docs/fault_tolerance.md."""
    # Keep only the newest N periodic checkpoints (model_XXXXXXX.pth) to bound disk use; model_final.pth
    # is always kept. 0 keeps all of them, as Detectron2 does.
    cfg.SOLVER.CHECKPOINT_KEEP = 0
    # Skip a training sample whose reading or mapping fails (a truncated JPEG, ...) instead of stopping the
    # run; each is logged and listed at the end (log, metrics "skipped_samples", OUTPUT_DIR/skipped_samples.json).
    # Deterministic: the batch takes the stream's next sample, and a resumed run skips the same ones.
    cfg.DATALOADER.SKIP_BAD_SAMPLES = False


def _add_backbone_config(cfg):
    """MODEL.TIMM (build_timm_backbone / build_timm_fpn_backbone) and MODEL.MOBILENET
    (build_mobilenet_v2_backbone / _fpn_backbone); both also read MODEL.BACKBONE.FREEZE_AT. See docs/backbones.md."""
    cfg.MODEL.TIMM = CN()
    # timm model name (timm.list_models()); created with features_only=True and pretrained=False, never downloaded.
    cfg.MODEL.TIMM.NAME = "resnet18d"
    # Which of timm's feature levels to output (feature_info indices); (1, 2, 3, 4) are strides 4..32 for most CNNs.
    cfg.MODEL.TIMM.OUT_INDICES = (1, 2, 3, 4)
    # Local state_dict of timm.create_model(NAME) to start from ("": initial values); keys are reported on load.
    cfg.MODEL.TIMM.WEIGHTS = ""
    # "": timm's own norms; "FrozenBN": every BatchNorm frozen (small batches); "SyncBN": synchronised across processes.
    cfg.MODEL.TIMM.NORM = ""
    # Stochastic depth rate for models that have it (ConvNeXt, ViT, ...); 0: off.
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.0

    cfg.MODEL.MOBILENET = CN()
    # torchvision's MobileNetV2 width multiplier (1.0 matches its ImageNet checkpoint).
    cfg.MODEL.MOBILENET.WIDTH_MULT = 1.0
    # Outputs, of "res2" .. "res5" (strides 4 .. 32).
    cfg.MODEL.MOBILENET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # "BN" (trainable), "FrozenBN" or "SyncBN".
    cfg.MODEL.MOBILENET.NORM = "BN"
    # Local torchvision checkpoint (e.g. mobilenet_v2-b0353104.pth) to start from ("": initial values).
    cfg.MODEL.MOBILENET.WEIGHTS = ""


def _add_speed_config(cfg):
    """SEG_D2.FOLD_NORMS (seg_d2.modeling.fast_inference) and SEG_D2.NUM_THREADS (seg_d2.engine.threads):
    CPU speed-ups that keep a model's outputs. See docs/speed.md."""
    # Models built by DefaultTrainer / DefaultPredictor (so seg_d2's Trainer, tools/predict.py) apply each
    # FrozenBatchNorm, and BatchNorm in eval mode, through the weights of the conv before it: one pass over
    # the activations less, same outputs to float32 rounding. False: Detectron2's own modules.
    cfg.SEG_D2.FOLD_NORMS = True
    # Torch CPU threads while training: 0 = one per core that other processes leave idle, chosen once before
    # training and kept (a resumed run keeps its checkpoint's count: bit-exact resume); -1 = the same, re-checked
    # every 20 s (faster where the load changes, not bit-reproducible); N > 0 = N. OMP_NUM_THREADS /
    # MKL_NUM_THREADS, when set, win over 0 and -1. Threads without a core of their own slow every step down
    # several-fold on a shared machine.
    cfg.SEG_D2.NUM_THREADS = 0


def _add_sam_config(cfg):
    """MODEL.SAM: Segment Anything (Kirillov et al., 2023) from the optional segment-anything package
    (``pip install seg_d2[sam]``): prompts (seg_d2.prompting), detector boxes -> SAM masks (META_ARCHITECTURE
    "SamDetector"), assisted labelling (tools/annotate.py). See docs/sam.md."""
    cfg.MODEL.SAM = CN()
    # Local SAM checkpoint (e.g. sam_vit_h_4b8939.pth); never downloaded. "": no SAM, prompts select among
    # the instances of the seg_d2 model the config describes (seg_d2.prompting.build_prompter).
    cfg.MODEL.SAM.CHECKPOINT = ""
    # The checkpoint's architecture: a key of segment_anything.sam_model_registry (vit_h, vit_l, vit_b).
    cfg.MODEL.SAM.TYPE = "vit_h"
    # SamDetector: the meta-architecture whose boxes prompt SAM (GeneralizedRCNN, RetinaNet, ...), built
    # from the rest of this config and loaded from MODEL.WEIGHTS as if it were MODEL.META_ARCHITECTURE.
    cfg.MODEL.SAM.DETECTOR = "GeneralizedRCNN"
    # SamDetector: three candidate masks per box, the one with the highest predicted IoU kept (SAM's
    # authors advise one mask for a box, which is not ambiguous: False).
    cfg.MODEL.SAM.MULTIMASK_OUTPUT = False
    # SamDetector: keep the detector's own mask where SAM's predicted IoU is not higher than the detector's
    # mask IoU: Mask Scoring R-CNN's predicted one (pred_mask_ious), else DETECTOR_MASK_IOU for every mask.
    cfg.MODEL.SAM.KEEP_DETECTOR_MASKS = False
    cfg.MODEL.SAM.DETECTOR_MASK_IOU = 0.8
    # Boxes decoded per SAM mask-decoder call: each holds its masks at full image size (memory).
    cfg.MODEL.SAM.BOX_BATCH = 16


def add_seg_d2_config(cfg):
    """Add seg_d2's keys, with their defaults, to the Detectron2 config ``cfg``; returns ``cfg``.

    Only keys ``cfg`` lacks are added: values already set are kept, so a second call changes nothing
    (a config from ``get_cfg()`` already has every key once seg_d2 is imported).
    """
    defaults = stock_detectron2_config()
    defaults.SEG_D2 = CN()
    for add in (
        _add_loss_config,
        _add_mask_head_config,
        _add_semantic_config,
        _add_fcn_segformer_config,
        _add_panoptic_config,
        _add_evaluation_config,
        _add_albumentations_config,
        _add_data_config,
        _add_predict_config,
        _add_fault_tolerance_config,
        _add_backbone_config,
        _add_speed_config,
        _add_sam_config,
    ):
        add(defaults)
    _add_missing_keys(cfg, defaults)
    return cfg


def _add_missing_keys(cfg, defaults):
    """Copy into ``cfg`` every key of ``defaults`` that ``cfg`` lacks (recursively)."""
    for key, value in defaults.items():
        if key not in cfg:
            setattr(cfg, key, copy.deepcopy(value))  # setattr: a frozen cfg refuses, as CfgNode does
        elif isinstance(value, CN) and isinstance(cfg[key], CN):
            _add_missing_keys(cfg[key], value)


def stock_detectron2_config():
    """A fresh copy of Detectron2's own defaults, without seg_d2's keys."""
    return _STOCK_DEFAULTS.clone()


def extend_detectron2_defaults():
    """Add seg_d2's keys to the defaults that Detectron2's ``get_cfg()`` copies (run by ``import seg_d2``)."""
    add_seg_d2_config(_detectron2_defaults._C)
