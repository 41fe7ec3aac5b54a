"""Training-free baselines with a Detectron2 model's call contract, scored by the same evaluators."""
from .watershed import WatershedSegmenter

__all__ = ["WatershedSegmenter"]
