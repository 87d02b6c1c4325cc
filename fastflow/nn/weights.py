"""A network's weights in a fastflow model file, and back.

The weights go into a fastflow model file (:mod:`fastflow.modelfile`: safetensors, no pickle) under
``net.<parameter name>``; the network configuration (:func:`fastflow.nn.blocks.build`) goes into the card
under ``architecture``. Further arrays a model needs (e.g. a calibration) sit beside them under their own
names. Reading uses the one validating reader of every fastflow model, then checks that the arrays are
exactly the network's parameters, with their shapes.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.modelfile import ModelError, ModelFile, read_model_file, write_model_file
from fastflow.nn import require_torch
from fastflow.nn.blocks import build

torch = require_torch("fastflow.nn")

__all__ = ["NET_PREFIX", "load_network", "network_arrays", "save_network"]

NET_PREFIX = "net."


def network_arrays(module: Any) -> dict[str, np.ndarray]:
    """The module's state as float32 numpy arrays named ``net.<name>`` (copies, on the CPU)."""
    return {
        NET_PREFIX + name: tensor.detach().to("cpu", torch.float32).numpy().copy()
        for name, tensor in module.state_dict().items()
    }


def save_network(
    path: str | os.PathLike[str],
    module: Any,
    *,
    kind: str,
    version: int,
    card: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, Any] | None = None,
) -> Path:
    """Write a network built by :func:`fastflow.nn.blocks.build` as a fastflow model file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``.safetensors``).
    module : torch.nn.Module
        The network; it must have the ``config`` it was built from.
    kind, version : str, int
        The model kind and its format version (see :func:`fastflow.modelfile.write_model_file`).
    card : mapping, optional
        Model card; ``architecture`` is set from ``module.config``.
    extra_arrays : mapping, optional
        Further numeric arrays, under names that do not start with ``net.``.

    Returns
    -------
    pathlib.Path
    """
    config = getattr(module, "config", None)
    if not isinstance(config, dict):
        raise ModelError("only networks built by fastflow.nn.blocks.build can be saved (no config found)")
    arrays = network_arrays(module)
    for name in extra_arrays or {}:
        if name.startswith(NET_PREFIX):
            raise ModelError(f"extra array names may not start with {NET_PREFIX!r}; got {name!r}")
    arrays.update(extra_arrays or {})
    full_card = {**dict(card or {}), "architecture": config}
    return write_model_file(path, arrays, kind=kind, version=version, card=full_card)


def load_network(
    path: str | os.PathLike[str], *, kind: str, versions: Collection[int], what: str
) -> tuple[Any, ModelFile]:
    """Read a model file written by :func:`save_network`: the network (in eval mode) and the file.

    Raises
    ------
    ModelError
        If the file is invalid (see :func:`fastflow.modelfile.read_model_file`), its architecture is
        unknown, or its arrays are not exactly that network's parameters.
    """
    name = os.fspath(path)
    model_file = read_model_file(name, kind=kind, versions=versions, what=what)
    config = model_file.card.get("architecture")
    try:
        module = build(config)
    except InputError as exc:
        raise ModelError(f"{name} is not a valid {what}: {exc}") from None
    expected = module.state_dict()
    stored = {k[len(NET_PREFIX):]: v for k, v in model_file.arrays.items() if k.startswith(NET_PREFIX)}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise ModelError(f"{name} is not a valid {what}: its weights do not fit its architecture ({detail})")
    state = {}
    for key, tensor in expected.items():
        array = stored[key]
        if tuple(array.shape) != tuple(tensor.shape):
            raise ModelError(
                f"{name} is not a valid {what}: weight {key!r} has shape {tuple(array.shape)}, "
                f"the architecture needs {tuple(tensor.shape)}"
            )
        if array.dtype.kind != "f":
            raise ModelError(f"{name} is not a valid {what}: weight {key!r} is not floating point")
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    module.load_state_dict(state)
    module.eval()
    return module, model_file
