"""Mixed precision on CPU: bfloat16 autocast (Detectron2 v0.6's AMPTrainer is CUDA-only float16)."""
import time

import torch

from detectron2.engine import AMPTrainer

__all__ = ["CPUAutocastTrainer"]


class CPUAutocastTrainer(AMPTrainer):
    """AMPTrainer whose forward pass runs under ``torch.autocast("cpu", torch.bfloat16)``.

    bfloat16 keeps float32's exponent range, so no gradient scaling is needed (unlike float16);
    seg_d2's losses compute in float32 inside autocast.
    """

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values()) if isinstance(loss_dict, dict) else loss_dict
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
