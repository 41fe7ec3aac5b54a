from .aspp_head import DeepLabV3PlusASPPHead
from .base import FullResolutionSemSegHead
from .unet_head import UNetHead

__all__ = ["DeepLabV3PlusASPPHead", "FullResolutionSemSegHead", "UNetHead"]
