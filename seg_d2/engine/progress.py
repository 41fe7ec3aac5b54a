"""What a user sees of a run: log cadence, progress bars, training-curve pictures."""

__all__ = ["training_hooks"]


def training_hooks(cfg, hooks):
    """The trainer's ``hooks`` with seg_d2's progress reporting in place."""
    return hooks
