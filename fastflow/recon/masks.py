"""Measurement masks of every scan family, for training and scoring learned reconstructions.

A mask is the boolean image of the pixels a scan measured. :func:`scan_mask` draws one for a family and a
coverage: the static patterns of :mod:`fastflow.sampling.static` (raster, uniform random, Halton, Sobol',
spiral, Lissajous, line skipping), a jittered grid (one random pixel per cell, as in partial STEM's
jittered-grid scans), an edge-weighted random mask that mimics what adaptive samplers measure (dense on
edges and bright detail, sparse on flat areas, drawn from the image itself), and FAST (the real adaptive
sampler run on the image, with large batches). Every mask has exactly ``max(1, round(coverage * size))``
pixels, so families compare at equal cost.

Examples
--------
>>> import numpy as np
>>> mask = scan_mask("spiral", (40, 60), 0.1, seed=0)
>>> mask.dtype, int(mask.sum())
(dtype('bool'), 240)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from fastflow.errors import InputError
from fastflow.sampling import static
from fastflow.sampling.protocol import check_coverage

__all__ = ["MASK_FAMILIES", "indices_of", "scan_mask"]


def _count(shape: tuple[int, int], coverage: float) -> int:
    return max(1, int(round(check_coverage(coverage) * shape[0] * shape[1])))


def _from_indices(shape: tuple[int, int], indices: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[indices[:, 0], indices[:, 1]] = True
    return mask


def _jittered(shape: tuple[int, int], n: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly drawn pixel in each cell of a raster of about ``n`` cells, trimmed or topped up at
    random to exactly ``n`` pixels."""
    ny, nx = shape
    step = np.sqrt(ny * nx / n)
    rows = max(1, int(round(ny / step)))
    cols = max(1, int(round(nx / step)))
    y_edges = np.linspace(0, ny, rows + 1)
    x_edges = np.linspace(0, nx, cols + 1)
    cy = y_edges[:-1, None] + rng.random((rows, cols)) * np.diff(y_edges)[:, None]
    cx = x_edges[None, :-1] + rng.random((rows, cols)) * np.diff(x_edges)[None, :]
    flat = np.unique(np.minimum(cy.astype(int), ny - 1) * nx + np.minimum(cx.astype(int), nx - 1))
    return _exactly(flat, n, ny * nx, rng)


