"""Static scan patterns: where to measure when the plan does not depend on the measurements.

Every pattern function has the signature ``pattern(shape, n, ...) -> indices`` and returns an ``(n, 2)``
int64 array of **exactly** ``n`` distinct grid indices ``(iy, ix)`` in acquisition order:

- :func:`raster_grid_pattern`: a regular sub-grid visited in serpentine order;
- :func:`uniform_random_pattern`: uniformly random pixels; every prefix is a uniform sample;
- :func:`halton_pattern`, :func:`sobol_pattern`: scrambled low-discrepancy sequences (``scipy.stats.qmc``);
  every prefix is spread over the field;
- :func:`spiral_pattern`: an Archimedean spiral from the centre outward, points at constant arc length;
- :func:`lissajous_pattern`: a Lissajous fly scan sampled at a constant detector rate;
- :func:`line_skip_pattern`: every k-th row, for fly scans along ``x``.

:class:`StaticSampler` wraps any of them in the ask/tell protocol of :mod:`fastflow.sampling.protocol`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy.stats import qmc

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.sampling.protocol import BaseSampler, check_coverage

SeedLike = int | np.integer | np.random.Generator | None
"""Anything :func:`numpy.random.default_rng` turns into a reproducible generator."""

_CHUNK = 1 << 20
"""Points generated per block by the curve and low-discrepancy patterns (bounds peak memory)."""


# -- small helpers -----------------------------------------------------------------------------------


def _check_shape_n(shape: tuple[int, int], n: int) -> tuple[int, int, int]:
    """Validate ``shape`` and ``n``; return ``(ny, nx, n)`` as Python ints."""
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be two positive integers (ny, nx); got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise InputError(f"shape must be two positive integers (ny, nx); got {shape!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InputError(f"number of points must be an integer; got {n!r}")
    if not 1 <= n <= ny * nx:
        raise InputError(f"number of points must be between 1 and {ny * nx} for a {ny}x{nx} grid; got {n}")
    return ny, nx, int(n)


def _rng(seed: SeedLike) -> np.random.Generator:
    """A generator from ``seed``, raising :class:`InputError` for values numpy does not accept."""
    if isinstance(seed, bool):
        raise InputError(f"seed must be an integer, a numpy Generator or None; got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"seed must be a non-negative integer, a numpy Generator or None; got {seed!r}"
        ) from err


def _to_indices(flat: np.ndarray, nx: int) -> np.ndarray:
    """``(n, 2)`` int64 ``(iy, ix)`` indices of flat row-major pixel numbers."""
    return np.stack(np.divmod(np.asarray(flat, dtype=np.int64), nx), axis=1)


def _centred(i: np.ndarray, count: np.ndarray | int, length: int) -> np.ndarray:
    """Position of item ``i`` of ``count`` evenly spaced, centred items on ``length`` pixels.

    Computes ``floor((i + 0.5) * length / count)`` in exact integer arithmetic; distinct for
    ``count <= length``.
    """
    return (2 * np.asarray(i, dtype=np.int64) + 1) * length // (2 * np.asarray(count, dtype=np.int64))


def _serpentine(shape: tuple[int, int], counts: np.ndarray) -> np.ndarray:
    """Flat pixels of ``len(counts)`` centred rows of ``counts[i]`` centred columns, in serpentine order.

    Even rows run left to right, odd rows right to left.
    """
    ny, nx = shape
    counts = np.asarray(counts, dtype=np.int64)
    rows = np.repeat(np.arange(len(counts)), counts)
    per_row = counts[rows]
    j = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    j = np.where(rows % 2 == 1, per_row - 1 - j, j)
    return _centred(rows, len(counts), ny) * nx + _centred(j, per_row, nx)


def _first_occurrences(flat: np.ndarray) -> np.ndarray:
    """``flat`` without repeats, keeping each value's first occurrence, in the original order."""
    _, first = np.unique(flat, return_index=True)
    return flat[np.sort(first)]


