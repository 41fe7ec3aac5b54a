from .panoptic_fpn import SegD2PanopticFPN
from .unet_segmentor import UNetSegmentor
