"""The six SLADS features of every unmeasured pixel, kept up to date as measurements arrive.

For an unmeasured pixel ``s`` with its ``k`` nearest measured pixels (values ``v_i``, distances
``d_1 <= ... <= d_k``, normalised inverse-distance weights ``w_i``) and the IDW estimate
``x̂ = Σ w_i v_i``, the features are, in this order (Godaliyadda et al. 2018; Zhang et al. 2018; the order
of Kandel et al. 2023's implementation):

====  =========================  ==============================================================
 0    weighted deviation          ``Σ w_i |v_i - x̂|``
 1    deviation magnitude         ``sqrt(Σ (v_i - x̂)²)``
 2    nearest distance            ``d_1`` (pixels)
 3    measurement sparsity        ``(1 + π r²) / (1 + #{i : d_i <= r})`` with a fixed radius ``r`` (pixels)
 4    horizontal gradient         ``|∂X̂/∂x|`` of the current reconstruction (``numpy.gradient`` convention)
 5    vertical gradient           ``|∂X̂/∂y|``
====  =========================  ==============================================================

Two departures from the reference implementation, both fixing weak points it documents: the sparsity radius
is a fixed number of pixels (the reference scaled it with the image size, so models saw other feature
ranges on other image sizes), and values are normalised once, by the caller, on a declared scale (the
reference re-normalised every value after each batch, so features drifted mid-scan).

Incremental updates
-------------------
:class:`FeatureField` holds the IDW reconstruction ``X̂``, the distance ``d_k`` to each pixel's k-th
neighbour and the features of every unmeasured pixel. When a batch of points ``P`` is added, a pixel's
neighbour set changes exactly when some new point is closer to it than its current ``d_k``; those pixels
(found by a k-d tree over ``P``, within windows bounded by the local maximum of ``d_k``) are re-queried
against a tree of the measured points near ``P`` only, and the gradient features are refreshed one pixel
further out. To make neighbour sets unique on a pixel lattice, where equal distances are common, measured
pixels enter the trees with a fixed sub-micro-pixel offset derived from their pixel number: ties are
broken the same way whichever tree answers, so an incremental update equals a full recomputation exactly
(``tests/test_erd_features.py`` checks this), and a step costs in proportion to the batch's
neighbourhood, not to the grid.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from fastflow.errors import InputError
from fastflow.recon.idw import build_tree, idw_at

FEATURE_NAMES = (
    "weighted_deviation",
    "deviation_magnitude",
    "nearest_distance",
    "sparsity",
    "gradient_x",
    "gradient_y",
)
N_FEATURES = len(FEATURE_NAMES)
DEFAULT_K = 10
DEFAULT_DENSITY_RADIUS = 8.0
_JITTER = 1e-6
_CHUNK = 1 << 18
_PARALLEL_FROM = 1 << 15


VALUE_SCALE = 100.0
VALUE_PERCENTILES = (0.5, 99.5)


def value_range(values: np.ndarray) -> tuple[float, float]:
    """The declared value scale: robust ``(low, high)`` percentiles of ``values`` (never equal).

    Values map to ``VALUE_SCALE * (v - low) / (high - low)``, so features and ERD live on a 0-100 scale as in
    the models' training, whatever the detector's units.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0, 1.0
    lo, hi = (float(p) for p in np.percentile(v, VALUE_PERCENTILES))
    if hi <= lo:
        span = max(abs(lo), 1.0) * 1e-6
        lo, hi = lo - span, hi + span
    return lo, hi


