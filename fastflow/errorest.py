"""How wrong is the reconstruction now? An estimate of its NRMSE from the measured points alone.

A scan never sees the image it rebuilds, but it sees how well its points predict each other. The estimate
has two cross-validation features of the measured values and the coverage:

``cv_idw``
    Leave-one-out residuals: each measured value predicted by inverse-distance weighting (power 2) from
    its ``k`` nearest *other* measured points.
``cv_plane``
    The same with a local plane fitted (weighted least squares, the same weights) to those neighbours:
    small where the image is smooth, which is where biharmonic inpainting beats IDW.

Each is an RMS weighted by the squared distance to the nearest other point (an area weight: an adaptive
sampler crowds its points on edges, where residuals are large, and one point there stands for little
area) and divided by the RMS of the values with the same weights, as NRMSE divides by the truth's norm. A
linear model ``log nrmse = a + b log cv_idw + c log cv_plane + d log coverage`` per reconstruction method
and sampler family (``adaptive`` FAST, ``static`` patterns) maps them to the error; it is calibrated on
training images in simulation (:func:`calibration_rows`, :func:`fit_calibration`, run by
``benchmarks/error_estimate.py``) and shipped as
``fastflow/data/error-estimate.json``, whose card says on what and how well it was checked.

The stop rule ``--target-nrmse`` (:class:`fastflow.scan.StopRules`) compares the target with the
*upper* estimate: the estimate times the calibration's 90th percentile of ``true / estimate``, so that a
scan stops late rather than early.

Examples
--------
>>> import numpy as np
>>> from fastflow.grid import ScanGrid
>>> yy, xx = np.mgrid[0:64, 0:64]
>>> image = np.sin(xx / 6.0) + 2.0
>>> rng = np.random.default_rng(0)
>>> idx = np.argwhere(rng.random((64, 64)) < 0.1)
>>> est = estimate_error(idx, image[idx[:, 0], idx[:, 1]], len(idx) / image.size, method="idw", family="static")
>>> 0 < est.nrmse < est.upper < 0.2
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from fastflow.errors import InputError

FORMAT = "fastflow-error-estimate"
FORMAT_VERSION = 1
FEATURES = ("cv_idw", "cv_plane", "coverage")
FAMILIES = ("adaptive", "static")
NEIGHBOURS = 8
UPPER_QUANTILE = 0.9
#: Methods without a calibration of their own use this one's: the learned completion and the others are at
#: least as good as IDW on every image of the benchmarks, so its estimate is an upper bound for them.
FALLBACK_METHOD = "idw"


def default_calibration_path() -> Path:
    """The calibration shipped with fastflow."""
    return Path(__file__).with_name("data") / "error-estimate.json"


def cross_validation(indices: np.ndarray, values: np.ndarray, k: int = NEIGHBOURS) -> dict[str, float]:
    """The two leave-one-out features of the measured points (see the module's text).

    Parameters
    ----------
    indices : (n, 2) int array
        Measured grid indices (row, column); at least ``k + 1`` distinct points.
    values : (n,) float array
        Their values (one channel).
    k : int
        Neighbours each point is predicted from.

    Returns
    -------
    dict
        ``cv_idw`` and ``cv_plane``, both > 0 (floored at 1e-6: a constant image predicts itself exactly).

    Raises
    ------
    InputError
        If there are fewer than ``k + 1`` points or the shapes disagree.
    """
    pts = np.asarray(indices, dtype=float)
    v = np.asarray(values, dtype=float).reshape(-1)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != len(v):
        raise InputError(f"cross-validation needs (n, 2) indices and n values; got {pts.shape} and {v.shape}")
    if len(pts) < k + 1:
        raise InputError(f"cross-validation needs at least {k + 1} measured points; got {len(pts)}")
    d, ids = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    d, ids = np.maximum(d[:, 1:], 1e-9), ids[:, 1:]          # drop each point itself
    w = 1.0 / d**2
    neighbours = v[ids]
    idw = (w * neighbours).sum(1) / w.sum(1)
    # weighted least squares of v = p0 + p1 dy + p2 dx around each point, offsets in units of the mean distance
    scale = d.mean(1, keepdims=True)
    offsets = (pts[ids] - pts[:, None, :]) / scale[..., None]
    design = np.concatenate([np.ones((*ids.shape, 1)), offsets], axis=2)            # (n, k, 3)
    wd = design * w[..., None]
    normal = np.einsum("nki,nkj->nij", wd, design)
    normal += np.eye(3)[None] * (1e-3 * w.sum(1))[:, None, None] * np.array([0.0, 1.0, 1.0])  # gradients tamed
    rhs = np.einsum("nki,nk->ni", wd, neighbours)
    plane = np.linalg.solve(normal, rhs[..., None])[:, 0, 0]
    area = d[:, 0] ** 2
    norm = math.sqrt(float(np.mean(v**2))) or 1.0
    rms_area = math.sqrt(float(np.sum(area * v**2) / np.sum(area))) or norm
    out = {}
    for name, prediction in (("cv_idw", idw), ("cv_plane", plane)):
        rms = math.sqrt(float(np.sum(area * (v - prediction) ** 2) / np.sum(area)))
        out[name] = max(rms / rms_area, 1e-6)
    return out


def design_row(features: Mapping[str, float]) -> np.ndarray:
    """``[1, log cv_idw, log cv_plane, log coverage]``."""
    return np.array([1.0, *(math.log(max(float(features[name]), 1e-9)) for name in FEATURES)])


@dataclass(frozen=True)
class ErrorEstimate:
    """The estimated NRMSE of the current reconstruction.

    Attributes
    ----------
    nrmse : float
        The calibrated estimate (the median of the truth in calibration).
    upper : float
        The estimate times the calibration's 90th percentile of ``true / estimate``: what a stop rule uses.
    method, family : str
        The calibration used (``method`` may be the fallback of an uncalibrated method).
    coverage : float
        The coverage the estimate was made at.
    extrapolated : bool
        True outside the calibrated coverages (then treat it with suspicion; the stop rule waits).
    features : dict
        The cross-validation features.
    """

    nrmse: float
    upper: float
    method: str
    family: str
    coverage: float
    extrapolated: bool
    features: dict[str, float]

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"nrmse": self.nrmse, "upper": self.upper, "method": self.method, "family": self.family,
                "coverage": self.coverage, "extrapolated": self.extrapolated, **self.features}


@dataclass(frozen=True)
class ErrorModel:
    """A calibration: per method and family, the coefficients of ``log nrmse`` and the upper factor."""

    fits: dict[str, dict[str, dict[str, Any]]]
    coverage_range: tuple[float, float]
    card: dict[str, Any]
    k: int = NEIGHBOURS
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> ErrorModel:
        """Read a calibration file (default: the shipped one); a bad file is one clear :class:`InputError`."""
        return _load(str(Path(path).expanduser().resolve()) if path else str(default_calibration_path()))

    def basis(self, method: str) -> str:
        """The calibrated method an estimate for ``method`` uses."""
        return method if method in self.fits else FALLBACK_METHOD

    def estimate(self, indices: np.ndarray, values: np.ndarray, coverage: float, *, method: str = "idw",
                 family: str = "static") -> ErrorEstimate:
        """The estimated NRMSE of ``method``'s reconstruction of these points (see :func:`estimate_error`)."""
        if family not in FAMILIES:
            raise InputError(f"sampler family must be one of {', '.join(FAMILIES)}; got {family!r}")
        features = cross_validation(indices, values, self.k)
        value, upper = self.from_features([{**features, "coverage": coverage}], method=method, family=family)
        low, high = self.coverage_range
        return ErrorEstimate(nrmse=float(value[0]), upper=float(upper[0]), method=self.basis(method), family=family,
                             coverage=float(coverage), extrapolated=not (low - 1e-9 <= coverage <= high + 1e-9),
                             features=features)

    def from_features(self, rows: Sequence[Mapping[str, float]], *, method: str,
                      family: str) -> tuple[np.ndarray, np.ndarray]:
        """The estimates and upper estimates for rows of features (``cv_idw``, ``cv_plane``, ``coverage``)."""
        fit = self.fits[self.basis(method)][family]
        x = np.array([design_row(r) for r in rows]).reshape(-1, len(FEATURES) + 1)
        value = np.exp(x @ np.asarray(fit["coef"]))
        return value, value * float(fit["upper_factor"])


@lru_cache(maxsize=8)
def _load(path: str) -> ErrorModel:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"error-estimate calibration {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"error-estimate calibration {path} is not a readable JSON file: {exc}") from None
    try:
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} file of version {FORMAT_VERSION}")
        fits = doc["fits"]
        for method, by_family in fits.items():
            for family in FAMILIES:
                fit = by_family[family]
                coef = np.asarray(fit["coef"], dtype=float)
                if coef.shape != (len(FEATURES) + 1,) or not np.isfinite(coef).all():
                    raise ValueError(f"{method}/{family}: coef must be {len(FEATURES) + 1} finite numbers")
                if not (float(fit["upper_factor"]) >= 1.0 and math.isfinite(float(fit["upper_factor"]))):
                    raise ValueError(f"{method}/{family}: upper_factor must be a finite number >= 1")
        if FALLBACK_METHOD not in fits:
            raise ValueError(f"it has no calibration of {FALLBACK_METHOD!r}, the fallback of other methods")
        low, high = (float(c) for c in doc["coverage_range"])
        if not 0 < low < high <= 1:
            raise ValueError("coverage_range must be two fractions, low < high")
        k = int(doc.get("k", NEIGHBOURS))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"error-estimate calibration {path} is malformed: {exc}") from None
    return ErrorModel(fits=fits, coverage_range=(low, high), card=doc.get("card", {}), k=k, path=path)


