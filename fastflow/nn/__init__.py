"""The small neural-network layer shared by learned reconstruction and in-silico labelling.

PyTorch is an optional extra (``pip install 'fastflow[torch]'``, which pins the CPU build
``torch==2.13.0``); nothing outside this package and the modules that use it imports torch, so the rest of
fastflow works without it. The package holds

- :mod:`fastflow.nn.blocks`: building blocks and the U-Net, built from a JSON-able configuration;
- :mod:`fastflow.nn.weights`: a module's weights and configuration in a fastflow model file (safetensors
  and a model card, :mod:`fastflow.modelfile`), and back;
- :mod:`fastflow.nn.training`: one training loop with checkpoints that a killed training resumes from;
- :mod:`fastflow.nn.tiling`: inference on images of any size by overlapping tiles blended smoothly.

:func:`require_torch` is how every user of the layer imports torch: without it, one clear error says what
to install.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

from fastflow.errors import FastflowError

__all__ = ["TORCH_REQUIREMENT", "TorchMissingError", "require_torch", "resolve_device", "torch_available"]

TORCH_REQUIREMENT = "torch==2.13.0"
"""The torch release fastflow is tested with (the CPU build; ``pip install 'fastflow[torch]'``)."""


class TorchMissingError(FastflowError):
    """A feature needs PyTorch, which is not installed."""


def torch_available() -> bool:
    """Whether PyTorch can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ValueError, ImportError):  # e.g. sys.modules["torch"] = None, which blocks the import
        return False


def require_torch(feature: str = "this feature") -> ModuleType:
    """Import and return :mod:`torch`, or raise :class:`TorchMissingError` saying what to install.

    Parameters
    ----------
    feature : str, optional
        What needs torch, for the message (e.g. ``"the 'learned' reconstruction"``).

    Returns
    -------
    module
        The ``torch`` module.

    Raises
    ------
    TorchMissingError
        If torch cannot be imported.
    """
    try:
        import torch
    except ImportError:
        raise TorchMissingError(
            f"{feature} needs PyTorch, which is not installed: pip install 'fastflow[torch]' (that is "
            f"{TORCH_REQUIREMENT}, the CPU build); idw and biharmonic work without it"
        ) from None
    return torch


def resolve_device(device: Any = "cpu") -> Any:
    """A :class:`torch.device` from ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA if present).

    Raises
    ------
    FastflowError
        If the device is unknown or CUDA is asked for but not available.
    """
    torch = require_torch("a neural network")
    text = str(device).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError):
        raise FastflowError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FastflowError(f"device {device!r} asked for, but this torch has no CUDA device; use cpu")
    if dev.type not in ("cpu", "cuda"):
        raise FastflowError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or auto")
    return dev
