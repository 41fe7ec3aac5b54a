from .unet_segmentor import UNetSegmentor
