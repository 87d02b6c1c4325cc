"""Checking and merging the measurements every reconstruction starts from.

A reconstruction receives grid indices ``(n, 2)`` and one value per index. :func:`prepare_measurements`
validates them once and merges repeated pixels, so each method sees every measured pixel exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid


@dataclass(frozen=True)
class Measurements:
    """Distinct measured pixels of a grid and their (averaged) values.

    Attributes
    ----------
    grid : ScanGrid
        The grid the pixels belong to.
    flat : numpy.ndarray
        Row-major pixel numbers of the distinct measured pixels, ``(m,)`` int64, ascending.
    values : numpy.ndarray
        ``(m,)`` float64: the measured value of each pixel, the mean when it was measured more than once.
    measured : numpy.ndarray
        Boolean image of ``grid.shape``, True at measured pixels.
    """

    grid: ScanGrid
    flat: np.ndarray
    values: np.ndarray
    measured: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        """Grid indices ``(m, 2)`` of the distinct measured pixels, in the order of :attr:`values`."""
        return self.grid.unravel(self.flat)

    def unmeasured_indices(self) -> np.ndarray:
        """Grid indices ``(u, 2)`` of the pixels without a measurement, row-major."""
        return self.grid.unravel(np.flatnonzero(~self.measured.ravel()))

    def filled(self, fill: float = 0.0) -> np.ndarray:
        """A float64 image with the measured values in place and ``fill`` everywhere else."""
        image = np.full(self.grid.size, fill, dtype=np.float64)
        image[self.flat] = self.values
        return image.reshape(self.grid.shape)


def as_single_channel(values: Any, n: int) -> np.ndarray:
    """Return ``values`` as a finite ``(n,)`` float64 array.

    An ``(n, 1)`` array is accepted and flattened; anything with more channels is refused.

    Raises
    ------
    InputError
        If the values are not numbers, have several channels, do not number ``n``, or are NaN/inf.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"measured values must be real numbers ({exc})") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        raise InputError(
            f"values have {arr.shape[1]} channels (shape {arr.shape}); reconstruct one channel at a time, "
            "e.g. values[:, c]"
        )
    if arr.ndim != 1:
        raise InputError(
            f"measured values must be a 1-D array with one value per index; got shape {arr.shape}"
        )
    if arr.shape[0] != n:
        raise InputError(f"got {arr.shape[0]} values for {n} indices; give exactly one value per index")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise InputError(f"{bad} measured values are NaN or infinite; drop or fix them")
    return arr


def prepare_measurements(grid: ScanGrid, indices: Any, values: Any) -> Measurements:
    """Validate measured pixels and values, and average pixels measured more than once.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    indices : array_like
        ``(n, 2)`` integer grid indices ``(iy, ix)``.
    values : array_like
        ``(n,)`` measured values (one channel).

    Returns
    -------
    Measurements
        The distinct measured pixels, row-major, with their values.

    Raises
    ------
    InputError
        If an index is malformed or outside the grid, a value is invalid, or there is no measurement.

    Examples
    --------
    >>> m = prepare_measurements(ScanGrid((2, 3)), [[1, 2], [0, 0], [1, 2]], [1.0, 5.0, 3.0])
    >>> m.indices.tolist(), m.values.tolist()
    ([[0, 0], [1, 2]], [5.0, 2.0])
    """
    if not isinstance(grid, ScanGrid):
        raise InputError(f"grid must be a fastflow.grid.ScanGrid; got {type(grid).__name__}")
    idx = grid.check_indices(indices)
    vals = as_single_channel(values, len(idx))
    if len(idx) == 0:
        raise InputError("no measurements: reconstruction needs at least one measured pixel")
    flat = idx[:, 0] * grid.shape[1] + idx[:, 1]
    counts = np.bincount(flat, minlength=grid.size)
    measured = counts > 0
    unique = np.flatnonzero(measured)
    # sum / count is exact for a pixel measured once (0 + v = v, v / 1 = v) and the mean otherwise
    means = np.bincount(flat, weights=vals, minlength=grid.size)[unique] / counts[unique]
    return Measurements(grid=grid, flat=unique, values=means, measured=measured.reshape(grid.shape))