def estimate_error(indices: np.ndarray, values: np.ndarray, coverage: float, *, method: str = "idw",
                   family: str = "static", calibration: str | Path | None = None) -> ErrorEstimate:
    """Estimate the NRMSE a reconstruction of the measured points has against the (unknown) full image.

    Parameters
    ----------
    indices : (n, 2) int array
        Measured grid indices.
    values : (n,) or (n, c) array
        Their values (the first channel is used).
    coverage : float
        The scan's coverage: the measured share of the pixels it may measure (the grid, or its region of
        interest).
    method : str
        The reconstruction method; uncalibrated ones use the IDW calibration (an upper bound for them).
    family : {"adaptive", "static"}
        How the points were chosen (FAST, or a static pattern).
    calibration : path, optional
        A calibration file (default: the shipped one).

    Returns
    -------
    ErrorEstimate
    """
    values = np.asarray(values, dtype=float)
    values = values[:, 0] if values.ndim == 2 else values
    return ErrorModel.load(calibration).estimate(indices, values, coverage, method=method, family=family)


# -- calibration ------------------------------------------------------------------------------------------

def calibration_rows(image: np.ndarray, sampler: str, coverages: Sequence[float], *, methods: Sequence[str],
                     noise: str | None = None, seed: int = 0, batch_size: int = 50, k: int = NEIGHBOURS,
                     **options: Any) -> list[dict[str, Any]]:
    """One simulated scan of ``image`` by ``sampler``: the features and each method's true NRMSE at each coverage.

    The scan is :func:`fastflow.evaluate.simulate` (batches routed as the scan loop routes them); ``options``
    go to the sampler.
    """
    from fastflow.evaluate import simulate
    from fastflow.grid import ScanGrid
    from fastflow.metrics import nrmse
    from fastflow.recon import reconstruct
    from fastflow.sampling.registry import make_sampler

    truth = np.asarray(image, dtype=float)
    grid = ScanGrid(truth.shape)

    def observe(indices: np.ndarray, values: np.ndarray) -> dict[str, Any]:
        row: dict[str, Any] = dict(cross_validation(indices, values, k))
        for method in methods:
            row[f"true_{method}"] = nrmse(truth, reconstruct(grid, indices, values, method=method))
        return row

    made = make_sampler(sampler, grid, coverage=max(coverages), seed=seed, **options)
    rows = simulate(made, truth, coverages, batch_size=batch_size, noise=noise, seed=seed, observe=observe)
    return [{"sampler": sampler, "family": sampler_family(made), **r} for r in rows]


