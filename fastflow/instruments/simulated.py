"""A simulated instrument: an image is the sample, with optional counting or detector noise and a stage model.

Timing model
------------
The stage starts at ``start`` (default: the centre of grid pixel ``(0, 0)``, where a raster scan would
begin). Points are visited in the order given, and each costs what the instrument's
:class:`~fastflow.timing.TimeModel` says (``timing``: a preset, a fitted or a hand-written model). Without one,
``dwell``, ``speed`` and ``settle`` make the default model: for each point, with ``(dy, dx)`` the move from
the previous stage position in the grid's physical units,

- travel time ``max(|dy|, |dx|) / speed``: both axes move at the same time at constant ``speed`` (units
  per second), no acceleration, so the slower axis sets the time;
- plus ``settle`` seconds if the stage moved at all (waiting for vibrations to die down);
- plus ``dwell`` seconds of acquisition at the point.

On a model that can fly (``raster="fly"``), the straight runs of a batch (pixels at equal steps: rows,
columns, every k-th pixel) are flown in one motion where that is faster than stepping
(:mod:`fastflow.segments`); :meth:`SimulatedInstrument.measure_segments` flies the segments it is given.

:attr:`SimulatedInstrument.elapsed` accumulates these times, :attr:`SimulatedInstrument.path_length` the
Euclidean length ``hypot(dy, dx)`` of the moves, and :attr:`Measurement.times` holds the cumulative time at
which each point finished.

Noise model
-----------
``noise`` is ``None``/``"none"``, ``"poisson:PEAK"`` or ``"gaussian:SIGMA"``:

- ``poisson:PEAK``: shot noise. The image (which must be ``>= 0``) is scaled so that its maximum is
  ``PEAK`` expected counts; a measurement draws Poisson counts and scales them back to image units, so the
  mean is the true value and the relative noise at the brightest pixel is ``1 / sqrt(PEAK)``.
- ``gaussian:SIGMA``: additive detector noise with standard deviation ``SIGMA`` times the image's value
  range ``max - min`` (or ``SIGMA`` itself for a constant image, whose range is zero).

All noise comes from one ``numpy.random.Generator`` seeded with ``seed``; the same seed and the same
sequence of :meth:`~SimulatedInstrument.measure` calls give the same values. With ``seed=None`` a seed is
drawn and recorded in :meth:`~SimulatedInstrument.describe`, so the run can still be reproduced.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.images import check_image
from fastflow.instruments.base import Measurement
from fastflow.segments import Segment, as_segments, charge_flights, place, with_flights
from fastflow.timing import TimeModel

NOISE_KINDS = ("poisson", "gaussian")
_MAX_PEAK = 1e15  # numpy's Poisson sampler refuses larger means


def parse_noise(spec: Any) -> tuple[str, float] | None:
    """Parse a noise specification into ``(kind, parameter)``, or ``None`` for no noise.

    Parameters
    ----------
    spec : str, tuple or None
        ``None``, ``"none"`` or ``""`` for no noise; ``"poisson:PEAK"`` with ``PEAK > 0`` expected counts at
        the brightest pixel; ``"gaussian:SIGMA"`` with ``SIGMA >= 0`` as a fraction of the image's value
        range. Case and surrounding spaces are ignored. A ``(kind, parameter)`` tuple is accepted too.

    Returns
    -------
    tuple of (str, float) or None

    Raises
    ------
    InputError
        For an unknown kind, a missing or non-numeric parameter, or a parameter out of range.

    Examples
    --------
    >>> parse_noise("Poisson:100")
    ('poisson', 100.0)
    >>> parse_noise("none") is None
    True
    """
    if spec is None:
        return None
    if isinstance(spec, tuple) and len(spec) == 2:
        kind, raw = str(spec[0]).strip().lower(), spec[1]
    elif isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("", "none"):
            return None
        kind, sep, raw = (part.strip() for part in text.partition(":"))
        if not sep or not raw:
            raise InputError(f"noise {spec!r} needs a parameter: use 'poisson:PEAK' or 'gaussian:SIGMA'")
    else:
        raise InputError(f"noise must be a string like 'poisson:100' or 'gaussian:0.05'; got {spec!r}")
    if kind not in NOISE_KINDS:
        raise InputError(
            f"unknown noise kind {kind!r} in {spec!r}; use 'none', 'poisson:PEAK' or 'gaussian:SIGMA'"
        )
    return kind, _noise_parameter(kind, raw, spec)


def _noise_parameter(kind: str, raw: Any, spec: Any) -> float:
    """Check the numeric parameter of a noise specification."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"noise parameter in {spec!r} is not a number") from None
    if kind == "poisson" and not (0 < value <= _MAX_PEAK):
        raise InputError(f"poisson noise needs 0 < PEAK <= {_MAX_PEAK:g} expected counts; got {spec!r}")
    if kind == "gaussian" and not (np.isfinite(value) and value >= 0):
        raise InputError(f"gaussian noise needs a finite SIGMA >= 0; got {spec!r}")
    return value


