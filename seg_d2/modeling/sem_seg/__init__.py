from .aspp_head import DeepLabV3PlusASPPHead
from .base import FullResolutionSemSegHead
from .fcn_head import FCNHead
from .segformer_head import SegFormerHead
from .unet_head import UNetHead

__all__ = ["DeepLabV3PlusASPPHead", "FCNHead", "FullResolutionSemSegHead", "SegFormerHead", "UNetHead"]
