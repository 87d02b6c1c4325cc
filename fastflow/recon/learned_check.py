"""The learned reconstruction checked against the scan's own measurements.

A network trained on generic images can be worse than plain interpolation on an image unlike its training
set: on a clean, finely textured image at high coverage it smooths texture it takes for noise, and across
the gaps of a line scan the linear guess can beat it. Nothing but the measurements tells which case a scan
is, so :func:`self_check` asks them: it hides a random tenth of the measured pixels of a window, completes
the window from the rest with the network and with the linear and cubic (Delaunay) interpolations, and
finds the blend of the three (non-negative weights summing to 1, by least squares) closest to the hidden
values. :meth:`fastflow.recon.learned.LearnedModel.complete` applies that blend to the whole image; weights
``(1, 0, 0)`` keep the network unchanged. Noise on the hidden values adds the same expected error to every
candidate, so it does not bias the choice.

A hidden pixel is a fair test only of unmeasured pixels about as far from a measurement as it is from the
remaining ones (:data:`DISTANCE_BINS`), or nearer (a harder test): each hidden pixel is weighted by the
share of unmeasured pixels it stands for, and where the hidden pixels stand for less than half of them
(a line scan: hidden pixels have a neighbour 1 px away on their line, the unmeasured ones lie between the
lines) the check abstains and the network is used alone. The uncertainty stays the network's (the
calibration of its sigma is not redone per image: hidden pixels are too few for a stable quantile).

The check costs one extra network pass over a window of 192 px (one window for images under 16 windows'
area, four spread windows above), not over the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from fastflow.grid import ScanGrid
from fastflow.recon.base import Measurements, prepare_measurements
from fastflow.recon.learned_inputs import INPUT_CHANNELS, network_inputs

__all__ = ["CHECK_FRACTION", "CHECK_WINDOW", "GUESSES", "SelfCheck", "check_windows", "self_check"]

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
GUESSES = ("linear", "cubic")
"""The interpolations (input channels) blended with the network."""


@dataclass(frozen=True)
class SelfCheck:
    """What the check found.

    Attributes
    ----------
    weights : tuple of float
        Weights of the network and of the :data:`GUESSES` in the blend (non-negative, summing to 1).
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
    held_out: int = 0
    represented: float = 0.0
    rmse: tuple[float, ...] = ()
    rmse_blend: float = float("nan")

    @property
    def network_weight(self) -> float:
        """Weight of the network in the blend (1: the network alone)."""
        return self.weights[0]


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
    hidden[rng.choice(candidates, hidden_count, replace=False)] = True
    kept = prepare_measurements(ScanGrid((ys.stop - ys.start, xs.stop - xs.start)), local[~hidden], values[~hidden])
    inner = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    free = ~m.measured[ys, xs]
    distance = ndimage.distance_transform_edt(free)[inner][free[inner]]
    return kept, local[hidden], values[hidden], distance


def self_check(
    model: Any, measurements: Measurements, *, fraction: float = CHECK_FRACTION, window: int = CHECK_WINDOW,
    seed: int = 0, **predict: Any,
) -> SelfCheck:
    """Compare the network with the linear and cubic interpolations on hidden measured pixels.

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
        The blend's weights and the errors; weights ``(1, 0, 0)`` (the network alone) when too few pixels
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
        guesses = [mean[at], *(inputs[INPUT_CHANNELS.index(name)][at] for name in GUESSES)]
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

    def rms(estimate: np.ndarray) -> float:
        return float(np.sqrt(np.average((estimate - values) ** 2, weights=weight)))

    return SelfCheck(weights=tuple(float(w) for w in weights), held_out=int(held.shape[1]),
                     represented=represented, rmse=tuple(rms(c) for c in candidates), rmse_blend=rms(blend))


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