def sampler_family(sampler: Any) -> str:
    """``adaptive`` for FAST samplers, ``static`` for the rest (the attribute ``family`` of a sampler)."""
    family = getattr(sampler, "family", "static")
    return family if family in FAMILIES else "static"


def fit_calibration(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], *, min_coverage: float = 0.05,
                    quantile: float = UPPER_QUANTILE) -> dict[str, dict[str, dict[str, Any]]]:
    """Least-squares fits of ``log true_<method>`` on the features, per method and family, with upper factors.

    Rows below ``min_coverage`` are left out (there the estimate is not promised). Returns the ``fits``
    entry of a calibration file.
    """
    fits: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        fits[method] = {}
        for family in FAMILIES:
            use = [r for r in rows if r["family"] == family and r["coverage"] >= min_coverage - 1e-9
                   and r[f"true_{method}"] > 0]
            if len(use) < 2 * (len(FEATURES) + 1):
                raise InputError(f"too few calibration rows for {method}/{family}: {len(use)}")
            x = np.array([design_row(r) for r in use])
            y = np.log([r[f"true_{method}"] for r in use])
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            ratio = np.exp(y - x @ coef)
            fits[method][family] = {"coef": [float(c) for c in coef],
                                    "upper_factor": max(1.0, float(np.quantile(ratio, quantile))),
                                    "n_rows": len(use),
                                    "rms_log_residual": float(np.sqrt(np.mean(np.log(ratio) ** 2)))}
    return fits


def check_rows(model: ErrorModel, rows: Sequence[Mapping[str, Any]], method: str, family: str,
               min_coverage: float = 0.05) -> dict[str, float]:
    """How close the estimate comes to the truth on ``rows``: share within 25 %, median and largest error."""
    use = [r for r in rows if r["family"] == family and r["coverage"] >= min_coverage - 1e-9]
    if not use:
        return {}
    est, upper = model.from_features(use, method=method, family=family)
    true = np.array([r[f"true_{method}"] for r in use])
    rel = np.abs(est / true - 1)
    upper_low = np.mean(upper < true)
    return {"n": len(use), "within_25pct": float(np.mean(rel <= 0.25)), "median_rel_error": float(np.median(rel)),
            "max_rel_error": float(rel.max()), "upper_below_truth": float(upper_low)}


def write_calibration(path: str | Path, fits: Mapping[str, Any], coverage_range: tuple[float, float],
                      card: Mapping[str, Any], k: int = NEIGHBOURS) -> Path:
    """Write a calibration file (checked by reading it back)."""
    path = Path(path)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "features": list(FEATURES), "k": k,
           "coverage_range": list(coverage_range), "fits": fits, "card": dict(card)}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    _load.cache_clear()
    ErrorModel.load(path)
    return path

