"""SOLVER.AMP.ENABLED on CPU trains under bfloat16 autocast (Detectron2's AMPTrainer is CUDA-only)."""
from pathlib import Path

import torch

import seg_d2  # noqa: F401
from detectron2.engine import HookBase
from seg_d2.engine import Trainer, setup_cfg
from seg_d2.engine.amp import CPUAutocastTrainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "builtin" / "semantic_unet.yaml"


def test_cpu_amp_trains_in_bfloat16(tmp_path):
    torch.manual_seed(0)
    cfg = setup_cfg(str(CONFIG), ["SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(tmp_path),
                                  "DATASETS.TEST", "()", "MODEL.UNET.DEPTH", "2", "MODEL.UNET.BASE_CHANNELS", "8",
                                  "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01"])
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, CPUAutocastTrainer)
    seen = []
    trainer.model.backbone.register_forward_hook(
        lambda module, inputs, output: seen.append((torch.is_autocast_enabled("cpu"), output["dec1"].dtype)))
    losses = []
    trainer.register_hooks([_LossRecorder(losses)])
    trainer.train()
    assert seen and all(enabled and dtype == torch.bfloat16 for enabled, dtype in seen)
    assert all(torch.isfinite(torch.tensor(losses))) and len(losses) == 6
    assert losses[-1] < losses[0]  # 6 steps of SGD on the same small data lower the loss


class _LossRecorder(HookBase):
    def __init__(self, losses):
        self.losses = losses

    def after_step(self):
        self.losses.append(self.trainer.storage.history("total_loss").latest())
