"""Reconstructions: a full image from the pixels measured so far, behind one signature.

Every method is a function ``method(grid, indices, values, **options) -> image`` registered in
:data:`RECONSTRUCTORS`; :func:`reconstruct` picks one by name. All of them

- take ``(n, 2)`` integer grid indices ``(iy, ix)`` and ``(n,)`` values of one channel,
- average pixels measured more than once,
- return a float64 image of ``grid.shape`` in which measured pixels hold their measured values exactly
  (``learned`` by default; it can return its denoised estimate there instead).

:func:`reconstruct_with_uncertainty` also returns the per-pixel standard deviation of methods that
estimate one (``learned``).

Examples
--------
>>> from fastflow.grid import ScanGrid
>>> grid = ScanGrid((3, 4))
>>> image = reconstruct(grid, [[0, 0], [2, 3]], [1.0, 1.0], method="idw")
>>> image.shape, float(image.min()), float(image.max())
((3, 4), 1.0, 1.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.recon.base import Measurements, prepare_measurements
from fastflow.recon.idw import build_tree, idw, idw_at, idw_chunked
from fastflow.recon.inpaint import biharmonic
from fastflow.recon.delaunay import cubic, linear
from fastflow.recon.learned import learned, learned_with_uncertainty

Reconstructor = Callable[..., np.ndarray]

RECONSTRUCTORS: dict[str, Reconstructor] = {
    "idw": idw,
    "linear": linear,
    "cubic": cubic,
    "biharmonic": biharmonic,
    "learned": learned,
}
"""Reconstruction methods by name; each is called as ``method(grid, indices, values, **options)``.
``learned`` needs PyTorch (the ``[torch]`` extra) and says so when it is missing."""

WITH_UNCERTAINTY: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "learned": learned_with_uncertainty,
}
"""Methods that also estimate the standard deviation of their error at each pixel."""

_POSITIONAL = ("grid", "indices", "values")


def _summary(func: Reconstructor) -> str:
    doc = inspect.getdoc(func) or ""
    return doc.splitlines()[0] if doc else func.__name__


def available_methods() -> dict[str, str]:
    """Names of the reconstruction methods, each with a one-line description.

    Examples
    --------
    >>> sorted(available_methods())
    ['biharmonic', 'cubic', 'idw', 'learned', 'linear']
    """
    return {name: _summary(func) for name, func in RECONSTRUCTORS.items()}


def check_methods(methods: Any, what: str = "reconstruction") -> list[str]:
    """Check that each named method exists and can run here; returns the names as a list.

    Raises
    ------
    InputError
        If a name is unknown.
    TorchMissingError
        If ``learned`` is asked for and PyTorch is not installed.
    """
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in RECONSTRUCTORS]
    if unknown or not names:
        raise InputError(f"unknown {what} method(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"available: {', '.join(RECONSTRUCTORS)}")
    if "learned" in names:
        from fastflow.nn import require_torch

        require_torch("the 'learned' reconstruction")
    return names


def _options_of(func: Reconstructor) -> list[str]:
    params = inspect.signature(func).parameters
    return [name for name in params if name not in _POSITIONAL]


def reconstruct(
    grid: ScanGrid, indices: Any, values: Any, method: str = "idw", **options: Any
) -> np.ndarray:
    """Reconstruct a full image from measured grid pixels.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    indices : array_like
        ``(n, 2)`` integer grid indices ``(iy, ix)`` of the measurements; repeated pixels are averaged.
    values : array_like
        ``(n,)`` measured values of one channel (an ``(n, 1)`` array is accepted too).
    method : str, optional
        A name from :func:`available_methods`.
    **options
        Passed to the method, e.g. ``k`` and ``power`` for ``"idw"``.

    Returns
    -------
    numpy.ndarray
        float64 image of ``grid.shape``; measured pixels keep their measured values exactly.

    Raises
    ------
    InputError
        If the method or an option is unknown, or the measurements are invalid (indices not ``(n, 2)`` or
        outside the grid, values not finite, several channels, counts that differ, no measurement).
    """
    func = _method(method, options)
    return func(grid, indices, values, **options)


def _method(method: Any, options: dict[str, Any]) -> Reconstructor:
    """The method of that name, after checking its options."""
    func = RECONSTRUCTORS.get(method) if isinstance(method, str) else None
    if func is None:
        names = ", ".join(sorted(RECONSTRUCTORS))
        raise InputError(f"unknown reconstruction method {method!r}; available: {names}")
    accepted = _options_of(func)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"reconstruction method {method!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    return func


def reconstruct_with_uncertainty(
    grid: ScanGrid, indices: Any, values: Any, method: str = "learned", **options: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`reconstruct`, plus the per-pixel standard deviation where the method estimates one.

    Returns
    -------
    image : numpy.ndarray
        As :func:`reconstruct` returns it.
    sigma : numpy.ndarray or None
        float64 ``grid.shape``, the standard deviation of the error in the values' units (0 at measured
        pixels), for methods in :data:`WITH_UNCERTAINTY`; None for the others.
    """
    func = _method(method, options)
    if method in WITH_UNCERTAINTY:
        return WITH_UNCERTAINTY[method](grid, indices, values, **options)
    return func(grid, indices, values, **options), None


__all__ = [
    "RECONSTRUCTORS",
    "Measurements",
    "available_methods",
    "biharmonic",
    "build_tree",
    "check_methods",
    "cubic",
    "idw",
    "idw_at",
    "idw_chunked",
    "learned",
    "learned_with_uncertainty",
    "linear",
    "prepare_measurements",
    "reconstruct",
    "reconstruct_with_uncertainty",
]
