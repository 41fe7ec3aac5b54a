"""Settings that a model would silently ignore, or that contradict the data, are refused here."""

__all__ = ["check_config"]


def check_config(cfg):
    """Raise (or warn, where Detectron2's convention allows it) on settings ``cfg``'s model ignores."""