def _exactly(flat: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n`` distinct flat pixels: drop at random, or add uniformly drawn free pixels."""
    if len(flat) > n:
        flat = rng.choice(flat, n, replace=False)
    elif len(flat) < n:
        free = np.setdiff1d(np.arange(size), flat, assume_unique=True)
        flat = np.concatenate([flat, rng.choice(free, n - len(flat), replace=False)])
    return flat


def _edge_weighted(shape: tuple[int, int], n: int, rng: np.random.Generator, image: np.ndarray | None) -> np.ndarray:
    """Pixels drawn with probability rising with the image's local gradient (plus a uniform share), as
    adaptive samplers measure: a stand-in for FAST masks that costs nothing to draw."""
    if image is None:
        raise InputError("the 'edges' mask family needs the image (image=...)")
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), rng.uniform(0.7, 2.0))
    gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    gradient = ndimage.gaussian_filter(gradient, rng.uniform(1.0, 4.0))
    gradient /= max(float(gradient.mean()), 1e-12)
    uniform_share = rng.uniform(0.1, 0.5)
    weights = (uniform_share + gradient ** rng.uniform(0.7, 1.5)).ravel()
    # Efraimidis-Spirakis: the n largest u**(1/w) are a weighted sample without replacement
    keys = np.log(rng.random(weights.size)) / weights
    return np.argpartition(keys, -n)[-n:]


def _fast(shape: tuple[int, int], n: int, rng: np.random.Generator, image: np.ndarray | None) -> np.ndarray:
    """The first ``n`` pixels a FAST scan of ``image`` measures (batches of 0.4 % of the image)."""
    if image is None:
        raise InputError("the 'fast' mask family needs the image (image=...)")
    from fastflow.grid import ScanGrid
    from fastflow.sampling.slads import FastSampler

    grid = ScanGrid(shape)
    coverage = n / grid.size
    sampler = FastSampler(grid, seed=int(rng.integers(0, 2**31)), target_coverage=min(1.0, coverage))
    truth = np.asarray(image, dtype=np.float64)
    batch = max(50, grid.size // 250)
    measured = []
    count = 0
    while count < n and not sampler.done:
        picks = sampler.ask(min(batch, n - count))
        if len(picks) == 0:
            break
        sampler.tell(picks, truth[picks[:, 0], picks[:, 1]])
        measured.append(picks[:, 0] * shape[1] + picks[:, 1])
        count += len(picks)
    return _exactly(np.concatenate(measured), n, grid.size, rng)


def _static(pattern: Callable[..., np.ndarray], seeded: bool) -> Callable[..., np.ndarray]:
    def draw(shape: tuple[int, int], n: int, rng: np.random.Generator, image: Any) -> np.ndarray:
        indices = pattern(shape, n, seed=int(rng.integers(0, 2**31))) if seeded else pattern(shape, n)
        return indices[:, 0] * shape[1] + indices[:, 1]

    return draw


MASK_FAMILIES: dict[str, Callable[..., np.ndarray]] = {
    "raster": _static(static.raster_grid_pattern, False),
    "random": _static(static.uniform_random_pattern, True),
    "halton": _static(static.halton_pattern, True),
    "sobol": _static(static.sobol_pattern, True),
    "jittered": lambda shape, n, rng, image: _jittered(shape, n, rng),
    "spiral": _static(static.spiral_pattern, False),
    "lissajous": _static(static.lissajous_pattern, False),
    "lines": _static(static.line_skip_pattern, False),
    "edges": _edge_weighted,
    "fast": _fast,
}
"""Mask families by name: ``draw(shape, n, rng, image) -> flat pixel numbers``."""


def scan_mask(
    family: str,
    shape: tuple[int, int],
    coverage: float,
    seed: int | np.random.Generator | None = 0,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """A boolean mask of the pixels a scan of ``family`` measures at ``coverage``.

    Parameters
    ----------
    family : str
        A name from :data:`MASK_FAMILIES`.
    shape : tuple of int
        ``(ny, nx)``.
    coverage : float
        Fraction of pixels measured, in (0, 1].
    seed : int or numpy.random.Generator, optional
        For the random families (random, Halton, Sobol', jittered, edges, FAST).
    image : numpy.ndarray, optional
        The sample, needed by ``edges`` and ``fast``.

    Returns
    -------
    numpy.ndarray
        bool ``shape`` with exactly ``max(1, round(coverage * size))`` True pixels.

    Raises
    ------
    InputError
        If the family is unknown, the coverage is out of range, or an image-driven family lacks its image.
    """
    if family not in MASK_FAMILIES:
        raise InputError(f"unknown mask family {family!r}; choose one of {', '.join(MASK_FAMILIES)}")
    shape = (int(shape[0]), int(shape[1]))
    if image is not None and np.shape(image) != shape:
        raise InputError(f"image shape {np.shape(image)} does not match the mask shape {shape}")
    n = _count(shape, coverage)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    flat = np.asarray(MASK_FAMILIES[family](shape, n, rng, image), dtype=np.int64)
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[flat] = True
    if int(mask.sum()) != n:  # a pattern with repeated pixels: top up at random
        flat = _exactly(np.flatnonzero(mask), n, mask.size, rng)
        mask[:] = False
        mask[flat] = True
    return mask.reshape(shape)


def indices_of(mask: np.ndarray) -> np.ndarray:
    """The ``(n, 2)`` grid indices ``(iy, ix)`` of a mask's True pixels, row-major."""
    return np.argwhere(np.asarray(mask, dtype=bool))
