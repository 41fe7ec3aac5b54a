from .panoptic_fpn import SegD2PanopticFPN
from .unet_segmentor import UNetSegmentor
from .sam_detector import SamDetector
