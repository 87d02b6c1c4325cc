"""The learned reconstruction checked against the scan's own measurements.

A network trained on generic images can be worse than plain interpolation on an image unlike its training
set: on a clean, finely textured image at high coverage it smooths texture it takes for noise, and across
the gaps of a line scan the linear guess can beat it. Nothing but the measurements tells which case a scan
is, so :func:`self_check` asks them: it hides a random tenth of the measured pixels of a window, completes
the window from the rest with the network and with the :data:`GUESSES` (the linear and cubic Delaunay
interpolations and the biharmonic one), and finds the blend of the four (non-negative weights summing to
1, by least squares) closest to the hidden values. :meth:`fastflow.recon.learned.LearnedModel.complete`
applies that blend to the whole image; weights ``(1, 0, 0, 0)`` keep the network unchanged. Noise on the
hidden values adds the same expected error to every candidate, so it does not bias the choice.

A hidden pixel is a fair test only of unmeasured pixels about as far from a measurement as it is from the
remaining ones (:data:`DISTANCE_BINS`), or nearer (a harder test): each hidden pixel is weighted by the
share of unmeasured pixels it stands for, and where the hidden pixels stand for less than half of them
(measurements in dense patches far apart: hidden pixels have a neighbour 1 px away, the unmeasured ones
lie far from any) the check abstains and the network is used alone. On a line scan (rows, columns or
diagonals: :func:`line_direction`) a hidden pixel would keep its neighbours on its line, where every
guess is good, while the unmeasured pixels lie between the lines; there whole runs of a line are hidden,
so the guesses are judged across the lines (across a gap twice as wide: a harder test). The uncertainty
stays the network's (the calibration of its sigma is not redone per image: hidden pixels are too few for
a stable quantile).

The check costs one extra network pass and one biharmonic solve over a window of 192 px (one window for
images under 16 windows' area, four spread windows above), not over the whole image; the whole image's
biharmonic interpolation is computed only when the blend gives it weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from fastflow.grid import ScanGrid
from fastflow.recon.base import Measurements, prepare_measurements
from fastflow.recon.biharmonic_cg import biharmonic_from_measurements
from fastflow.recon.learned_inputs import INPUT_CHANNELS, network_inputs

__all__ = [
    "BORDER", "CHECK_FRACTION", "CHECK_WINDOW", "GUESSES", "SelfCheck", "apply_blend", "check_windows", "edge_distance",
    "guess", "line_direction", "self_check",
]

CHECK_FRACTION = 0.1
"""Share of a window's measured pixels hidden by the check."""
CHECK_WINDOW = 192
"""Side of a check window (pixels)."""
MIN_HELD_OUT = 50
"""Fewer hidden pixels than this and the check is skipped (the network is kept as it is)."""
_MARGIN = 16
"""Hidden pixels keep this distance from a window side that lies inside the image (where context is cut)."""
DISTANCE_BINS = (1.5, 3.0, 6.0, 12.0, 24.0, 48.0)
"""Edges (pixels) of the distance classes in which hidden pixels stand for unmeasured ones."""
MIN_REPRESENTED = 0.5
"""Least share of the unmeasured pixels the hidden ones must stand for (:attr:`SelfCheck.represented`)."""
BORDER = 4
"""Pixels this close to the image's edge take the border blend (:attr:`SelfCheck.border_weights`); from
there to twice as far the blend passes linearly to the interior one."""
BORDER_GUESSES = ("biharmonic",)
"""The guesses the border blend may use besides the network."""
GUESSES = ("linear", "cubic", "biharmonic")
"""The interpolations blended with the network: two of its input channels and the biharmonic one
(:mod:`fastflow.recon.biharmonic_cg`), which on clean lattices at 10-20 % coverage is 2-3x closer to the
truth than the cubic."""


