"""Random-weight SAMs built from segment_anything's own parts, and a briefly trained seg_d2 detector."""
import functools
import os

import numpy as np
import pytest
import torch

import seg_d2  # noqa: F401  (before detectron2)

TINY_TYPE = "seg_d2_test_tiny"  # registered in segment_anything.sam_model_registry for the config path
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MASK_RCNN = os.path.join(ROOT, "configs", "builtin", "mask_rcnn_R18_shapes.yaml")


def build_tiny_sam(checkpoint=None, width=32, seed=0):
    """SAM with the official architecture's parts and prompt semantics, scaled down: 64-pixel input, a 2-block
    ViT (windowed + global attention, relative positions), 4x4 embeddings, 16x16 mask prompts. Random weights
    (``seed``); ``checkpoint`` loaded as segment_anything's builders load theirs."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=2, out_chans=width,
                                      use_rel_pos=True, window_size=2, global_attn_indexes=(1,),
                                      norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=width, image_embedding_size=(4, 4), input_image_size=(64, 64),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=width, iou_head_depth=2, iou_head_hidden_dim=32,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=width, mlp_dim=64, num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, weights_only=True))
    return sam


@pytest.fixture
def tiny_sam():
    return build_tiny_sam()


@pytest.fixture
def sam_builder():
    """build_tiny_sam, for tests that need other widths or seeds (test files cannot import conftest)."""
    return build_tiny_sam


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """(MODEL.SAM.TYPE, MODEL.SAM.CHECKPOINT) of a tiny SAM registered in segment_anything's registry."""
    from segment_anything import sam_model_registry

    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    sam_model_registry[TINY_TYPE] = build_tiny_sam
    yield TINY_TYPE, str(path)
    del sam_model_registry[TINY_TYPE]


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory):
    """MODEL.WEIGHTS of the built-in Mask R-CNN R18 after a few iterations on the built-in shapes."""
    from seg_d2.engine import Trainer, setup_cfg

    out = tmp_path_factory.mktemp("detector")
    cfg = setup_cfg(MASK_RCNN, ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
                                "SOLVER.WARMUP_ITERS", "1", "SEED", "0", "SEG_D2.NUM_THREADS", "1",
                                "SEG_D2.PROGRESS.CURVES", "False", "DATASETS.TEST", "()"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return str(out / "model_final.pth")


@pytest.fixture
def scene():
    """A 48x64 BGR uint8 image with two bright objects on a dark textured background."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
    image[8:30, 6:26] = (40, 200, 230)
    image[20:44, 36:60] = (220, 90, 30)
    return image
