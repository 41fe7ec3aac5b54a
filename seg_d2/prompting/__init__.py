"""Promptable segmentation: points, boxes and mask prompts with Segment Anything's semantics, answered by SAM
(optional segment-anything package, MODEL.SAM.CHECKPOINT) or by selecting among a trained seg_d2 model's
instances. See docs/sam.md."""
from .point_prompts import NoMatchingInstance, predict_from_points, select_by_box, select_instances
from .prompter import CachedPredictor, ModelPrompter, build_prompter
from .prompts import PromptMasks, check_prompt
from .sam import SamPrompter, SamUnavailableError, load_sam

__all__ = [
    "CachedPredictor",
    "ModelPrompter",
    "NoMatchingInstance",
    "PromptMasks",
    "SamPrompter",
    "SamUnavailableError",
    "build_prompter",
    "check_prompt",
    "load_sam",
    "predict_from_points",
    "select_by_box",
    "select_instances",
]
