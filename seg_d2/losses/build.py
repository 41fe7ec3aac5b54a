"""build_loss: the loss a head's ``LOSS`` config node asks for."""
from typing import Optional

from .base import MODES, SEG_LOSS_REGISTRY, LossParamError
from .combined import CombinedLoss


def _parse_term(term, key):
    if not isinstance(term, (list, tuple)) or len(term) != 2 or not isinstance(term[0], str):
        raise ValueError(f"{key}: each term must be a (loss name, weight) pair, got {term!r}")
    name, weight = term
    if name not in SEG_LOSS_REGISTRY:
        names = ", ".join(sorted(n for n, _ in SEG_LOSS_REGISTRY))
        raise ValueError(f"{key}: unknown loss {name!r}; registered losses: {names}")
    return SEG_LOSS_REGISTRY.get(name), weight


def build_loss(loss_cfg, mode: str, ignore_index: Optional[int] = None, cfg_key: str = "LOSS") -> CombinedLoss:
    """Build the weighted combination described by ``loss_cfg`` (e.g. ``cfg.MODEL.ROI_MASK_HEAD.LOSS``).

    Args:
        loss_cfg: a LOSS node as added by ``add_seg_d2_config``: TERMS, WEIGHT and one parameter
            sub-node per loss (``loss_cfg[cls.cfg_node]``; its keys are the loss's arguments, upper-cased).
        mode: "binary", "multiclass" or "multilabel", chosen by the head.
        ignore_index: target value of ignored pixels (e.g. SEM_SEG_HEAD.IGNORE_VALUE), or None.
        cfg_key: full key of ``loss_cfg`` (e.g. "MODEL.ROI_MASK_HEAD.LOSS"), used in error messages.

    Returns:
        a module whose ``forward(logits, target, weight=None)`` is WEIGHT · Σ term weight · loss.

    Raises:
        ValueError naming the offending key and the allowed values, for an unknown loss name, a bad
        parameter or an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"{cfg_key}: unknown loss mode {mode!r} (set by the head); allowed: {', '.join(MODES)}")
    terms = []
    for term in loss_cfg.TERMS:
        cls, weight = _parse_term(term, f"{cfg_key}.TERMS")
        params = {k.lower(): v for k, v in loss_cfg.get(cls.cfg_node, {}).items()}
        try:
            terms.append((cls(mode=mode, ignore_index=ignore_index, **params), weight))
        except LossParamError as e:
            raise ValueError(f"{cfg_key}.{cls.cfg_node}.{e.param.upper()}: {e}") from None
    try:
        return CombinedLoss(terms, loss_cfg.WEIGHT)
    except LossParamError as e:
        key = "WEIGHT" if e.param == "weight" else "TERMS"
        raise ValueError(f"{cfg_key}.{key}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{cfg_key}.TERMS: {e}") from None