@dataclass(frozen=True)
class SelfCheck:
    """What the check found.

    Attributes
    ----------
    weights : tuple of float
        Weights of the network and of the :data:`GUESSES` in the blend (non-negative, summing to 1).
    border_weights : tuple of float
        The same within :data:`BORDER` px of the image's edge, where only the network and the
        :data:`BORDER_GUESSES` take part: near the edge the Delaunay interpolations lose their
        neighbours on one side (measured over 336 scans of six development images, seven mask families
        and four coverages, with and without noise: in the outer 4 px `linear` and `cubic` were 1.18x as
        far from the truth as the biharmonic interpolation on average, the network 1.05x, and they were
        the closest there in 7 % of the scans against 93 % for the other two), while the check's hidden
        pixels, away from the edge, may favour them.
    held_out : int
        Measured pixels hidden and predicted (0: too few could be hidden; the network is used alone).
    represented : float
        Share of the unmeasured pixels lying as far from a measurement as some hidden pixel does from the
        rest (in :data:`DISTANCE_BINS`); under :data:`MIN_REPRESENTED` the check does not speak for the
        image and the network is used alone.
    rmse : tuple of float
        RMS difference between the hidden measured values and the network and each guess (values' units;
        it includes the measurement noise).
    rmse_blend : float
        The same for the blend.
    """

    weights: tuple[float, ...] = (1.0,) + (0.0,) * len(GUESSES)
    border_weights: tuple[float, ...] = (1.0,) + (0.0,) * len(GUESSES)
    held_out: int = 0
    represented: float = 0.0
    rmse: tuple[float, ...] = ()
    rmse_blend: float = float("nan")

    @property
    def network_weight(self) -> float:
        """Weight of the network in the blend (1: the network alone)."""
        return self.weights[0]


def guess(name: str, measurements: Measurements, inputs: np.ndarray, loc: float, scale: float) -> np.ndarray:
    """One of the :data:`GUESSES` in the network's normalised units, for the measurements whose input
    channels are ``inputs`` (:func:`fastflow.recon.learned_inputs.network_inputs`, which gave ``loc`` and
    ``scale``)."""
    if name in INPUT_CHANNELS:
        return inputs[INPUT_CHANNELS.index(name)]
    if name == "biharmonic":
        m = measurements
        return biharmonic_from_measurements(m, (m.values - loc) / scale, start=inputs[INPUT_CHANNELS.index("cubic")])
    raise ValueError(f"unknown guess {name!r}; expected one of {GUESSES}")


