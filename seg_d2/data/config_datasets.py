"""Datasets declared in the config (``DATASETS.REGISTER``), registered before any model or loader is built."""

__all__ = ["register_datasets_from_config"]


def register_datasets_from_config(cfg):
    """Register every dataset ``cfg`` declares; a no-op for datasets already registered the same way."""
