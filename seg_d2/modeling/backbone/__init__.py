from .unet import UNet, UpBlock, build_unet_backbone, double_conv

__all__ = ["UNet", "UpBlock", "build_unet_backbone", "double_conv"]
