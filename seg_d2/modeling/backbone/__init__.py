from .mit import MixTransformer, build_mit_backbone
from .unet import UNet, UpBlock, build_unet_backbone, double_conv

__all__ = ["MixTransformer", "UNet", "UpBlock", "build_mit_backbone", "build_unet_backbone", "double_conv"]
