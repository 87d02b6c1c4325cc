"""The scan grid: pixel lattice of a scan and conversion between grid indices and physical positions.

Arrays are ``(y, x)`` and index pairs are ``(iy, ix)`` rows of an ``(n, 2)`` integer array. The physical
position of pixel ``(iy, ix)`` is ``origin + (iy, ix) * pixel_size``: ``origin`` is the centre of pixel
``(0, 0)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastflow.errors import InputError


@dataclass(frozen=True)
class ScanGrid:
    """A rectangular scan grid.

    Parameters
    ----------
    shape : tuple of int
        Number of pixels ``(ny, nx)``.
    pixel_size : tuple of float, optional
        Step between neighbouring pixels ``(dy, dx)`` in ``units``.
    origin : tuple of float, optional
        Physical position ``(y, x)`` of the centre of pixel ``(0, 0)``.
    units : str, optional
        Unit of ``pixel_size`` and ``origin``; ``"px"`` means positions are pixel indices.

    Examples
    --------
    >>> g = ScanGrid((4, 6), pixel_size=(0.5, 0.5), origin=(10.0, 20.0), units="um")
    >>> g.to_position([[1, 2]])
    array([[10.5, 21. ]])
    >>> g.to_index([[10.5, 21.1]])
    array([[1, 2]])
    """

    shape: tuple[int, int]
    pixel_size: tuple[float, float] = (1.0, 1.0)
    origin: tuple[float, float] = (0.0, 0.0)
    units: str = "px"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in np.atleast_1d(self.shape))
        if len(shape) != 2 or min(shape) < 1:
            raise InputError(f"grid shape must be two positive integers (ny, nx); got {self.shape!r}")
        pixel_size = tuple(float(p) for p in np.broadcast_to(self.pixel_size, (2,)))
        if not all(np.isfinite(pixel_size)) or min(pixel_size) <= 0:
            raise InputError(f"pixel size must be two positive finite numbers; got {self.pixel_size!r}")
        origin = tuple(float(o) for o in np.broadcast_to(self.origin, (2,)))
        if not all(np.isfinite(origin)):
            raise InputError(f"grid origin must be finite; got {self.origin!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "pixel_size", pixel_size)
        object.__setattr__(self, "origin", origin)

    @property
    def size(self) -> int:
        """Number of pixels in the grid."""
        return self.shape[0] * self.shape[1]

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """Physical ``(ymin, ymax, xmin, xmax)`` of the pixel centres."""
        (y0, x0), (dy, dx), (ny, nx) = self.origin, self.pixel_size, self.shape
        return (y0, y0 + (ny - 1) * dy, x0, x0 + (nx - 1) * dx)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical coordinates of the pixel centres along ``y`` and along ``x``."""
        return (
            self.origin[0] + np.arange(self.shape[0]) * self.pixel_size[0],
            self.origin[1] + np.arange(self.shape[1]) * self.pixel_size[1],
        )

    def check_indices(self, indices: Any) -> np.ndarray:
        """Return ``indices`` as an ``(n, 2)`` int64 array, raising if any lies outside the grid.

        Raises
        ------
        InputError
            If the array is not ``(n, 2)``, holds non-integers, or an index is outside the grid.
        """
        arr = np.asarray(indices)
        if arr.size == 0:
            return np.empty((0, 2), dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"grid indices must be an (n, 2) array of (iy, ix); got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InputError("grid indices must be integers")
        arr = arr.astype(np.int64)
        bad = (arr < 0).any(axis=1) | (arr[:, 0] >= self.shape[0]) | (arr[:, 1] >= self.shape[1])
        if bad.any():
            first = arr[np.argmax(bad)]
            raise InputError(
                f"{int(bad.sum())} grid indices lie outside the {self.shape[0]}x{self.shape[1]} grid "
                f"(first: {tuple(int(v) for v in first)})"
            )
        return arr

    def to_position(self, indices: Any) -> np.ndarray:
        """Physical ``(y, x)`` positions of grid indices, as an ``(n, 2)`` float array."""
        idx = self.check_indices(indices)
        return np.asarray(self.origin) + idx * np.asarray(self.pixel_size)

    def to_index(self, positions: Any) -> np.ndarray:
        """Nearest grid indices of physical ``(y, x)`` positions, as an ``(n, 2)`` int array.

        Raises
        ------
        InputError
            If a position is not finite or falls more than half a pixel outside the grid.
        """
        pos = np.asarray(positions, dtype=float)
        if pos.size == 0:
            return np.empty((0, 2), dtype=np.int64)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise InputError(f"positions must be an (n, 2) array of (y, x); got shape {pos.shape}")
        if not np.all(np.isfinite(pos)):
            raise InputError("positions must be finite numbers")
        idx = np.rint((pos - np.asarray(self.origin)) / np.asarray(self.pixel_size)).astype(np.int64)
        return self.check_indices(idx)

    def ravel(self, indices: Any) -> np.ndarray:
        """Flat (row-major) pixel numbers of grid indices."""
        idx = self.check_indices(indices)
        return idx[:, 0] * self.shape[1] + idx[:, 1]

    def unravel(self, flat: Any) -> np.ndarray:
        """Grid indices ``(n, 2)`` of flat (row-major) pixel numbers."""
        flat = np.asarray(flat, dtype=np.int64).ravel()
        return np.stack(np.divmod(flat, self.shape[1]), axis=1)

    def to_attrs(self) -> dict[str, Any]:
        """A JSON-ready description, the inverse of :meth:`from_attrs`."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> ScanGrid:
        """Rebuild a grid from :meth:`to_attrs` output."""
        return cls(
            shape=tuple(attrs["shape"]),
            pixel_size=tuple(attrs.get("pixel_size", (1.0, 1.0))),
            origin=tuple(attrs.get("origin", (0.0, 0.0))),
            units=attrs.get("units", "px"),
        )
