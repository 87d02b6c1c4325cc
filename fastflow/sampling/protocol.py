"""The ask/tell protocol every sampler speaks, and the bookkeeping they share.

A scan loop is::

    while not sampler.done:
        indices = sampler.ask(batch_size)          # (m, 2) grid indices, m <= batch_size, in visiting order
        values = instrument.measure(indices)       # whatever the instrument returns
        store.append(...)                          # persist first: nothing acquired is ever lost
        sampler.tell(indices, values)              # then let the sampler learn from it

``ask`` never proposes a pixel that was already measured or is already pending, and never more pixels than
remain. ``tell`` accepts any in-grid indices, not only the asked ones (a real stage may end up on a
neighbouring pixel), so a sampler can also be restored from a stored scan by telling it every stored point.
Each ``ask`` leaves a small JSON-ready record of what was decided in :attr:`BaseSampler.last_record` and each
``tell`` returns one, for provenance.

Regions: :meth:`BaseSampler.restrict` takes pixels out of play (outside a region of interest, inside a no-go
region; :mod:`fastflow.regions`), at the start or mid-scan. ``ask`` never proposes them afterwards, and
``coverage`` and ``remaining`` count the allowed pixels only.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid


@runtime_checkable
class Sampler(Protocol):
    """What a scan loop needs from a sampler."""

    name: str
    grid: ScanGrid

    def ask(self, n: int) -> np.ndarray:
        """Return up to ``n`` unmeasured grid indices, ``(m, 2)`` int64, in acquisition order."""
        ...

    def tell(self, indices: Any, values: Any) -> dict[str, Any]:
        """Report measured ``values`` at ``indices``; return a record of what was learnt."""
        ...

    @property
    def done(self) -> bool:
        """True when the sampler has nothing more to propose."""
        ...

    def params(self) -> dict[str, Any]:
        """JSON-ready parameters that, with the grid, rebuild this sampler."""
        ...


def check_coverage(value: Any, what: str = "coverage") -> float:
    """Return ``value`` (a number, or a numeric string from a command line) as a float in ``(0, 1]``.

    Raises
    ------
    InputError
        Naming ``what``, if the value is not a number or lies outside ``(0, 1]`` (NaN included).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise InputError(f"{what} must be a number in (0, 1]; got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise InputError(f"{what} must be a number in (0, 1]; got {value!r}") from None
    if not 0.0 < f <= 1.0:  # also rejects NaN
        raise InputError(f"{what} must be in (0, 1] (a fraction of the grid's pixels); got {value!r}")
    return f


def as_values(values: Any, n: int) -> np.ndarray:
    """Check measured values and return them as an ``(n, channels)`` float64 array.

    Raises
    ------
    InputError
        If the count does not match ``n``, the array has more than two dimensions, or a value is NaN/inf.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise InputError(f"expected values for {n} points as (n,) or (n, channels); got shape {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{bad} of {n} measured values are NaN or infinite; check the detector")
    return arr


class BaseSampler:
    """Shared state for samplers: the measured mask, pending points, validation and records.

    Subclasses implement :meth:`_propose` (and optionally :meth:`_observe`).

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    """

    name = "base"
    ordered = True
    """True when ``ask`` returns points in a sensible visiting order (a trajectory); False when a batch is a
    set that the scan loop should visit along a short route (:func:`fastflow.route.order_route`)."""
    family = "static"
    """``static`` (a pattern fixed in advance) or ``adaptive`` (chosen from the values): which calibration of
    the error estimate applies (:mod:`fastflow.errorest`)."""
    min_batch = 1
    """The fewest points a batch should ask for: scan loops ask for ``max(batch_size, min_batch)`` (a sampler
    of flown segments asks for a row's worth, which amortises each segment's settle and line overhead)."""

    def __init__(self, grid: ScanGrid) -> None:
        if not isinstance(grid, ScanGrid):
            raise InputError(f"grid must be a ScanGrid; got {type(grid).__name__}")
        self.grid = grid
        self.measured = np.zeros(grid.shape, dtype=bool)
        self._pending = np.zeros(grid.shape, dtype=bool)
        self.allowed = np.ones(grid.shape, dtype=bool)
        self.n_allowed = grid.size
        self.n_measured = 0
        self.n_inside = 0
        self.n_pending = 0
        self.n_told = 0
        self.last_record: dict[str, Any] = {}

    # -- protocol ---------------------------------------------------------------------------------
    @property
    def coverage(self) -> float:
        """Fraction of the allowed pixels measured so far (of the grid's pixels, without regions)."""
        return self.n_inside / self.n_allowed

    @property
    def remaining(self) -> int:
        """Allowed pixels neither measured nor pending."""
        return self.n_allowed - self.n_inside - self.n_pending

    def is_taken(self, flat: np.ndarray) -> np.ndarray:
        """Whether pixels (row-major numbers ``flat``) are measured, pending or not allowed."""
        return self.measured.ravel()[flat] | self._pending.ravel()[flat] | ~self.allowed.ravel()[flat]

    def restrict(self, forbidden: Any) -> np.ndarray:
        """Never propose the pixels of the boolean ``forbidden`` mask again (a region of interest's outside,
        a no-go region); returns the pending pixels it released, ``(m, 2)``, which the caller must not
        measure (drop them from a planned batch).

        Measured pixels stay measured, but count towards the coverage only while allowed.

        Raises
        ------
        InputError
            If the mask does not have the grid's shape, or would leave no pixel allowed.
        """
        mask = np.asarray(forbidden)
        if mask.shape != self.grid.shape or mask.dtype != bool:
            raise InputError(f"a region mask must be boolean with the grid's shape {self.grid.shape}; "
                             f"got {mask.dtype} {mask.shape}")
        new = mask & self.allowed
        if not new.any():
            return np.empty((0, 2), dtype=np.int64)
        if not (self.allowed & ~mask).any():
            raise InputError("this region would leave no pixel to measure")
        released = np.flatnonzero((new & self._pending).ravel())
        self._pending.ravel()[released] = False
        self.n_pending -= len(released)
        self.allowed &= ~mask
        self.n_allowed = int(self.allowed.sum())
        self.n_inside = int((self.measured & self.allowed).sum())
        self._forbid(np.flatnonzero(new.ravel()))
        return self.grid.unravel(released)

    @property
    def done(self) -> bool:
        return self.remaining == 0 or self._exhausted()

    def ask(self, n: int) -> np.ndarray:
        """Return up to ``n`` new grid indices in acquisition order (empty when done).

        Raises
        ------
        InputError
            If ``n`` is not a positive integer.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"batch size must be a positive integer; got {n!r}")
        n = min(int(n), self.remaining)
        if n == 0 or self._exhausted():
            self.last_record = {"sampler": self.name, "n": 0}
            return np.empty((0, 2), dtype=np.int64)
        indices, record = self._propose(n)
        indices = self.grid.check_indices(indices)
        flat = self.grid.ravel(indices)
        if self.is_taken(flat).any() or len(np.unique(flat)) != len(flat) or len(flat) > n:
            raise RuntimeError(f"{self.name} proposed measured, pending or duplicate pixels (a sampler bug)")
        self._pending.ravel()[flat] = True
        self.n_pending += len(flat)
        self.last_record = {"sampler": self.name, "n": int(len(indices)), **record}
        return indices

    def tell(self, indices: Any, values: Any) -> dict[str, Any]:
        """Record measurements; returns a JSON-ready record.

        Raises
        ------
        InputError
            If indices are outside the grid, or values do not match them or are not finite.
        """
        idx = self.grid.check_indices(indices)
        vals = as_values(values, len(idx))
        flat = self.grid.ravel(idx)
        new = ~self.measured.ravel()[flat]
        fresh = np.unique(flat[new])
        was_pending = np.unique(flat[self._pending.ravel()[flat]])
        self.measured.ravel()[fresh] = True
        self._pending.ravel()[was_pending] = False
        self.n_measured += len(fresh)
        self.n_inside += int(self.allowed.ravel()[fresh].sum())
        self.n_pending -= len(was_pending)
        self.n_told += len(idx)
        record = {"told": int(len(idx)), "new_pixels": int(len(fresh))}
        record.update(self._observe(idx, vals))
        return record

    def params(self) -> dict[str, Any]:
        return {"name": self.name}

    # -- for subclasses ---------------------------------------------------------------------------
    def _propose(self, n: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(indices, record)`` with at most ``n`` free pixels in acquisition order."""
        raise NotImplementedError

    def _observe(self, indices: np.ndarray, values: np.ndarray) -> dict[str, Any]:
        """Learn from new measurements (``values`` is ``(n, channels)``); return extra record fields."""
        return {}

    def _exhausted(self) -> bool:
        """True when the sampler's own plan is complete even though pixels remain."""
        return False

    def _forbid(self, flat: np.ndarray) -> None:
        """Pixels ``flat`` were just taken out of play (:meth:`restrict`); update any own bookkeeping."""
