"""Figures: a scan (ground truth | measured points | reconstruction | error map) and the choice of c."""

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
