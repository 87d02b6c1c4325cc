"""Image quality metrics for scoring a reconstruction against a ground truth.

This is the one place that documents how fastflow normalises its metrics. Every function takes the ground
truth first and the estimate second, both 2-D, the same shape and finite.

NRMSE
    ``||truth - estimate||_2 / ||truth||_2``: scikit-image's ``normalized_root_mse`` with its default
    ``"euclidean"`` normalisation, as in the FAST paper. It is independent of the intensity scale
    (multiplying both images by a constant does not change it) but not of an offset. It is undefined for an
    all-zero truth.
SSIM
    scikit-image's ``structural_similarity`` with its defaults (7x7 uniform window, K1=0.01, K2=0.03) and
    an **explicit** ``data_range``, by default the range of the ground truth, ``truth.max() - truth.min()``
    (1.0 if the truth is constant). The images must be at least 7 pixels on each side.
PSNR
    ``10 * log10(data_range**2 / MSE)`` in dB with the same ``data_range`` as SSIM; ``inf`` for a perfect
    estimate.

Why ``data_range`` is explicit
------------------------------
SSIM's stabilising constants are ``(K1 * L)**2`` and ``(K2 * L)**2`` with ``L = data_range``, so a
``data_range`` larger than the images' real range inflates the score. The SSIM curves published with FAST
(Kandel et al., "Demonstration of an AI-driven workflow for autonomous high-resolution scanning
microscopy", Nat. Commun. 14, 5501 (2023)) called ``structural_similarity`` without ``data_range`` on a
ground truth scaled to [0, 1]. The scikit-image of the time then took the range of the float dtype,
(-1, 1), i.e. ``data_range = 2``. scikit-image PR #6595 documented this pitfall, and scikit-image now
refuses floating-point images without ``data_range``. Re-running the paper's protocol reproduces its SSIM
only with ``data_range = 2``; the physically meaningful ``data_range = 1`` gives values lower by 0.01 to
0.05. fastflow always passes the range of the ground truth, so scores are comparable across images and
intensity scales; pass ``data_range=2`` to compare with the published FAST numbers.

Examples
--------
A [0, 1] ramp with every fourth pixel raised by 0.1 (mean squared error ``0.1**2 / 4 = 0.0025``):

>>> import numpy as np
>>> y, x = np.mgrid[0:32, 0:32] / 31
>>> truth = x * y
>>> estimate = truth.copy()
>>> estimate[::2, ::2] += 0.1
>>> scores = evaluate(truth, estimate)
>>> {name: round(value, 4) for name, value in scores.items()}
{'nrmse': 0.1476, 'ssim': 0.7143, 'psnr': 26.0206}
>>> round(ssim(truth, estimate, data_range=2.0), 4)  # the FAST paper's implicit range: inflated
0.7928
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from fastflow.errors import InputError

SSIM_WINDOW = 7
"""Side of scikit-image's default SSIM window; images must be at least this large on each side."""


