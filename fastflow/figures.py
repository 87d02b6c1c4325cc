"""Figures of a scan: ground truth | measured points | reconstruction | error map."""

from __future__ import annotations

import os

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