def check_windows(shape: tuple[int, int], window: int = CHECK_WINDOW) -> list[tuple[slice, slice]]:
    """The windows a check uses: one in the centre, or four spread ones on images over 16 windows' area."""
    ny, nx = shape
    sy, sx = min(ny, window), min(nx, window)
    if ny * nx >= 16 * window * window:
        starts_y = [(ny - sy) // 4, 3 * (ny - sy) // 4]
        starts_x = [(nx - sx) // 4, 3 * (nx - sx) // 4]
    else:
        starts_y, starts_x = [(ny - sy) // 2], [(nx - sx) // 2]
    return [(slice(y0, y0 + sy), slice(x0, x0 + sx)) for y0 in starts_y for x0 in starts_x]


_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
"""Neighbour directions (dy, dx) in which a scan's measured pixels may line up."""
LINE_SHARE = 0.5
"""A scan is line-like along a direction when at least this share of its measured pixels has a measured
neighbour in that direction and at most a quarter of that share in every other direction."""


def _pairs(measured: np.ndarray, dy: int, dx: int) -> int:
    """Measured pixels whose neighbour at ``(dy, dx)`` (dy >= 0) is measured too."""
    ny, nx = measured.shape
    a = measured[: ny - dy, max(0, -dx) : nx - max(0, dx)]
    b = measured[dy:, max(0, dx) : nx - max(0, -dx)]
    return int(np.count_nonzero(a & b))


def line_direction(measured: np.ndarray) -> tuple[int, int] | None:
    """The direction ``(dy, dx)`` along which the measured pixels form lines (fly scans, skipped rows), or
    None for scattered measurements (see :data:`LINE_SHARE`)."""
    count = max(int(np.count_nonzero(measured)), 1)
    shares = np.array([_pairs(measured, dy, dx) for dy, dx in _DIRECTIONS]) / count
    best = int(np.argmax(shares))
    if shares[best] >= LINE_SHARE and np.all(np.delete(shares, best) <= shares[best] / 4):
        return _DIRECTIONS[best]
    return None


def _runs(measured: np.ndarray, direction: tuple[int, int]) -> np.ndarray:
    """Labels of the runs of measured pixels along ``direction`` (0 elsewhere)."""
    structure = np.zeros((3, 3), bool)
    dy, dx = direction
    structure[1, 1] = structure[1 + dy, 1 + dx] = structure[1 - dy, 1 - dx] = True
    return ndimage.label(measured, structure=structure)[0]


def _hide(m: Measurements, idx: np.ndarray, window: tuple[slice, slice], fraction: float,
          rng: np.random.Generator) -> tuple[Measurements, np.ndarray, np.ndarray, np.ndarray] | None:
    """The window's measurements less a hidden share, the hidden pixels' window indices and values, and the
    distances of the window's unmeasured pixels (away from cut sides) to the nearest measurement; ``idx``
    is ``m.indices``."""
    (ys, xs), (ny, nx) = window, m.grid.shape
    inside = (idx[:, 0] >= ys.start) & (idx[:, 0] < ys.stop) & (idx[:, 1] >= xs.start) & (idx[:, 1] < xs.stop)
    local, values = idx[inside] - [ys.start, xs.start], m.values[inside]
    lo = np.array([_MARGIN if ys.start > 0 else 0, _MARGIN if xs.start > 0 else 0])
    hi = np.array([ys.stop - ys.start - (_MARGIN if ys.stop < ny else 0),
                   xs.stop - xs.start - (_MARGIN if xs.stop < nx else 0)])
    candidates = np.flatnonzero(np.all((local >= lo) & (local < hi), axis=1))
    # a tenth, or up to a fifth where a tenth is too few to judge by
    hidden_count = max(int(round(fraction * len(local))), min(MIN_HELD_OUT, int(round(2 * fraction * len(local)))))
    if hidden_count < 1 or len(candidates) < hidden_count or len(local) - hidden_count < 3:
        return None
    hidden = np.zeros(len(local), bool)
    direction = line_direction(m.measured[ys, xs])
    if direction is None:
        hidden[rng.choice(candidates, hidden_count, replace=False)] = True
    else:
        # on lines a hidden pixel's neighbours along its line would make every guess look good: whole runs
        # are hidden instead, so that the hidden pixels are completed across the lines, as the unmeasured are
        labels = _runs(m.measured[ys, xs], direction)[local[candidates, 0], local[candidates, 1]]
        order = rng.permutation(np.unique(labels))
        sizes = np.bincount(labels)[order]
        chosen = order[: int(np.searchsorted(np.cumsum(sizes), hidden_count)) + 1]
        hidden[candidates[np.isin(labels, chosen)]] = True
        if len(local) - int(hidden.sum()) < 3:
            return None
    kept = prepare_measurements(ScanGrid((ys.stop - ys.start, xs.stop - xs.start)), local[~hidden], values[~hidden])
    inner = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    free = ~m.measured[ys, xs]
    distance = ndimage.distance_transform_edt(free)[inner][free[inner]]
    return kept, local[hidden], values[hidden], distance


def self_check(
    model: Any, measurements: Measurements, *, fraction: float = CHECK_FRACTION, window: int = CHECK_WINDOW,
    seed: int = 0, **predict: Any,
) -> SelfCheck:
    """Compare the network with the linear, cubic and biharmonic interpolations on hidden measured pixels.

    Parameters
    ----------
    model : LearnedModel
        The model checked (:class:`fastflow.recon.learned.LearnedModel`).
    measurements : Measurements
        The scan's measurements.
    fraction : float, optional
        Share of each window's measured pixels hidden.
    window : int, optional
        Side of the check windows (:func:`check_windows`).
    seed : int, optional
        Seed of the choice of hidden pixels (with the number of measurements: the check is deterministic).
    **predict
        Options of :meth:`~fastflow.recon.learned.LearnedModel.predict_normalised` (tile, overlap, device).

    Returns
    -------
    SelfCheck
        The blend's weights and the errors; weights ``(1, 0, 0, 0)`` (the network alone) when too few pixels
        could be hidden or they stand for too few unmeasured ones.
    """
    m = measurements
    rng = np.random.default_rng([seed, len(m.values)])
    parts: list[np.ndarray] = []
    unmeasured = np.zeros(len(DISTANCE_BINS) + 1)
    idx = m.indices
    for win in check_windows(m.grid.shape, window):
        split = _hide(m, idx, win, fraction, rng)
        if split is None:
            continue
        kept, where, values, distance = split
        inputs, loc, scale = network_inputs(kept)
        mean, _ = model.predict_normalised(inputs, **predict)
        at = (where[:, 0], where[:, 1])
        guesses = [mean[at], *(guess(name, kept, inputs, loc, scale)[at] for name in GUESSES)]
        hidden_distance = np.expm1(inputs[INPUT_CHANNELS.index("log_distance")][at])
        parts.append(np.stack([values, *(g * scale + loc for g in guesses),
                               np.digitize(hidden_distance, DISTANCE_BINS)]))
        unmeasured += np.bincount(np.digitize(distance, DISTANCE_BINS), minlength=len(unmeasured))
    held = np.concatenate(parts, axis=1) if parts else np.empty((len(GUESSES) + 3, 0))
    if held.shape[1] < MIN_HELD_OUT or unmeasured.sum() == 0:
        return SelfCheck()
    values, candidates, bins = held[0], held[1:-1], held[-1].astype(int)
    # a hidden pixel stands for the unmeasured pixels as far from a measurement as it is from the rest, and
    # for nearer ones where no hidden pixel is that near (a harder test); farther ones are not represented
    hidden_count = np.bincount(bins, minlength=len(unmeasured))
    tested = np.flatnonzero(hidden_count)
    standing = np.searchsorted(tested, np.arange(len(unmeasured)))  # the nearest tested class at or above
    represented_mask = standing < len(tested)
    represented = float(unmeasured[represented_mask].sum() / unmeasured.sum())
    if represented < MIN_REPRESENTED:
        return SelfCheck(held_out=int(held.shape[1]), represented=represented)
    mass = np.zeros(len(unmeasured))
    np.add.at(mass, tested[standing[represented_mask]], unmeasured[represented_mask])
    weight = mass[bins] / hidden_count[bins]
    weights = _convex_fit(candidates, values, weight)
    blend = weights @ candidates
    at_border = [0, *(1 + GUESSES.index(name) for name in BORDER_GUESSES)]
    border_weights = np.zeros(len(candidates))
    border_weights[at_border] = _convex_fit(candidates[at_border], values, weight)

    def rms(estimate: np.ndarray) -> float:
        return float(np.sqrt(np.average((estimate - values) ** 2, weights=weight)))

    return SelfCheck(weights=tuple(float(w) for w in weights), border_weights=tuple(float(w) for w in border_weights),
                     held_out=int(held.shape[1]),
                     represented=represented, rmse=tuple(rms(c) for c in candidates), rmse_blend=rms(blend))


def edge_distance(shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's distance in pixels to the nearest edge of an image of ``shape`` (0 on the outer ring)."""
    ny, nx = shape
    return np.minimum.outer(np.minimum(np.arange(ny), np.arange(ny)[::-1]),
                            np.minimum(np.arange(nx), np.arange(nx)[::-1]))


def apply_blend(found: SelfCheck, network: np.ndarray, guesses: Callable[[str], np.ndarray]) -> np.ndarray:
    """The blend the check found, of the network's mean and the :data:`GUESSES` (``guesses(name)`` gives
    each, computed only where a weight asks for it): :attr:`SelfCheck.weights` inside the image,
    :attr:`SelfCheck.border_weights` near its edge (:data:`BORDER`)."""
    inner, border = np.asarray(found.weights), np.asarray(found.border_weights)
    images = [network, *(guesses(name) if max(inner[i + 1], border[i + 1]) > 0 else None
                         for i, name in enumerate(GUESSES))]

    def blend(weights: np.ndarray) -> np.ndarray:
        return sum(w * image for w, image in zip(weights, images) if w > 0)

    if np.array_equal(inner, border):
        return blend(inner)
    alpha = np.clip((2 * BORDER - edge_distance(network.shape)) / BORDER, 0.0, 1.0)  # 1 at the edge, 0 from 2 * BORDER inwards
    return (1 - alpha) * blend(inner) + alpha * blend(border)


def _convex_fit(candidates: np.ndarray, values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 whose blend of ``candidates`` (rows) is closest to ``values``
    in the ``weight``-ed least-squares sense."""
    spread = max(float(np.std(values)), float(np.abs(values).max()) * 1e-6, 1e-300)
    root = np.sqrt(weight / weight.mean())
    heavy = 1e3 * np.sqrt(len(values))  # the sum-to-one row, weighted far above the data
    a = np.vstack([candidates.T * (root / spread)[:, None], np.full(len(candidates), heavy)])
    b = np.concatenate([values * root / spread, [heavy]])
    weights, _ = optimize.nnls(a, b)
    total = weights.sum()
    return weights / total if total > 0 else np.eye(len(candidates))[0]