def normalise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map values to the declared scale: ``low`` -> 0 and ``high`` -> ``VALUE_SCALE``."""
    return (np.asarray(values, dtype=np.float64) - lo) * (VALUE_SCALE / (hi - lo))


def tie_break_offsets(flat: np.ndarray) -> np.ndarray:
    """Fixed ``(n, 2)`` offsets below 1e-6 px for pixel numbers ``flat`` (a hash, not random state)."""
    h = flat.astype(np.uint64)
    a = (h * np.uint64(2654435761) + np.uint64(12345)) & np.uint64(0xFFFFFFFF)
    b = (h * np.uint64(2246822519) + np.uint64(98765)) & np.uint64(0xFFFFFFFF)
    return (np.stack([a, b], axis=1).astype(np.float64) / 2.0**32 - 0.5) * _JITTER


def knn_features(
    distances: np.ndarray, neighbour_values: np.ndarray, estimates: np.ndarray, density_radius: float
) -> np.ndarray:
    """Features 0-3 from a neighbour query: ``(m, k)`` distances and values, ``(m,)`` IDW estimates.

    Examples
    --------
    >>> d = np.array([[1.0, 2.0]]); v = np.array([[0.0, 3.0]])
    >>> w = 1 / d**2 / (1 / d**2).sum()          # weights 0.8, 0.2 -> estimate 0.6
    >>> knn_features(d, v, (w * v).sum(1), density_radius=1.5).round(4).tolist()
    [[0.96, 2.5456, 1.0, 4.0343]]
    """
    dev = np.abs(neighbour_values - estimates[:, None])
    w = 1.0 / np.maximum(distances, 1e-12) ** 2
    w /= w.sum(axis=1, keepdims=True)
    out = np.empty((len(distances), 4), dtype=np.float64)
    out[:, 0] = np.einsum("ij,ij->i", w, dev)
    out[:, 1] = np.sqrt(np.einsum("ij,ij->i", dev, dev))
    out[:, 2] = distances[:, 0]
    out[:, 3] = (1.0 + math.pi * density_radius**2) / (1.0 + (distances <= density_radius).sum(axis=1))
    return out


def gradient_features(recon: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """``|∂X̂/∂x|`` and ``|∂X̂/∂y|`` at pixels ``flat``, exactly as ``numpy.gradient`` of the whole image."""
    ny, nx = recon.shape
    iy, ix = np.divmod(flat, nx)
    out = np.empty((len(flat), 2), dtype=np.float64)
    for col, (pos, size, step) in enumerate(((ix, nx, 1), (iy, ny, nx))):
        if size == 1:
            out[:, col] = 0.0
            continue
        lo = np.where(pos == 0, flat, flat - step)
        hi = np.where(pos == size - 1, flat, flat + step)
        span = np.where((pos == 0) | (pos == size - 1), 1.0, 2.0)
        out[:, col] = np.abs(recon.ravel()[hi] - recon.ravel()[lo]) / span
    return out


class FeatureField:
    """IDW reconstruction and SLADS features over a grid, updated incrementally.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    k : int
        Neighbours per estimate (FAST uses 10).
    density_radius : float
        Radius, in pixels, of the sparsity feature.

    Attributes
    ----------
    measured : ndarray of bool, ``(ny, nx)``
    recon : ndarray of float64, ``(ny, nx)``
        IDW reconstruction (measured pixels hold their values).
    features : ndarray of float32, ``(ny * nx, 6)``
        Features of the unmeasured pixels (rows of measured pixels are stale and unused).
    dk : ndarray of float64, ``(ny * nx,)``
        Distance to the k-th nearest measured pixel (0 for measured pixels, inf before any data).
    """

    def __init__(self, shape: tuple[int, int], k: int = DEFAULT_K, density_radius: float = DEFAULT_DENSITY_RADIUS):
        self.shape = (int(shape[0]), int(shape[1]))
        n = self.shape[0] * self.shape[1]
        if k < 1 or density_radius <= 0:
            raise InputError(f"k must be >= 1 and the density radius > 0; got k={k}, radius={density_radius}")
        self.k = int(k)
        self.density_radius = float(density_radius)
        self.measured = np.zeros(self.shape, dtype=bool)
        self.values = np.zeros(n, dtype=np.float64)       # normalised measured values, by pixel number
        self.recon = np.zeros(self.shape, dtype=np.float64)
        self.features = np.zeros((n, N_FEATURES), dtype=np.float32)
        self.dk = np.full(n, np.inf)
        self.n_measured = 0
        self._scratch: np.ndarray | None = None

    # -- public -------------------------------------------------------------------------------------
    def add(self, flat: np.ndarray, values: np.ndarray, *, full: bool = False) -> np.ndarray:
        """Add measurements (normalised values at pixel numbers ``flat``; repeats are averaged in order).

        Returns the pixel numbers of unmeasured pixels whose features changed (all of them after a full
        update). A full update is done when ``full`` is true or when fewer than ``k`` pixels were measured
        before the batch.
        """
        flat = np.asarray(flat, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        new = ~self.measured.ravel()[flat]
        repeat = flat[~new]
        if len(repeat):  # a re-measured pixel: keep the mean of both readings
            self.values[repeat] = 0.5 * (self.values[repeat] + values[~new])
        flat_new, first = np.unique(flat[new], return_index=True)
        self.values[flat_new] = values[new][first]
        before = self.n_measured
        self.measured.ravel()[flat_new] = True
        self.n_measured = int(self.measured.sum())
        self.recon.ravel()[flat] = self.values[flat]
        self.dk[flat] = 0.0
        if full or before < self.k or len(repeat):
            return self.refresh()
        return self._update_local(flat_new)

    def refresh(self) -> np.ndarray:
        """Recompute everything from scratch; returns the pixel numbers of all unmeasured pixels."""
        free = np.flatnonzero(~self.measured.ravel())
        if self.n_measured == 0:
            return free
        points = np.flatnonzero(self.measured.ravel())
        tree = self._tree(points)
        for start in range(0, len(free), _CHUNK):
            self._query(tree, points, free[start:start + _CHUNK])
        self._gradients(free)
        return free

    def unmeasured(self) -> np.ndarray:
        """Pixel numbers of the unmeasured pixels."""
        return np.flatnonzero(~self.measured.ravel())

    # -- internals ----------------------------------------------------------------------------------
    def _tree(self, points: np.ndarray) -> cKDTree:
        coords = np.stack(np.divmod(points, self.shape[1]), axis=1).astype(np.float64)
        return build_tree(coords + tie_break_offsets(points))

    def _query(self, tree: cKDTree, points: np.ndarray, flat: np.ndarray) -> None:
        """Re-estimate pixels ``flat`` from ``tree`` (whose point ``i`` is pixel ``points[i]``)."""
        if len(flat) == 0:
            return
        query = np.stack(np.divmod(flat, self.shape[1]), axis=1).astype(np.float64)
        workers = 1 if len(flat) < _PARALLEL_FROM else -1   # thread start-up dominates small queries
        est, dist, ids = idw_at(tree, self.values[points], query, k=self.k, workers=workers)
        self.recon.ravel()[flat] = est
        self.dk[flat] = dist[:, -1] if dist.shape[1] == self.k else np.inf
        self.features[flat, :4] = knn_features(dist, self.values[points][ids], est, self.density_radius)

    def _gradients(self, flat: np.ndarray) -> None:
        self.features[flat, 4:] = gradient_features(self.recon, flat)

    def _update_local(self, new: np.ndarray) -> np.ndarray:
        """Update the pixels whose neighbour sets include a new point, and their gradient neighbours."""
        ny, nx = self.shape
        if len(new) == 0:
            return new
        dk2d = self.dk.reshape(self.shape)
        r_all = float(self.dk.max())   # measured pixels hold 0, so this is the max over unmeasured ones
        if not np.isfinite(r_all):
            return self.refresh()
        reach = math.ceil(r_all)
        new_yx = np.stack(np.divmod(new, nx), axis=1)
        new_pos = new_yx + tie_break_offsets(new)
        changed, needs = [], []
        for (y, x), (py, px) in zip(new_yx, new_pos):
            # pixels that now have this point among their k nearest: |s - p| <= d_k(s), with d_k <= r_p locally
            y0, y1, x0, x1 = max(0, y - reach), min(ny, y + reach + 1), max(0, x - reach), min(nx, x + reach + 1)
            dk_win = dk2d[y0:y1, x0:x1]
            r_p = math.ceil(float(dk_win.max()))
            if r_p == 0:
                continue
            cy0, cy1, cx0, cx1 = max(0, y - r_p), min(ny, y + r_p + 1), max(0, x - r_p), min(nx, x + r_p + 1)
            yy, xx = np.ogrid[cy0:cy1, cx0:cx1]
            hit = np.hypot(yy - py, xx - px) <= dk2d[cy0:cy1, cx0:cx1]
            sub = np.nonzero(hit)
            if len(sub[0]):
                changed.append((sub[0] + cy0) * nx + sub[1] + cx0)
                needs.append((y, x, 2 * r_p))
        changed = self._dedup(np.concatenate(changed)) if changed else np.empty(0, np.int64)
        changed = changed[~self.measured.ravel()[changed]]
        if len(changed):
            # every neighbour of a changed pixel lies within 2 r_p of the new point that changed it
            near = []
            for y, x, r in needs:
                y0, y1, x0, x1 = max(0, y - r), min(ny, y + r + 1), max(0, x - r), min(nx, x + r + 1)
                sub = np.nonzero(self.measured[y0:y1, x0:x1])
                near.append((sub[0] + y0) * nx + sub[1] + x0)
            points = np.sort(self._dedup(np.concatenate(near)))
            self._query(self._tree(points), points, changed)
        # gradients change one pixel around every pixel whose estimate changed
        moved = np.concatenate([changed, new])
        my, mx = np.divmod(moved, nx)
        ring = [moved]
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, xx = my + dy, mx + dx
            ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            ring.append(yy[ok] * nx + xx[ok])
        touched = self._dedup(np.concatenate(ring))
        touched = touched[~self.measured.ravel()[touched]]
        self._gradients(touched)
        return touched

    def _dedup(self, flat: np.ndarray) -> np.ndarray:
        """``flat`` without repeats (in no particular order), in O(n) without sorting, via a scratch array.

        Each occurrence writes its position; whichever write survives, exactly one occurrence of every value
        finds its own position there afterwards.
        """
        if self._scratch is None:
            self._scratch = np.zeros(self.shape[0] * self.shape[1], dtype=np.int32)
        order = np.arange(1, len(flat) + 1, dtype=np.int32)
        self._scratch[flat] = order
        keep = self._scratch[flat] == order
        self._scratch[flat] = 0
        return flat[keep]
