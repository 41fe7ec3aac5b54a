"""Build information that ``detectron2.utils.collect_env`` asks ``_C`` for."""
import platform

import torch


def get_compiler_version() -> str:
    # No C++ was compiled for these ops; report the Python that runs them.
    return f"none (PyTorch ops from seg_d2.compat; {platform.python_implementation()} {platform.python_version()})"


def get_cuda_version() -> str:
    # The ops run wherever PyTorch runs; the CUDA they use is PyTorch's own.
    return f"PyTorch's CUDA {torch.version.cuda}" if torch.version.cuda else "not used (CPU build of PyTorch)"


def has_cuda() -> bool:
    return torch.cuda.is_available()