class _DistinctPixels:
    """Accumulates pixels from successive blocks, keeping the first visit of each pixel, in order."""

    def __init__(self, size: int) -> None:
        self.seen = np.zeros(size, dtype=bool)
        self.blocks: list[np.ndarray] = []
        self.count = 0

    def add(self, flat: np.ndarray, limit: int | None = None) -> int:
        """Append the new pixels of ``flat`` (at most ``limit`` of them); return how many were new."""
        new = _first_occurrences(flat[~self.seen[flat]])
        if limit is not None:
            new = new[:limit]
        self.seen[new] = True
        self.blocks.append(new)
        self.count += len(new)
        return len(new)

    def result(self) -> np.ndarray:
        """All accumulated pixels in order of first visit."""
        return np.concatenate(self.blocks) if self.blocks else np.empty(0, dtype=np.int64)


def _evenly_kept(m: int, n: int) -> np.ndarray:
    """Positions of ``n`` of ``m >= n`` items kept when thinning evenly (the dropped ones are spread out)."""
    return _centred(np.arange(n), n, m)


# -- grid patterns -----------------------------------------------------------------------------------


def raster_grid_pattern(shape: tuple[int, int], n: int) -> np.ndarray:
    """A regular sub-grid of ``n`` pixels visited in serpentine order.

    The number of rows is ``round(sqrt(n * ny / nx))`` (so the spacing is about the same along ``y`` and
    ``x``), clipped so that every row fits. Rows are centred in the field (row ``i`` of ``r`` at
    ``floor((i + 0.5) * ny / r)``), the ``n`` points are shared over the rows as evenly as possible (counts
    differ by at most one), and columns are spaced and centred the same way.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)``; even rows run left to right, odd rows right to left.

    Raises
    ------
    InputError
        If ``shape`` or ``n`` is invalid.

    Examples
    --------
    >>> raster_grid_pattern((4, 4), 4).tolist()
    [[1, 1], [1, 3], [3, 3], [3, 1]]
    """
    ny, nx, n = _check_shape_n(shape, n)
    rows = int(np.clip(round(math.sqrt(n * ny / nx)), -(-n // nx), ny))
    counts = np.diff(np.arange(rows + 1) * n // rows)
    return _to_indices(_serpentine((ny, nx), counts), nx)


def line_skip_pattern(shape: tuple[int, int], n: int) -> np.ndarray:
    """Every k-th full row, in serpentine order, for fly scans along ``x``.

    ``r = ceil(n / nx)`` rows are spread evenly and centred (row ``i`` at ``floor((i + 0.5) * ny / r)``);
    the last row is cut short so that exactly ``n`` pixels are returned.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)``; even rows run left to right, odd rows right to left.

    Raises
    ------
    InputError
        If ``shape`` or ``n`` is invalid.

    Examples
    --------
    >>> line_skip_pattern((4, 3), 5).tolist()
    [[1, 0], [1, 1], [1, 2], [3, 2], [3, 1]]
    """
    ny, nx, n = _check_shape_n(shape, n)
    rows = -(-n // nx)
    return _to_indices(_serpentine((ny, nx), np.full(rows, nx))[:n], nx)


# -- random and low-discrepancy patterns -------------------------------------------------------------


def uniform_random_pattern(shape: tuple[int, int], n: int, seed: SeedLike = None) -> np.ndarray:
    """``n`` distinct pixels drawn uniformly at random, in the order drawn.

    Every prefix of the sequence is itself a uniform random sample, so a scan can stop at any point.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.
    seed : int, numpy.random.Generator or None, optional
        Source of randomness (see :func:`numpy.random.default_rng`).

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)``.

    Raises
    ------
    InputError
        If ``shape``, ``n`` or ``seed`` is invalid.
    """
    ny, nx, n = _check_shape_n(shape, n)
    return _to_indices(_rng(seed).choice(ny * nx, n, replace=False), nx)


def _qmc_pattern(
    engine: qmc.QMCEngine, shape: tuple[int, int], n: int, rng: np.random.Generator
) -> np.ndarray:
    """Pixels of successive points of a 2-d QMC ``engine``, first visits only, until ``n`` are distinct.

    Points are drawn in power-of-two blocks (the first block sets Sobol's balance). Near full coverage
    the sequence mostly revisits pixels: once fewer than 1 in 16 draws finds a new pixel, or after
    ``8 * ny * nx`` draws, the rest is filled with the unvisited pixels in random order.
    """
    ny, nx = shape
    size = ny * nx
    pixels = _DistinctPixels(size)
    drawn, block = 0, 1 << max(6, (n - 1).bit_length())
    while pixels.count < n and drawn < 8 * size:
        u = engine.random(block)
        drawn += block
        iy = np.minimum((u[:, 0] * ny).astype(np.int64), ny - 1)
        ix = np.minimum((u[:, 1] * nx).astype(np.int64), nx - 1)
        accepted = pixels.add(iy * nx + ix, limit=n - pixels.count) / block
        if accepted < 1 / 16:
            break
        wanted = 1.1 * (n - pixels.count) / accepted
        block = 1 << int(np.clip(math.ceil(math.log2(max(wanted, 1.0))), 12, 21))
    if pixels.count < n:
        pixels.add(rng.permutation(np.flatnonzero(~pixels.seen)), limit=n - pixels.count)
    return _to_indices(pixels.result(), nx)


def halton_pattern(shape: tuple[int, int], n: int, seed: SeedLike = None) -> np.ndarray:
    """``n`` distinct pixels from a scrambled Halton sequence, in sequence order.

    Point ``u`` in ``[0, 1)^2`` goes to pixel ``(floor(u0 * ny), floor(u1 * nx))``; pixels already visited
    are skipped. Every prefix is spread evenly over the field. At very high coverage the pixels the
    sequence misses after ``8 * ny * nx`` draws are appended in random order.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.
    seed : int, numpy.random.Generator or None, optional
        Scrambling seed (see :func:`numpy.random.default_rng`).

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)``.

    Raises
    ------
    InputError
        If ``shape``, ``n`` or ``seed`` is invalid.
    """
    ny, nx, n = _check_shape_n(shape, n)
    rng = _rng(seed)
    return _qmc_pattern(qmc.Halton(d=2, scramble=True, rng=rng), (ny, nx), n, rng)


def sobol_pattern(shape: tuple[int, int], n: int, seed: SeedLike = None) -> np.ndarray:
    """``n`` distinct pixels from a scrambled Sobol' sequence, in sequence order.

    As :func:`halton_pattern`, with :class:`scipy.stats.qmc.Sobol` drawn in power-of-two blocks. On a grid
    whose sides are powers of two the first ``ny * nx`` points visit every pixel exactly once.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.
    seed : int, numpy.random.Generator or None, optional
        Scrambling seed (see :func:`numpy.random.default_rng`).

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)``.

    Raises
    ------
    InputError
        If ``shape``, ``n`` or ``seed`` is invalid.
    """
    ny, nx, n = _check_shape_n(shape, n)
    rng = _rng(seed)
    return _qmc_pattern(qmc.Sobol(d=2, scramble=True, rng=rng), (ny, nx), n, rng)


# -- continuous curves: spiral and Lissajous -----------------------------------------------------------

CurvePixels = Callable[[float], Iterator[np.ndarray]]
"""``pixels(spacing)`` yields the flat in-grid pixels of a curve drawn at ``spacing``, block by block."""


def _distinct_count(pixels: Iterator[np.ndarray], size: int) -> int:
    """Number of distinct pixels among the yielded blocks."""
    seen = np.zeros(size, dtype=bool)
    for flat in pixels:
        seen[flat] = True
    return int(np.count_nonzero(seen))


def _distinct_in_order(pixels: Iterator[np.ndarray], size: int) -> _DistinctPixels:
    """The yielded pixels, first visits only, in order."""
    acc = _DistinctPixels(size)
    for flat in pixels:
        acc.add(flat)
    return acc


def _fit_spacing(
    count: Callable[[float], int], n: int, guess: float, bounds: tuple[float, float], rtol: float = 0.005
) -> float | None:
    """A spacing whose curve visits at least ``n`` distinct pixels (if possible at most ``n * (1 + rtol)``).

    A bisection on ``log(spacing)`` keeps a bracket ``lo`` (count >= n) / ``hi`` (count < n); trial points
    are interpolated in log-log space (the count scales about as ``spacing**-2``) and fall back to the
    midpoint every third step, so a non-monotone count still converges. Returns ``None`` when even
    ``bounds[0]`` visits fewer than ``n`` pixels.
    """
    s_min, s_max = bounds
    target = n * (1 + rtol / 2)
    lo = hi = None  # (spacing, count)
    s = float(np.clip(guess, s_min, s_max))
    for step in range(60):
        m = count(s)
        if m >= n and (lo is None or s > lo[0]):
            lo = (s, m)
        elif m < n and (hi is None or s < hi[0]):
            hi = (s, m)
        if lo is not None and (lo[1] <= n * (1 + rtol) or lo[0] >= s_max):
            break
        if hi is not None and hi[0] <= s_min:
            break
        if lo is not None and hi is not None:
            if hi[0] / lo[0] < 1 + 1e-3:
                break
            s = _next_trial(lo, hi, target, bisect=step % 3 == 2)
        else:
            s0, m0 = lo if lo is not None else hi
            s = float(np.clip(s0 * math.sqrt(max(m0, 1) / target) * (1.2 if lo else 1 / 1.2), s_min, s_max))
    return None if lo is None else lo[0]


def _next_trial(lo: tuple[float, int], hi: tuple[float, int], target: float, bisect: bool) -> float:
    """Next spacing in the bracket ``(lo, hi)``: log-log interpolation towards ``target``, or the middle."""
    a, b = math.log(lo[0]), math.log(hi[0])
    frac = 0.5
    if not bisect and hi[1] > 0 and lo[1] > hi[1]:
        frac = (math.log(lo[1]) - math.log(target)) / (math.log(lo[1]) - math.log(hi[1]))
        frac = min(max(frac, 0.05), 0.95)
    return math.exp(a + frac * (b - a))


def _curve_pattern(
    shape: tuple[int, int], n: int, pixels: CurvePixels, guess: float, bounds: tuple[float, float]
) -> np.ndarray:
    """Exactly ``n`` pixels of a curve, in curve order: fit the spacing, then thin evenly or fill up.

    The spacing is fitted so that the curve visits ``m >= n`` (and close to ``n``) distinct pixels, and
    ``m - n`` of them, evenly spread along the curve, are dropped. If the densest allowed curve
    (``bounds[0]``) still visits fewer than ``n`` pixels, the unvisited ones are appended in serpentine order.
    """
    ny, nx = shape
    size = ny * nx
    spacing = _fit_spacing(lambda s: _distinct_count(pixels(s), size), n, guess, bounds)
    if spacing is None:
        acc = _distinct_in_order(pixels(bounds[0]), size)
        acc.add(_serpentine(shape, np.full(ny, nx)), limit=n - acc.count)
        return _to_indices(acc.result(), nx)
    flat = _distinct_in_order(pixels(spacing), size).result()
    return _to_indices(flat[_evenly_kept(len(flat), n)], nx)


def _in_grid_pixels(y: np.ndarray, x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat pixels nearest to points ``(y, x)``, dropping those outside the grid, in order."""
    ny, nx = shape
    iy, ix = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
    inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    return iy[inside] * nx + ix[inside]


def _spiral_arc(theta: np.ndarray) -> np.ndarray:
    """Arc length of the spiral ``r = theta`` from its centre to angle ``theta``."""
    return 0.5 * (theta * np.sqrt(1 + theta**2) + np.arcsinh(theta))


def _spiral_angle(arc: np.ndarray) -> np.ndarray:
    """Angle at which the spiral ``r = theta`` reaches arc length ``arc`` (inverse of :func:`_spiral_arc`).

    Newton's method from the large-angle expansion ``arc ~ (theta**2 + 1/2 + log(2 theta)) / 2``; the arc
    length is increasing and convex, so the iteration converges from any non-negative start.
    """
    square = np.maximum(2 * arc - 0.5, 1.0)
    theta = np.sqrt(np.maximum(square - np.log(2 * np.sqrt(square)), 0.0))
    for _ in range(50):
        step = (_spiral_arc(theta) - arc) / np.sqrt(1 + theta**2)
        theta = np.maximum(theta - step, 0.0)
        if np.all(np.abs(step) <= 1e-12 * np.maximum(theta, 1.0)):
            break
    return theta


class _UnitSpiral:
    """The spiral with arm spacing 1 sampled at unit arc-length steps, centre outward, computed once.

    Any other spacing ``s`` is this spiral scaled by ``s``, so the fit of the spacing reuses these points.
    """

    def __init__(self) -> None:
        self.y = self.x = np.empty(0)

    def points(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets ``(y, x)`` from the centre of the first ``count`` points."""
        if count > len(self.y):
            start, stop = len(self.y), max(count, int(1.25 * len(self.y)))
            # in units of b = 1 / (2 pi), consecutive points are 2 pi apart along the arc
            theta = _spiral_angle(2 * np.pi * np.arange(start, stop, dtype=float))
            r = theta / (2 * np.pi)
            self.y = np.concatenate([self.y, r * np.sin(theta)])
            self.x = np.concatenate([self.x, r * np.cos(theta)])
        return self.y[:count], self.x[:count]


def _spiral_pixels(shape: tuple[int, int], spacing: float, unit: _UnitSpiral) -> Iterator[np.ndarray]:
    """In-grid pixels of the Archimedean spiral with arm and point spacing ``spacing``, centre outward."""
    ny, nx = shape
    theta_end = 2 * np.pi * (math.hypot(ny, nx) / 2 + 1) / spacing  # angle where r passes the corners
    dy, dx = unit.points(int(_spiral_arc(np.array(theta_end)) / (2 * np.pi)) + 1)
    for start in range(0, len(dy), _CHUNK):
        block = slice(start, start + _CHUNK)
        yield _in_grid_pixels((ny - 1) / 2 + spacing * dy[block], (nx - 1) / 2 + spacing * dx[block], shape)


def spiral_pattern(shape: tuple[int, int], n: int) -> np.ndarray:
    """``n`` pixels along an Archimedean spiral from the centre of the field outward.

    The spiral ``r = b * theta`` is sampled at constant arc length ``s`` equal to the distance between its
    arms (``2 * pi * b = s``), so the point density is uniform, ``1 / s**2``, and ``s`` is about
    ``1 / sqrt(coverage)`` pixels. ``s`` is fitted so that the spiral visits at least ``n`` distinct pixels
    (points are rounded to the nearest pixel; repeats and points outside the grid are dropped) and the
    excess is thinned evenly along the spiral. Near full coverage, pixels the densest spiral
    (``s = 0.5``) misses are appended in serpentine order.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)`` in order along the spiral.

    Raises
    ------
    InputError
        If ``shape`` or ``n`` is invalid.
    """
    ny, nx, n = _check_shape_n(shape, n)
    guess = math.sqrt(ny * nx / n)
    bounds = (0.5, 2.0 * max(ny, nx))
    unit = _UnitSpiral()
    return _curve_pattern((ny, nx), n, lambda s: _spiral_pixels((ny, nx), s, unit), guess, bounds)


def _coprime_near(f: int, target: int) -> int:
    """The integer ``>= 1`` nearest to ``target`` that is coprime with ``f``."""
    for delta in range(target + f + 1):
        for g in (target + delta, target - delta):
            if g >= 1 and math.gcd(f, g) == 1:
                return g
    return 1


def _lissajous_params(shape: tuple[int, int], spacing: float) -> tuple[int, int, float, int]:
    """Frequencies ``(fy, fx)``, phase and sample count of a Lissajous scan with line spacing ``spacing``.

    ``x`` oscillates ``fx`` times per period, so a vertical cut meets the curve ``2 fx`` times and the lines
    are ``ny / (2 fx)`` apart along ``y`` (likewise ``nx / (2 fy)`` along ``x``): ``fx ~ ny / (2 s)``,
    ``fy ~ nx / (2 s)``. The phase is the one farthest from the degenerate (self-retracing) phases. The
    period is sampled so that consecutive samples are on average ``spacing`` apart along the curve.
    """
    ny, nx = shape
    fx = max(1, round(ny / (2 * spacing)))
    fy = _coprime_near(fx, max(1, round(nx / (2 * spacing))))
    phase = np.pi / 2 + np.pi * (1 - fy) / (2 * fx)
    t = np.linspace(0, 2 * np.pi, 64 * (fx + fy), endpoint=False)
    speed = np.hypot((ny - 1) / 2 * fy * np.cos(fy * t + phase), (nx - 1) / 2 * fx * np.cos(fx * t))
    length = 2 * np.pi * float(speed.mean())
    return fy, fx, phase, max(1, math.ceil(length / spacing))


def _lissajous_pixels(shape: tuple[int, int], spacing: float) -> Iterator[np.ndarray]:
    """In-grid pixels of one period of the Lissajous scan with line spacing ``spacing``, in time order."""
    ny, nx = shape
    fy, fx, phase, n_samples = _lissajous_params(shape, spacing)
    ay, ax = (ny - 1) / 2, (nx - 1) / 2
    for start in range(0, n_samples, _CHUNK):
        t = 2 * np.pi / n_samples * np.arange(start, min(start + _CHUNK, n_samples), dtype=float)
        yield _in_grid_pixels(ay + ay * np.sin(fy * t + phase), ax + ax * np.sin(fx * t), shape)


def lissajous_pattern(shape: tuple[int, int], n: int) -> np.ndarray:
    """``n`` pixels along one period of a Lissajous fly scan sampled at a constant rate.

    ``y = cy + Ay sin(fy t + phase)``, ``x = cx + Ax sin(fx t)`` with amplitudes spanning the grid, coprime
    integer frequencies with ``fy / fx ~ nx / ny`` (equal line spacing along both axes) and a
    non-degenerate phase, sampled at equal time steps. The line spacing is fitted so that the scan visits
    at least ``n`` distinct pixels and the excess is thinned evenly in time; near full coverage the pixels
    the densest scan misses are appended in serpentine order. Samples crowd near the edges, where the
    beam slows down, as in a real Lissajous scan.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    n : int
        Number of pixels, ``1 <= n <= ny * nx``.

    Returns
    -------
    ndarray of int64, shape (n, 2)
        Grid indices ``(iy, ix)`` in time order.

    Raises
    ------
    InputError
        If ``shape`` or ``n`` is invalid.
    """
    ny, nx, n = _check_shape_n(shape, n)
    # about 1.5 / spacing**2 samples per pixel, landing on pixels roughly like a Poisson process
    guess = math.sqrt(1.5 / -math.log1p(-min(n / (ny * nx), 0.99)))
    bounds = (0.5, 2.0 * max(ny, nx))
    return _curve_pattern((ny, nx), n, lambda s: _lissajous_pixels((ny, nx), s), guess, bounds)


# -- the sampler ---------------------------------------------------------------------------------------

PatternFunction = Callable[..., np.ndarray]

STATIC_PATTERNS: dict[str, tuple[PatternFunction, str, bool]] = {
    "raster": (raster_grid_pattern, "regular sub-grid, serpentine order", False),
    "random": (uniform_random_pattern, "uniform random pixels; every prefix is a uniform sample", True),
    "halton": (halton_pattern, "scrambled Halton low-discrepancy sequence", True),
    "sobol": (sobol_pattern, "scrambled Sobol' low-discrepancy sequence", True),
    "spiral": (spiral_pattern, "Archimedean spiral from the centre, constant arc-length spacing", False),
    "lissajous": (lissajous_pattern, "Lissajous fly scan sampled at a constant rate", False),
    "lines": (line_skip_pattern, "every k-th row, serpentine, for fly scans", False),
}
"""Pattern name -> ``(function, one-line description, uses_seed)``."""


_PROGRESSIVE = ("random", "halton", "sobol")


class StaticSampler(BaseSampler):
    """A sampler that visits a precomputed static pattern in order.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    pattern : str
        One of :data:`STATIC_PATTERNS`: ``"raster"``, ``"random"``, ``"halton"``, ``"sobol"``, ``"spiral"``,
        ``"lissajous"`` or ``"lines"``.
    coverage : float
        Fraction of the grid's pixels to measure, in ``(0, 1]``; the pattern has
        ``max(1, round(coverage * grid.size))`` points.
    seed : int, numpy.random.Generator or None, optional
        Seed of the randomised patterns (ignored by the others, but recorded).

    Attributes
    ----------
    sequence : ndarray of int64
        Flat (row-major) pixel numbers of the whole pattern, in acquisition order.
    n_points : int
        Length of the pattern.
    target_coverage : float
        The requested coverage (``coverage`` is the measured fraction, as for every sampler).

    Raises
    ------
    InputError
        If the pattern name, the coverage or the seed is invalid.

    Notes
    -----
    ``ask`` returns the next points of the sequence that are neither measured nor pending, so a sampler
    told the points of an interrupted scan continues where that scan stopped. The sampler is done when
    the sequence is used up.

    Examples
    --------
    >>> sampler = StaticSampler(ScanGrid((8, 8)), "raster", coverage=0.25)
    >>> sampler.ask(3).tolist()
    [[1, 1], [1, 3], [1, 5]]
    """

    def __init__(self, grid: ScanGrid, pattern: str, coverage: float, seed: SeedLike = None) -> None:
        super().__init__(grid)
        if pattern not in STATIC_PATTERNS:
            raise InputError(f"unknown static pattern {pattern!r}; available: {', '.join(STATIC_PATTERNS)}")
        self.name = pattern
        self.ordered = pattern not in _PROGRESSIVE   # progressive patterns: each batch is routed by the scan loop
        self.target_coverage = check_coverage(coverage)
        self.n_points = max(1, round(self.target_coverage * grid.size))
        self.seed = seed
        _rng(seed)  # validate and record a seed even where the pattern does not use it
        self.sequence = self._pattern(self.n_points)
        self._cursor = 0

    def _pattern(self, n: int) -> np.ndarray:
        """Flat pixel numbers of the pattern with ``n`` points."""
        function, _, uses_seed = STATIC_PATTERNS[self.name]
        indices = function(self.grid.shape, n, seed=self.seed) if uses_seed else function(self.grid.shape, n)
        return self.grid.ravel(indices)

    def _forbid(self, flat: np.ndarray) -> None:
        """Regions given before the scan starts: the pattern is rebuilt denser where needed, so that its
        points inside the allowed pixels reach the target coverage of them (a spiral or a Lissajous curve,
        denser near some edges than others, would otherwise fall short). Regions drawn mid-scan only take
        their pixels out of the sequence."""
        if self.n_told or self.n_pending:
            return
        want = max(1, round(self.target_coverage * self.n_allowed))
        n = self.n_points
        for _ in range(6):
            inside = int(self.allowed.ravel()[self.sequence].sum())
            if inside >= want or n >= self.grid.size:
                break
            n = min(self.grid.size, int(math.ceil(n * want / max(inside, 1) * 1.02)) + 1)
            self.sequence = self._pattern(n)
        self.n_points = len(self.sequence)

    def params(self) -> dict[str, Any]:
        """Name, coverage, seed (an int, or None when none or a Generator was given) and number of points."""
        seed = int(self.seed) if isinstance(self.seed, (int, np.integer)) else None
        return {"name": self.name, "coverage": self.target_coverage, "seed": seed, "n_points": self.n_points}

    def _free(self, flat: np.ndarray) -> np.ndarray:
        """Mask of the pixels of ``flat`` that are allowed and neither measured nor pending."""
        return ~self.is_taken(flat)

    def _skip_taken(self) -> None:
        """Move the cursor past sequence points that are already measured or pending."""
        while self._cursor < len(self.sequence):
            window = self.sequence[self._cursor : self._cursor + 4096]
            free = self._free(window)
            if free.any():
                self._cursor += int(np.argmax(free))
                return
            self._cursor += len(window)

    def _propose(self, n: int) -> tuple[np.ndarray, dict[str, Any]]:
        picked: list[np.ndarray] = []
        need = n
        while need and self._cursor < len(self.sequence):
            window = self.sequence[self._cursor : self._cursor + max(4 * need, 4096)]
            free = np.flatnonzero(self._free(window))[:need]
            picked.append(window[free])
            need -= len(free)
            self._cursor += int(free[-1]) + 1 if need == 0 else len(window)
        flat = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
        record = {"pattern": self.name, "cursor": self._cursor, "n_points": self.n_points}
        return self.grid.unravel(flat), record

    def _exhausted(self) -> bool:
        self._skip_taken()
        return self._cursor >= len(self.sequence)
