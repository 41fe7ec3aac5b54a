from .launch import launch
from .trainer import Trainer, setup_cfg

__all__ = ["Trainer", "launch", "setup_cfg"]
