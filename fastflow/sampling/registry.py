"""Samplers by name: what the command line, the flows and the scan store's attrs refer to.

Each entry maps a name to a factory ``factory(grid, *, coverage, seed, **options) -> BaseSampler`` and a
one-line description. A factory may be given as a ``"module:attribute"`` string, imported on first use, so
that heavy samplers (the learned FAST sampler loads an ERD model) cost nothing until they are asked for
and the registry never imports a module that imports it back. Adding a sampler is one entry::

    register_sampler("fast", "fastflow.sampling.slads:make_fast_sampler", "FAST / SLADS-Net adaptive sampler")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.sampling.protocol import BaseSampler
from fastflow.sampling.static import STATIC_PATTERNS, SeedLike, StaticSampler

SamplerFactory = Callable[..., BaseSampler]
"""``factory(grid, *, coverage, seed, **options) -> BaseSampler``."""

_REGISTRY: dict[str, tuple[SamplerFactory | str, str]] = {}


def register_sampler(
    name: str, factory: SamplerFactory | str, description: str, *, replace: bool = False
) -> None:
    """Make a sampler available to :func:`make_sampler` under ``name``.

    Parameters
    ----------
    name : str
        Registry name (lower case, no spaces), e.g. ``"fast"``.
    factory : callable or str
        ``factory(grid, *, coverage, seed, **options)`` returning a sampler, or the
        ``"module:attribute"`` path of one, imported when the sampler is first made.
    description : str
        One line shown by :func:`available_samplers`.
    replace : bool, optional
        Allow replacing an existing entry (otherwise that raises).

    Raises
    ------
    InputError
        If ``name`` is not a lower-case word, is already registered (and ``replace`` is false), or
        ``factory`` is neither callable nor a ``"module:attribute"`` string.
    """
    if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
        raise InputError(f"sampler names must be non-empty lower-case words; got {name!r}")
    if name in _REGISTRY and not replace:
        raise InputError(f"a sampler named {name!r} is already registered; pass replace=True to replace it")
    if not callable(factory) and not (isinstance(factory, str) and factory.count(":") == 1):
        raise InputError(f"sampler factory must be callable or a 'module:attribute' string; got {factory!r}")
    _REGISTRY[name] = (factory, str(description))


def available_samplers() -> dict[str, str]:
    """Registered sampler names and their one-line descriptions.

    Examples
    --------
    >>> "raster" in available_samplers()
    True
    """
    return {name: description for name, (_, description) in _REGISTRY.items()}


def _resolve(factory: SamplerFactory | str) -> SamplerFactory:
    """The factory itself, importing it first when given as ``"module:attribute"``."""
    if callable(factory):
        return factory
    module, attribute = factory.split(":")
    return getattr(importlib.import_module(module), attribute)


def make_sampler(
    name: str, grid: ScanGrid, *, coverage: float, seed: SeedLike = None, **options: Any
) -> BaseSampler:
    """Build the sampler registered as ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`available_samplers` (case-insensitive).
    grid : ScanGrid
        The scan grid.
    coverage : float
        Fraction of the grid's pixels to measure, in ``(0, 1]``.
    seed : int, numpy.random.Generator or None, optional
        Seed of every random choice the sampler makes.
    **options
        Sampler-specific options (the static patterns take none).

    Returns
    -------
    BaseSampler
        A sampler speaking the ask/tell protocol.

    Raises
    ------
    InputError
        If ``name`` is unknown (the message lists the available names) or the sampler rejects its arguments.

    Examples
    --------
    >>> make_sampler("sobol", ScanGrid((32, 32)), coverage=0.1, seed=1).params()["n_points"]
    102
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise InputError(f"unknown sampler {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    factory, _ = _REGISTRY[key]
    return _resolve(factory)(grid, coverage=coverage, seed=seed, **options)


def _make_static(
    pattern: str, grid: ScanGrid, *, coverage: float, seed: SeedLike = None, **options: Any
) -> StaticSampler:
    """Factory of the static patterns, which take no options."""
    if options:
        raise InputError(f"sampler {pattern!r} takes no options; got {', '.join(sorted(options))}")
    return StaticSampler(grid, pattern, coverage=coverage, seed=seed)


for _name, (_, _description, _) in STATIC_PATTERNS.items():
    register_sampler(_name, partial(_make_static, _name), _description)

register_sampler(
    "fast",
    "fastflow.sampling.slads:make_fast_sampler",
    "FAST / SLADS-Net adaptive sampler: measures where the expected reduction in distortion is largest",
)