def format_noise(noise: tuple[str, float] | None) -> str | None:
    """The canonical string of a parsed noise specification (inverse of :func:`parse_noise`)."""
    if noise is None:
        return None
    kind, value = noise
    return f"{kind}:{np.format_float_positional(value, trim='-')}"


class SimulatedInstrument:
    """An instrument whose sample is a known image; implements :class:`~fastflow.instruments.Instrument`.

    Parameters
    ----------
    image : array_like
        The sample, 2-D; checked with :func:`fastflow.images.check_image`. Measuring pixel ``(iy, ix)``
        returns ``image[iy, ix]`` (plus noise).
    grid : ScanGrid, optional
        Scan grid; its shape must equal the image's. Default ``ScanGrid(image.shape)`` (units of pixels).
    noise : str, tuple or None, optional
        ``None``/``"none"``, ``"poisson:PEAK"`` or ``"gaussian:SIGMA"``; see :func:`parse_noise` and the
        module docstring.
    dwell : float, optional
        Acquisition time per point in seconds.
    speed : float, optional
        Stage speed per axis in grid units per second.
    settle : float, optional
        Settling time in seconds after every move of non-zero length.
    timing : TimeModel, optional
        The instrument's time model (:mod:`fastflow.timing`), expressed on ``grid`` with
        :meth:`~fastflow.timing.TimeModel.for_grid`; when given, ``dwell``, ``speed`` and ``settle`` are ignored.
    seed : int, optional
        Seed of the noise generator; ``None`` draws one (reported by :meth:`describe`).
    start : tuple of float, optional
        Physical ``(y, x)`` stage position before the first point; default the centre of pixel ``(0, 0)``.
    channel : str, optional
        Name of the single measured channel.

    Raises
    ------
    InputError
        For an invalid image, a grid of another shape, a bad noise specification (or Poisson noise on an
        image with negative values), or negative/non-finite timing parameters.

    Examples
    --------
    >>> inst = SimulatedInstrument([[0.0, 1.0], [2.0, 3.0]], dwell=1.0, speed=1.0, settle=0.0)
    >>> m = inst.measure([[0, 1], [1, 1]])
    >>> m.values[:, 0], m.times, inst.path_length
    (array([1., 3.]), array([2., 4.]), 2.0)
    """

    def __init__(
        self,
        image: Any,
        grid: ScanGrid | None = None,
        *,
        noise: Any = None,
        dwell: float = 0.01,
        speed: float = 100.0,
        settle: float = 0.005,
        timing: TimeModel | None = None,
        seed: int | None = None,
        start: Any = None,
        channel: str = "value",
    ) -> None:
        self._image = check_image(image, name="sample image")
        self._image.setflags(write=False)
        self._grid = self._check_grid(grid, self._image.shape)
        self._noise = parse_noise(noise)
        self._noise_scale = self._noise_scale_for(self._noise, self._image)
        if timing is None:
            timing = TimeModel(dwell=dwell, speed=speed, settle=settle, name="simulated")
        elif not isinstance(timing, TimeModel):
            raise InputError(f"timing must be a fastflow TimeModel; got {type(timing).__name__}")
        self._timing = timing.for_grid(self._grid)
        self._seed = _check_seed(seed)
        self._rng = np.random.default_rng(self._seed)
        self._start = self._check_start(start)
        if not isinstance(channel, str) or not channel:
            raise InputError(f"channel must be a non-empty string; got {channel!r}")
        self._channels = (channel,)
        self._position = self._start.copy()
        self._elapsed = 0.0
        self._path_length = 0.0
        self._n_points = 0

    # ------------------------------------------------------------------------------------- validation

    @staticmethod
    def _check_grid(grid: ScanGrid | None, shape: tuple[int, ...]) -> ScanGrid:
        if grid is None:
            return ScanGrid(shape)
        if not isinstance(grid, ScanGrid):
            raise InputError(f"grid must be a fastflow ScanGrid; got {type(grid).__name__}")
        if tuple(grid.shape) != tuple(shape):
            raise InputError(
                f"grid shape {tuple(grid.shape)} does not match the sample image shape {tuple(shape)}"
            )
        return grid

    @staticmethod
    def _noise_scale_for(noise: tuple[str, float] | None, image: np.ndarray) -> float:
        """Counts per image unit (Poisson) or noise standard deviation in image units (Gaussian)."""
        if noise is None:
            return 0.0
        kind, value = noise
        if kind == "poisson":
            if image.min() < 0:
                raise InputError(
                    f"poisson noise needs a non-negative image; the sample's minimum is {image.min():g} "
                    "(shift or clip it, or use gaussian noise)"
                )
            peak = image.max()
            return value / peak if peak > 0 else 0.0
        value_range = float(image.max() - image.min())
        return value * (value_range if value_range > 0 else 1.0)

    def _check_start(self, start: Any) -> np.ndarray:
        if start is None:
            return np.asarray(self._grid.origin, dtype=np.float64)
        pos = np.asarray(start, dtype=np.float64) if _is_numeric(start) else None
        if pos is None or pos.shape != (2,) or not np.all(np.isfinite(pos)):
            raise InputError(f"start must be a finite physical (y, x) position; got {start!r}")
        return pos

    # ------------------------------------------------------------------------------------- protocol

    @property
    def grid(self) -> ScanGrid:
        """The scan grid."""
        return self._grid

    @property
    def channels(self) -> tuple[str, ...]:
        """The single channel's name."""
        return self._channels

    @property
    def elapsed(self) -> float:
        """Acquisition time so far in seconds."""
        return self._elapsed

    @property
    def path_length(self) -> float:
        """Euclidean stage travel so far, in the grid's units."""
        return self._path_length

    @property
    def position(self) -> np.ndarray:
        """Current physical ``(y, x)`` stage position (a copy)."""
        return self._position.copy()

    @property
    def n_points(self) -> int:
        """Number of points measured so far."""
        return self._n_points

    @property
    def image(self) -> np.ndarray:
        """The noise-free sample (read-only), e.g. the ground truth for metrics."""
        return self._image

    @property
    def noise(self) -> tuple[str, float] | None:
        """The parsed noise specification."""
        return self._noise

    @property
    def time_model(self) -> TimeModel:
        """The time model every point is charged with, in the grid's units."""
        return self._timing

    @property
    def dwell(self) -> float:
        """Acquisition time per point in seconds."""
        return self._timing.dwell

    @property
    def speed(self) -> float:
        """Stage speed in grid units per second (along x, where the axes differ)."""
        return self._timing.speed[1]

    @property
    def settle(self) -> float:
        """Settling time after each move in seconds."""
        return self._timing.settle

    @property
    def seed(self) -> int:
        """Seed of the noise generator (drawn at construction if none was given)."""
        return self._seed

    def measure(self, indices: Any) -> Measurement:
        """Visit grid ``indices`` in order and measure each; see the module docstring for the models.

        Parameters
        ----------
        indices : array_like
            ``(n, 2)`` integer grid indices ``(iy, ix)``; ``n`` may be 0.

        Returns
        -------
        Measurement
            Values ``(n, 1)``, reached positions ``(n, 2)`` and finishing times ``(n,)``.

        Raises
        ------
        InputError
            If an index is outside the grid; the instrument's state (time, position, noise stream) is then
            unchanged.
        """
        idx = self._grid.check_indices(indices)
        return self._visit(idx, None)

    @property
    def can_fly(self) -> bool:
        """True if the instrument measures segments in one motion (its time model has ``raster="fly"``)."""
        return self._timing.raster == "fly"

    def measure_segments(self, segments: Any) -> tuple[np.ndarray, Measurement]:
        """Measure line segments in visiting order, each flown in one continuous motion where the instrument
        can fly (:attr:`can_fly`); on a step-scan model their pixels are measured as points.

        Parameters
        ----------
        segments : sequence
            :class:`~fastflow.segments.Segment` objects or ``(first, last)`` pairs of grid indices (every
            pixel between them is measured, :func:`~fastflow.segments.make_segment`).

        Returns
        -------
        indices, Measurement
            The ``(n, 2)`` pixels measured, in order, and their values, positions and times.

        Raises
        ------
        InputError
            If a segment is malformed or leaves the grid (nothing is measured then).
        """
        idx, placed = place(as_segments(segments))
        idx = self._grid.check_indices(idx)
        return idx, self._visit(idx, placed if self.can_fly else [])

    def _visit(self, idx: np.ndarray, flights: list[Segment] | None) -> Measurement:
        """Measure checked ``idx`` in order; ``flights``: the segments flown (None: the runs that fly faster)."""
        if len(idx) == 0:
            return Measurement.empty(len(self._channels))
        positions = self._grid.to_position(idx)
        steps = np.diff(np.vstack([self._position, positions]), axis=0)
        stepped = self._timing.durations(steps)
        if flights is None:
            durations = with_flights(stepped, idx, self._timing, self._grid)   # fly models fly runs
        else:
            durations = charge_flights(stepped, flights, self._timing, self._grid)
        times = self._elapsed + np.cumsum(durations)
        values = self._sample(idx)
        self._elapsed = float(times[-1])
        self._path_length += float(np.hypot(steps[:, 0], steps[:, 1]).sum())
        self._position = positions[-1].copy()
        self._n_points += len(idx)
        return Measurement(values[:, None], positions, times)

    def _sample(self, idx: np.ndarray) -> np.ndarray:
        """Noisy values of the image at ``idx``, shape ``(n,)``."""
        clean = self._image[idx[:, 0], idx[:, 1]]
        if self._noise is None:
            return clean.copy()
        if self._noise[0] == "poisson":
            if self._noise_scale == 0.0:  # an all-zero image: no counts anywhere
                return clean.copy()
            return self._rng.poisson(clean * self._noise_scale) / self._noise_scale
        return clean + self._rng.normal(0.0, self._noise_scale, clean.shape)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings: kind, noise, timing, seed, shape, channels, start and grid."""
        return {
            "kind": "simulated",
            "noise": format_noise(self._noise),
            "dwell": self.dwell,
            "speed": self.speed,
            "settle": self.settle,
            "time_model": self._timing.to_attrs(),
            "seed": self.seed,
            "shape": list(self._image.shape),
            "channels": list(self._channels),
            "start": self._start.tolist(),
            "grid": self._grid.to_attrs(),
        }

    def __repr__(self) -> str:
        noise = format_noise(self._noise) or "none"
        return (
            f"SimulatedInstrument(shape={self._image.shape}, noise={noise!r}, dwell={self.dwell}, "
            f"speed={self.speed}, settle={self.settle}, seed={self.seed})"
        )


def _check_seed(seed: Any) -> int:
    """Return ``seed`` as a non-negative int, drawing a fresh one for ``None``."""
    if seed is None:
        return secrets.randbelow(2**63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer or None; got {seed!r}")
    return int(seed)


def _is_numeric(value: Any) -> bool:
    """True if ``value`` converts to a float array without error."""
    try:
        np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True
