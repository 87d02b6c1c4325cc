"""Figures: a scan (ground truth | measured points | reconstruction | error map), the choice of c, and
example completions and training curves of the learned reconstruction."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def scan_figure(
    path: str | os.PathLike,
    reconstruction: np.ndarray,
    indices: np.ndarray,
    truth: np.ndarray | None = None,
    title: str = "",
) -> str:
    """Write a PNG summarising a scan and return its path.

    Parameters
    ----------
    path : path-like
        Output PNG file.
    reconstruction : (ny, nx) array
        The reconstructed image.
    indices : (n, 2) int array
        Measured grid indices, in acquisition order (pixels are coloured by order).
    truth : (ny, nx) array, optional
        Ground truth; when given, the first panel shows it and the last the absolute error.
    title : str
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ny, nx = reconstruction.shape
    ref = truth if truth is not None else reconstruction
    vmin, vmax = float(np.min(ref)), float(np.max(ref))
    panels = 4 if truth is not None else 2
    width = 3.2 * panels
    fig, axes = plt.subplots(1, panels, figsize=(width, 3.4 * ny / nx + 0.8), squeeze=False, layout="constrained")
    axes = list(axes[0])
    if truth is not None:
        _show(axes.pop(0), truth, "ground truth", vmin, vmax)
    order = np.full((ny, nx), np.nan)
    order[indices[:, 0], indices[:, 1]] = np.arange(len(indices))   # colour = when the pixel was measured
    ax = axes.pop(0)
    ax.set_facecolor("white")
    ax.imshow(order, cmap="viridis", interpolation="nearest")
    ax.set_title(f"measured: {len(indices)} points ({len(indices) / (nx * ny):.1%}), early → late", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    _show(axes.pop(0), reconstruction, "reconstruction", vmin, vmax)
    if truth is not None:
        err = np.abs(reconstruction - truth)
        _show(axes.pop(0), err, f"|error| (max {err.max():.3g})", 0.0, float(err.max()) or 1.0, cmap="magma")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _show(ax, image: np.ndarray, title: str, vmin: float, vmax: float, cmap: str = "gray") -> None:
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def selection_figure(scores: dict, coverages: Any, path: str | os.PathLike) -> str:
    """Validation curves of the choice of c: NRMSE against coverage, one panel per image, one line per c.

    ``scores`` maps c to :func:`fastflow.erd.fit.score_c` results (``per_image``: NRMSE per coverage).
    """
    import matplotlib.pyplot as plt

    images = sorted({name for s in scores.values() for name in s["per_image"]})
    fig, axes = plt.subplots(1, len(images), figsize=(3.4 * len(images) + 0.5, 3.2), squeeze=False,
                             constrained_layout=True)
    covs = np.asarray(list(coverages), dtype=float) * 100
    for ax, name in zip(axes[0], images):
        for c in sorted(scores):
            ax.plot(covs, scores[c]["per_image"][name], marker="o", ms=3, label=f"c={c:g}")
        ax.set_title(name)
        ax.set_xlabel("coverage (%)")
        ax.set_ylabel("NRMSE (IDW)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def completion_panels(cases: list[dict[str, Any]], path: str | os.PathLike) -> str:
    """Example completions, one row per case: truth | mask | learned | biharmonic | error | uncertainty.

    Each case holds ``name``, ``truth``, ``mask`` (bool), ``learned``, ``sigma`` and ``biharmonic`` (2-D
    arrays of one shape). Error and uncertainty share one colour scale per row, so where the uncertainty is
    high the error should be too.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cases), 6, figsize=(15, 2.6 * len(cases) + 0.3), squeeze=False,
                             constrained_layout=True)
    for row, case in zip(axes, cases):
        truth = case["truth"]
        lo, hi = float(np.min(truth)), float(np.max(truth))
        error = np.abs(case["learned"] - truth)
        top = max(float(np.percentile(error, 99.5)), float(np.percentile(case["sigma"], 99.5)), 1e-12)
        shown = np.where(case["mask"], truth, np.nan)
        _show(row[0], truth, case["name"], lo, hi)
        _show(row[1], shown, f"measured {case['mask'].mean():.1%}", lo, hi)
        _show(row[2], case["learned"], "learned", lo, hi)
        _show(row[3], case["biharmonic"], "biharmonic", lo, hi)
        _show(row[4], error, "|error| (learned)", 0.0, top, cmap="magma")
        _show(row[5], case["sigma"], "uncertainty (sigma)", 0.0, top, cmap="magma")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def training_curves(history: list[dict[str, Any]], path: str | os.PathLike) -> str:
    """Training loss and validation RMSE (relative to the linear guess) against the step."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    steps = [h["step"] for h in history]
    left.plot(steps, [h["loss"] for h in history], lw=1)
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.grid(alpha=0.3)
    val = [(h["step"], h["validation"]) for h in history if "validation" in h]
    if val:
        right.plot([s for s, _ in val], [v.get("rmse_ratio", np.nan) for _, v in val], marker="o", ms=3)
    right.set_xlabel("step")
    right.set_ylabel("validation RMSE / linear RMSE")
    right.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
