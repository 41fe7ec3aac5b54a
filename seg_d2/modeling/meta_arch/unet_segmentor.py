"""UNetSegmentor: Detectron2's SemanticSegmentor for a U-Net backbone, which also takes grayscale.

A 1-channel U-Net (MODEL.UNET.IN_CHANNELS 1, MODEL.PIXEL_MEAN/STD of length 1) converts 3-channel input
(BGR, or RGB with INPUT.FORMAT "RGB") to luma with ITU-R BT.601 weights. DefaultPredictor only accepts
INPUT.FORMAT BGR/RGB, so it works unchanged; data read with INPUT.FORMAT "L" is already 1-channel and
passes through, and since PIL's "L" conversion uses the same weights, both see the same gray values.
"""
from typing import Tuple

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor

__all__ = ["UNetSegmentor"]

_LUMA_RGB = (0.299, 0.587, 0.114)


@META_ARCH_REGISTRY.register()
class UNetSegmentor(SemanticSegmentor):
    @configurable
    def __init__(self, *, backbone, sem_seg_head, pixel_mean: Tuple[float], pixel_std: Tuple[float],
                 input_format: str = "BGR"):
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(
                f"MODEL.PIXEL_MEAN ({len(pixel_mean)} values) and MODEL.PIXEL_STD "
                f"({len(pixel_std)} values) differ in length"
            )
        in_channels = getattr(backbone, "in_channels", len(pixel_mean))
        if len(pixel_mean) != in_channels:
            raise ValueError(
                f"MODEL.PIXEL_MEAN has {len(pixel_mean)} values, MODEL.UNET.IN_CHANNELS is {in_channels}"
            )
        super().__init__(
            backbone=backbone, sem_seg_head=sem_seg_head, pixel_mean=pixel_mean, pixel_std=pixel_std
        )
        weights = _LUMA_RGB if input_format == "RGB" else _LUMA_RGB[::-1]
        self.register_buffer("luma_weights", torch.tensor(weights).view(3, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), "input_format": cfg.INPUT.FORMAT}

    def forward(self, batched_inputs):
        if len(self.pixel_mean) == 1:
            batched_inputs = [{**x, "image": self._to_gray(x["image"])} for x in batched_inputs]
        return super().forward(batched_inputs)

    def _to_gray(self, image):
        if image.shape[0] != 3:
            return image
        return (image.to(self.device).float() * self.luma_weights).sum(0, keepdim=True)
