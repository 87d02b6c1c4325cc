"""What fastflow needs from an instrument: the :class:`Instrument` protocol and its :class:`Measurement`.

A scan loop only talks to this protocol, so the same sampler, store and flow drive a simulated
instrument (:class:`fastflow.instruments.simulated.SimulatedInstrument`: an image as the sample, with noise
and a stage-timing model) and, later, a real one through EPICS. An instrument

- owns a :class:`~fastflow.grid.ScanGrid` that maps the grid indices a sampler proposes to stage positions;
- measures a batch of grid indices *in the order given* (the order is the route) and reports, per point,
  the values of each channel, the physical position actually reached and when the point finished;
- keeps running totals of acquisition time and stage travel, so scans can be compared by cost, not only by
  the number of points;
- describes itself as a JSON-ready dict for the scan's provenance.

Errors: an index outside the grid raises :class:`~fastflow.errors.InputError` before anything moves; a
failure of the hardware (or of its simulation) raises :class:`~fastflow.errors.InstrumentError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid


@dataclass(frozen=True)
class Measurement:
    """The result of measuring a batch of points, one row per point in acquisition order.

    Attributes
    ----------
    values : numpy.ndarray
        ``(n, channels)`` float64 measured values.
    positions : numpy.ndarray
        ``(n, 2)`` float64 physical ``(y, x)`` positions actually reached, in the grid's units.
    times : numpy.ndarray
        ``(n,)`` float64 seconds since the instrument started at which each point finished.
    """

    values: np.ndarray
    positions: np.ndarray
    times: np.ndarray

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        positions = np.asarray(self.positions, dtype=np.float64)
        times = np.asarray(self.times, dtype=np.float64)
        if values.ndim != 2:
            raise InputError(f"measurement values must be (n, channels); got shape {values.shape}")
        n = values.shape[0]
        if positions.shape != (n, 2):
            raise InputError(f"measurement positions must be ({n}, 2); got shape {positions.shape}")
        if times.shape != (n,):
            raise InputError(f"measurement times must be ({n},); got shape {times.shape}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "times", times)

    def __len__(self) -> int:
        return self.values.shape[0]

    @classmethod
    def empty(cls, n_channels: int = 1) -> Measurement:
        """A measurement of zero points with ``n_channels`` channels."""
        return cls(np.empty((0, n_channels)), np.empty((0, 2)), np.empty(0))


@runtime_checkable
class Instrument(Protocol):
    """What a scan loop needs from an instrument (simulated or real).

    Implementations may provide the four attributes as plain attributes or as read-only properties.
    """

    @property
    def grid(self) -> ScanGrid:
        """The scan grid: pixel indices <-> physical stage positions."""
        ...

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the measured channels, one per column of :attr:`Measurement.values`."""
        ...

    @property
    def elapsed(self) -> float:
        """Acquisition time so far in seconds (moves, settling and dwell)."""
        ...

    @property
    def path_length(self) -> float:
        """Stage travel so far, Euclidean, in the grid's physical units."""
        ...

    def measure(self, indices: Any) -> Measurement:
        """Visit the ``(n, 2)`` grid indices in the given order and measure each; ``n`` may be 0.

        Raises
        ------
        InputError
            If an index lies outside the grid (nothing is measured and the stage does not move).
        InstrumentError
            If the instrument fails while measuring.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the instrument and its settings, for provenance."""
        ...
