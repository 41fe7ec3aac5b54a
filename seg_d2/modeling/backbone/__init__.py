from .mit import MixTransformer, build_mit_backbone
from .mobilenet import MobileNetV2Backbone, build_mobilenet_v2_backbone, build_mobilenet_v2_fpn_backbone
from .timm_backbone import TimmBackbone, build_timm_backbone, build_timm_fpn_backbone
from .unet import UNet, UpBlock, build_unet_backbone, double_conv

__all__ = ["MixTransformer", "UNet", "UpBlock", "build_mit_backbone", "build_unet_backbone", "double_conv",
           "MobileNetV2Backbone", "build_mobilenet_v2_backbone", "build_mobilenet_v2_fpn_backbone",
           "TimmBackbone", "build_timm_backbone", "build_timm_fpn_backbone"]
