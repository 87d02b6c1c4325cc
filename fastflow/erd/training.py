"""Training data for the ERD model: reduction-in-distortion (RD) targets computed from known images.

For a ground truth ``X`` (on the declared 0-100 value scale), a measurement mask and its IDW reconstruction
``X̂``, the distortion map is ``D = |X - X̂|``. Measuring an unmeasured pixel ``s`` would mostly remove the
distortion around it, so, following SLADS (Godaliyadda et al., IEEE TCI 2018), its reduction in distortion is
approximated without re-interpolating as

    RD(s) = Σ_r exp(-|r - s|² / (2 σ_s²)) D(r),    σ_s = d_nn(s) / c,

a peak-one Gaussian window truncated at 3 σ and zero outside the image, with ``d_nn(s)`` the distance from
``s`` to its nearest measured pixel and ``c`` the one free parameter (FAST's best was c = 2). Distances
between pixels take the values √m, so RD is computed by grouping pixels by ``d_nn`` and Gaussian-filtering
``D`` once per group (``scipy.ndimage.gaussian_filter`` with its normalised kernel, rescaled to peak one):
exact, and far cheaper than one window sum per pixel.

A training *chunk* is one (image, coverage, seed) triple: a uniformly random mask at that coverage, the
features of a random subset of its unmeasured pixels and their RD for every requested ``c``. Masks and rows
depend only on the chunk's seed, so every ``c`` is trained on the same masks, and chunks can be generated in
parallel (the pipeline runs them on Dask) and concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from fastflow.erd.features import DEFAULT_DENSITY_RADIUS, DEFAULT_K, FeatureField, normalise, value_range
from fastflow.errors import InputError
from fastflow.images import check_image

TRUNCATE = 3.0


def _window_mass(sigma: float) -> float:
    """Sum of the peak-one discrete 2-D Gaussian window that ``gaussian_filter`` uses for ``sigma``."""
    radius = int(TRUNCATE * sigma + 0.5)
    k = np.arange(-radius, radius + 1)
    return float(np.exp(-(k**2) / (2.0 * sigma**2)).sum() ** 2)


def rd_targets(distortion: np.ndarray, nearest: np.ndarray, flat: np.ndarray, c: float) -> np.ndarray:
    """Reduction in distortion at pixels ``flat``.

    Parameters
    ----------
    distortion : (ny, nx) array
        ``|X - X̂|`` (zero at measured pixels).
    nearest : (m,) array
        Distance from each pixel of ``flat`` to its nearest measured pixel.
    flat : (m,) int array
        Pixel numbers (row-major) of the unmeasured pixels to label.
    c : float
        Window parameter: ``σ = nearest / c``.

    Returns
    -------
    (m,) float64 array
    """
    if c <= 0:
        raise InputError(f"c must be positive; got {c}")
    # pixel-to-pixel distances take the values sqrt(m): group pixels by distance, one filter per group
    distances, group = np.unique(np.round(np.asarray(nearest, dtype=np.float64), 4), return_inverse=True)
    out = np.empty(len(flat), dtype=np.float64)
    d = np.asarray(distortion, dtype=np.float64)
    for g, dist in enumerate(distances):
        rows = group == g
        sigma = max(float(dist) / c, 1e-3)
        smoothed = gaussian_filter(d, sigma, mode="constant", cval=0.0, truncate=TRUNCATE)
        out[rows] = smoothed.ravel()[flat[rows]] * _window_mass(sigma)
    return out


@dataclass
class TrainingChunk:
    """Rows of a training set from one (image, coverage, seed)."""

    features: np.ndarray      # (n, 6) float32
    targets: np.ndarray       # (n, len(c_values)) float32
    c_values: tuple[float, ...]
    image: str
    coverage: float
    seed: int


def training_chunk(
    image: np.ndarray,
    *,
    coverage: float,
    seed: int,
    c_values: Sequence[float] = (2.0,),
    rows: int = 4000,
    name: str = "image",
    k: int = DEFAULT_K,
    density_radius: float = DEFAULT_DENSITY_RADIUS,
) -> TrainingChunk:
    """Features and RD targets for a random mask of ``image`` at ``coverage`` (deterministic per ``seed``).

    Parameters
    ----------
    image : (ny, nx) array
        Ground truth, in any units (it is put on the declared 0-100 scale by its robust range).
    coverage : float
        Fraction of pixels in the mask, in (0, 1).
    seed : int
        Seed of the mask and of the row subset.
    c_values : sequence of float
        RD window parameters; one target column each.
    rows : int
        Unmeasured pixels sampled as rows (all of them if fewer).
    """
    truth = check_image(image)
    if not 0 < coverage < 1:
        raise InputError(f"training coverage must be in (0, 1); got {coverage}")
    truth = normalise(truth, *value_range(truth))
    rng = np.random.default_rng(seed)
    n = truth.size
    measured = rng.choice(n, max(k + 1, round(coverage * n)), replace=False)
    field = FeatureField(truth.shape, k=k, density_radius=density_radius)
    field.add(measured, truth.ravel()[measured], full=True)
    free = field.unmeasured()
    pick = np.sort(rng.choice(free, min(rows, len(free)), replace=False))
    distortion = np.abs(truth - field.recon)
    nearest = field.features[pick, 2].astype(np.float64)
    targets = np.stack([rd_targets(distortion, nearest, pick, c) for c in c_values], axis=1)
    return TrainingChunk(
        features=field.features[pick].copy(),
        targets=targets.astype(np.float32),
        c_values=tuple(float(c) for c in c_values),
        image=name,
        coverage=float(coverage),
        seed=int(seed),
    )