def _check_pair(truth: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays, after checking they are 2-D, the same shape and finite."""
    arrays = []
    for name, image in (("truth", truth), ("estimate", estimate)):
        try:
            arr = np.asarray(image, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be a real-valued image ({exc})") from None
        if arr.ndim != 2:
            raise InputError(f"{name} must be a 2-D (y, x) image; got shape {arr.shape}")
        if arr.size == 0:
            raise InputError(f"{name} is empty (shape {arr.shape})")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} has {int(np.sum(~np.isfinite(arr)))} NaN or infinite pixels")
        arrays.append(arr)
    if arrays[0].shape != arrays[1].shape:
        raise InputError(f"truth and estimate differ in shape: {arrays[0].shape} vs {arrays[1].shape}")
    return arrays[0], arrays[1]


def default_data_range(truth: Any) -> float:
    """The data range used when none is given: ``truth.max() - truth.min()``, or 1.0 if that is 0.

    Examples
    --------
    >>> default_data_range([[0.0, 4.0], [1.0, 2.0]]), default_data_range([[3.0, 3.0]])
    (4.0, 1.0)
    """
    arr = np.asarray(truth, dtype=np.float64)
    span = float(arr.max() - arr.min())
    return span if span > 0 else 1.0


def _data_range(truth: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        return default_data_range(truth)
    try:
        value = float(data_range)
    except (TypeError, ValueError):
        raise InputError(f"data_range must be a positive number; got {data_range!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"data_range must be a positive finite number; got {data_range!r}")
    return value


def nrmse(truth: Any, estimate: Any) -> float:
    """Normalised root-mean-square error ``||truth - estimate||_2 / ||truth||_2``.

    Raises
    ------
    InputError
        If the images are not 2-D, finite and the same shape, or the truth is all zeros.

    Examples
    --------
    >>> nrmse([[3.0, 4.0]], [[3.0, 3.0]])  # 1 / 5
    0.2
    """
    t, e = _check_pair(truth, estimate)
    if not np.any(t):
        raise InputError("nrmse is undefined for an all-zero truth (it divides by ||truth||)")
    return float(normalized_root_mse(t, e, normalization="euclidean"))


def ssim(truth: Any, estimate: Any, data_range: float | None = None) -> float:
    """Mean structural similarity with scikit-image's defaults and an explicit data range.

    Parameters
    ----------
    truth, estimate : array_like
        2-D images of the same shape, at least 7 pixels on each side.
    data_range : float, optional
        Dynamic range ``L`` of the images; default :func:`default_data_range` of ``truth``.

    Raises
    ------
    InputError
        If the images are invalid or smaller than the 7x7 window, or ``data_range`` is not positive.
    """
    t, e = _check_pair(truth, estimate)
    if min(t.shape) < SSIM_WINDOW:
        raise InputError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels; got {t.shape}")
    return float(structural_similarity(t, e, data_range=_data_range(t, data_range)))


def psnr(truth: Any, estimate: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB; ``inf`` if the images are equal.

    Parameters
    ----------
    truth, estimate : array_like
        2-D images of the same shape.
    data_range : float, optional
        Peak-to-peak range; default :func:`default_data_range` of ``truth``.

    Examples
    --------
    >>> psnr([[0.0, 1.0]], [[0.0, 0.9]])  # MSE 0.005, range 1
    23.010299956639813
    """
    t, e = _check_pair(truth, estimate)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(t, e, data_range=_data_range(t, data_range)))


def evaluate(truth: Any, estimate: Any) -> dict[str, float]:
    """All metrics with their defaults: ``{"nrmse": ..., "ssim": ..., "psnr": ...}``.

    Raises
    ------
    InputError
        As :func:`nrmse`, :func:`ssim` and :func:`psnr`.
    """
    t, e = _check_pair(truth, estimate)
    return {"nrmse": nrmse(t, e), "ssim": ssim(t, e), "psnr": psnr(t, e)}


Z90 = 1.6448536269514722
"""Half-width of the central 90 % interval of a normal distribution, in standard deviations."""


def uncertainty_scores(truth: Any, estimate: Any, sigma: Any, where: Any | None = None) -> dict[str, float]:
    """How well a predicted standard deviation describes the actual error.

    Parameters
    ----------
    truth, estimate : array_like
        2-D, the same shape.
    sigma : array_like
        The predicted standard deviation of ``estimate - truth`` at each pixel (>= 0).
    where : array_like of bool, optional
        The pixels to score (e.g. the unmeasured ones); default: every pixel with ``sigma > 0``.

    Returns
    -------
    dict
        ``coverage90``: share of the pixels whose truth lies in ``estimate ± 1.645 sigma`` (0.9 for a
        calibrated Gaussian); ``spearman``: rank correlation of ``sigma`` and ``|error|``;
        ``mean_sigma``: mean predicted sigma; ``rms_error``: the actual RMS error there.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = np.zeros((64, 64)); sigma = np.full((64, 64), 0.5); sigma[:, 32:] = 2.0
    >>> estimate = truth + rng.normal(size=truth.shape) * sigma
    >>> s = uncertainty_scores(truth, estimate, sigma)
    >>> round(s["coverage90"], 2), s["spearman"] > 0.4
    (0.9, True)
    """
    from scipy.stats import spearmanr

    t, e = _check_pair(truth, estimate)
    s = np.asarray(sigma, dtype=np.float64)
    if s.shape != t.shape or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InputError(f"sigma must be finite, >= 0 and of shape {t.shape}")
    mask = (s > 0) if where is None else np.asarray(where, dtype=bool)
    if mask.shape != t.shape or not mask.any():
        return {}
    err = np.abs(e - t)[mask]
    sig = s[mask]
    rho = spearmanr(sig, err).statistic if len(err) > 2 and np.ptp(sig) > 0 and np.ptp(err) > 0 else np.nan
    return {
        "coverage90": float(np.mean(err <= Z90 * sig)),
        "spearman": float(rho),
        "mean_sigma": float(sig.mean()),
        "rms_error": float(np.sqrt(np.mean(err**2))),
    }
