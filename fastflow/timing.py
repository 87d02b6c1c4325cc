"""Acquisition time as a model: what it costs an instrument to go from one point to the next.

A :class:`TimeModel` describes a scanning instrument's timing in a few numbers:

- ``dwell``: seconds of acquisition per point (per pixel of a fly line);
- ``speed`` and ``acceleration``: per axis ``(y, x)``, in the model's ``units`` per second (per second
  squared); each axis follows a trapezoidal velocity profile (accelerate, cruise, decelerate; a triangle when
  the move is too short to reach full speed), both axes move at the same time and the slower axis sets the
  move time. ``acceleration=inf`` means none (constant speed from the start);
- ``settle``: seconds of waiting after every move of a step scan;
- ``line_overhead``: seconds per raster line (arming a fly-scan trigger, starting a line, writing it out);
- ``raster``: how the instrument measures a full raster, ``"step"`` (move, settle, dwell at every pixel) or
  ``"fly"`` (continuous motion along each line, one dwell per pixel), with ``flyback`` (return to the start of
  each line, as a beam scan or a fly scan does) or a serpentine (every other line reversed).

The time to visit a point is ``move + settle (if it moved) + dwell``; :meth:`TimeModel.durations` gives it for
a route, :meth:`TimeModel.raster_time` the time of a full raster of a grid on the same instrument, against
which a scan's saving is reported. Presets for common instrument classes ship in
``fastflow/data/time-presets.json`` (:func:`presets`, :func:`load_time_model`); :func:`fit_time_model` fits a
model to the timestamps of a stored run (what :class:`~fastflow.instruments.epics.EpicsInstrument` measures).

Units: a model's lengths are in its ``units``. A preset for a physical instrument is written in physical
units (``um``, ``nm``) with a typical ``pixel`` size; :meth:`TimeModel.for_grid` expresses it in a grid's
units (a grid in ``px`` uses the preset's ``pixel``). A model with ``units=None`` is in the units of
whatever grid it is used with (the simulated instrument's ``dwell``/``speed``/``settle`` are of this kind).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid

PRESETS_FILE = "time-presets.json"
RASTER_KINDS = ("step", "fly")
#: Length units a model may be written in, in micrometres.
LENGTH_UNITS = {"nm": 1e-3, "um": 1.0, "µm": 1.0, "micron": 1.0, "mm": 1e3, "m": 1e6}
#: Distance (pixels) of the jump whose cost :meth:`TimeModel.costs` compares with a raster step.
JUMP_PX = 50


def _number(value: Any, name: str, *, positive: bool = False, infinite: bool = False) -> float:
    """``value`` as a float >= 0 (> 0 if ``positive``; ``inf`` allowed if ``infinite``), else InputError."""
    if value is None and infinite:
        return math.inf
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number; got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {value!r}") from None
    if math.isnan(number) or number < 0 or (positive and number == 0) or (math.isinf(number) and not infinite):
        bound = "> 0" if positive else ">= 0"
        raise InputError(f"{name} must be a finite number {bound}{' (or null for none)' if infinite else ''}; got {value!r}")
    return number


def _pair(value: Any, name: str, *, infinite: bool = False) -> tuple[float, float]:
    """A per-axis ``(y, x)`` pair from one number or two."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise InputError(f"{name} must be one number or two (y, x); got {value!r}")
    return tuple(_number(v, f"{name} ({axis})", positive=True, infinite=infinite)  # type: ignore[return-value]
                 for v, axis in zip(items, "yx"))


def axis_move_time(distance: Any, speed: float, acceleration: float) -> np.ndarray:
    """Seconds to move ``distance`` (>= 0) from rest to rest with a trapezoidal velocity profile.

    With ``acceleration = inf`` the move runs at ``speed`` throughout (``distance / speed``). Otherwise it
    accelerates to ``speed``, cruises and decelerates (``distance / speed + speed / acceleration``), or, when
    the move is shorter than ``speed**2 / acceleration``, accelerates to half way and decelerates
    (``2 * sqrt(distance / acceleration)``).

    Examples
    --------
    >>> float(axis_move_time(10.0, speed=5.0, acceleration=math.inf))
    2.0
    >>> float(axis_move_time(10.0, speed=5.0, acceleration=5.0))    # 1 s up, 1 s cruise, 1 s down
    3.0
    >>> float(axis_move_time(1.0, speed=5.0, acceleration=4.0))     # a triangle: 0.5 s up, 0.5 s down
    1.0
    """
    d = np.abs(np.asarray(distance, dtype=np.float64))
    if math.isinf(acceleration):
        return d / speed
    cruise = d >= speed * speed / acceleration
    return np.where(cruise, d / speed + speed / acceleration, 2.0 * np.sqrt(d / acceleration))


@dataclass(frozen=True)
class TimeModel:
    """An instrument's acquisition time model; see the module docstring.

    Parameters
    ----------
    dwell : float
        Seconds of acquisition per point (per pixel along a fly line).
    speed : float or (float, float)
        Top speed per axis ``(y, x)``, units per second.
    acceleration : float or (float, float), optional
        Per axis, units per second squared; ``inf`` (or ``None`` in a file) for none.
    settle : float
        Seconds after every move of a step scan.
    line_overhead : float
        Seconds per line of a raster (trigger arming, line start, writing the line out), on top of moves and
        dwells; points measured one by one do not pay it.
    raster : {"step", "fly"}
        How a full raster is measured on this instrument.
    flyback : bool
        A raster returns to the start of each line (True) or reverses every other line (False).
    units : str, optional
        Length unit of ``speed`` and ``acceleration``; ``None``: the units of the grid it is used with.
    pixel : float, optional
        Typical pixel size in ``units``, used to express the model on a grid in pixels.
    name, source : str
        A name for the model and where its numbers come from.

    Examples
    --------
    >>> m = TimeModel(dwell=0.01, speed=100.0, settle=0.005)
    >>> round(m.raster_time(ScanGrid((400, 600))))        # 600 x 400 x (10 ms + 5 ms + 10 ms of travel)
    6000
    """

    dwell: float = 0.01
    speed: tuple[float, float] = (100.0, 100.0)
    acceleration: tuple[float, float] = (math.inf, math.inf)
    settle: float = 0.005
    line_overhead: float = 0.0
    raster: str = "step"
    flyback: bool = False
    units: str | None = None
    pixel: float | None = None
    name: str = "custom"
    source: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "dwell", _number(self.dwell, "dwell"))
        set_(self, "speed", _pair(self.speed, "speed"))
        set_(self, "acceleration", _pair(self.acceleration, "acceleration", infinite=True))
        set_(self, "settle", _number(self.settle, "settle"))
        set_(self, "line_overhead", _number(self.line_overhead, "line overhead"))
        if self.raster not in RASTER_KINDS:
            raise InputError(f"raster must be one of {', '.join(RASTER_KINDS)}; got {self.raster!r}")
        if not isinstance(self.flyback, bool):
            raise InputError(f"flyback must be true or false; got {self.flyback!r}")
        if self.units is not None and not (isinstance(self.units, str) and self.units):
            raise InputError(f"units must be a non-empty string or null; got {self.units!r}")
        if self.pixel is not None:
            set_(self, "pixel", _number(self.pixel, "pixel", positive=True))
        if not isinstance(self.name, str) or not isinstance(self.source, str):
            raise InputError("a time model's name and source must be strings")

    # -- moves and routes ---------------------------------------------------------------------------
    def move_times(self, steps: Any) -> np.ndarray:
        """Seconds for each ``(dy, dx)`` move of an ``(n, 2)`` array (both axes at once, the slower one sets it)."""
        steps = np.asarray(steps, dtype=np.float64).reshape(-1, 2)
        ty = axis_move_time(steps[:, 0], self.speed[0], self.acceleration[0])
        tx = axis_move_time(steps[:, 1], self.speed[1], self.acceleration[1])
        return np.maximum(ty, tx)

    def durations(self, steps: Any) -> np.ndarray:
        """Seconds spent on each point of a step route given its moves: move, settle if moved, dwell."""
        steps = np.asarray(steps, dtype=np.float64).reshape(-1, 2)
        moved = np.any(steps != 0, axis=1)
        return self.move_times(steps) + self.settle * moved + self.dwell

    def route_time(self, positions: Any, start: Any) -> float:
        """Seconds to measure ``positions`` (``(n, 2)``, in order) point by point from ``start``."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        steps = np.diff(np.vstack([np.asarray(start, dtype=np.float64).reshape(1, 2), positions]), axis=0)
        return float(self.durations(steps).sum())

    def line_time(self, length: float, n_pixels: int) -> float:
        """Seconds to fly one line of ``n_pixels`` pixels over ``length`` along x, from rest to rest.

        The stage runs at the speed that gives every pixel its dwell (capped at the top speed, which then
        shortens the dwell), with run-up and run-down ramps, plus the line overhead.
        """
        if n_pixels <= 0:
            return 0.0
        pitch = length / max(n_pixels - 1, 1)
        speed = min(self.speed[1], pitch / self.dwell) if self.dwell > 0 else self.speed[1]
        sweep = max(n_pixels * self.dwell, length / self.speed[1])
        ramps = 0.0 if math.isinf(self.acceleration[1]) else 2.0 * speed / self.acceleration[1]
        return sweep + ramps + self.line_overhead

    def fly_durations(self, step: Any, n_pixels: int) -> np.ndarray:
        """Seconds spent on each pixel of a straight line flown from its first pixel (where the stage is).

        The line has ``n_pixels`` pixels ``step`` (``(dy, dx)``, the model's units) apart. As in
        :meth:`line_time`, the stage flies at the speed that gives every pixel its dwell, capped by the axes'
        top speeds along that direction; the run-up ramp is charged to the first pixel, the run-down ramp and
        the line overhead to the last. Along x the durations add up to :meth:`line_time`.
        """
        n = int(n_pixels)
        if n <= 0:
            return np.zeros(0)
        step = np.abs(np.asarray(step, dtype=np.float64).reshape(2))
        pitch = float(np.hypot(*step))
        if pitch == 0:
            raise InputError("a flown line needs a non-zero step between its pixels")
        unit = step / pitch
        top = min(float(v / u) for v, u in zip(self.speed, unit, strict=True) if u > 0)
        accel = min(float(a / u) for a, u in zip(self.acceleration, unit, strict=True) if u > 0)
        speed = min(top, pitch / self.dwell) if self.dwell > 0 else top
        sweep = max(n * self.dwell, (n - 1) * pitch / top)
        ramp = 0.0 if math.isinf(accel) else speed / accel
        out = np.full(n, sweep / n)
        out[0] += ramp
        out[-1] += ramp + self.line_overhead
        return out

    def raster_time(self, grid: ScanGrid) -> float:
        """Seconds for a full raster of ``grid`` (every pixel, line by line along x) on this instrument.

        Step raster: every pixel is a move of one pitch, a settle and a dwell, and every line costs the line
        overhead and a move to the next line. Fly raster: every line is flown (:meth:`line_time`) and the
        stage returns to the next line's start (``flyback``) or steps down one line (serpentine), and settles.
        The model must be in the grid's units (:meth:`for_grid`).
        """
        (ny, nx), (dy, dx) = grid.shape, grid.pixel_size
        width = (nx - 1) * dx
        turn = (width, dy) if self.flyback else (0.0, dy)
        between = float(self.move_times([[turn[1], turn[0]]])[0]) + self.settle
        if self.raster == "fly":
            return ny * self.line_time(width, nx) + (ny - 1) * between
        step = float(self.move_times([[0.0, dx]])[0]) + self.settle
        return ny * (nx * self.dwell + (nx - 1) * step + self.line_overhead) + (ny - 1) * between

    # -- units and costs ----------------------------------------------------------------------------
    def for_grid(self, grid: ScanGrid) -> TimeModel:
        """This model with its lengths in ``grid``'s units (itself when the units already agree).

        Raises
        ------
        InputError
            If the units cannot be converted (an unknown unit, or a grid in pixels with no ``pixel`` size).
        """
        if self.units is None or self.units == grid.units:
            return dataclasses.replace(self, units=grid.units) if self.units is None else self
        if self.units not in LENGTH_UNITS:
            raise InputError(f"the time model {self.name!r} is in {self.units!r}; known length units: "
                             f"{', '.join(LENGTH_UNITS)}")
        if grid.units == "px":
            if self.pixel is None:
                raise InputError(f"the time model {self.name!r} is in {self.units} and has no typical pixel size: "
                                 "give the scan a physical grid (--pixel-size, --units) or the model a 'pixel'")
            per_unit = self.pixel                    # model units per grid unit
        elif grid.units in LENGTH_UNITS:
            per_unit = LENGTH_UNITS[grid.units] / LENGTH_UNITS[self.units]
        else:
            raise InputError(f"cannot express the time model {self.name!r} ({self.units}) on a grid in "
                             f"{grid.units!r}; use a grid in px or in {', '.join(LENGTH_UNITS)}")
        return dataclasses.replace(
            self, units=grid.units, pixel=None,
            speed=tuple(s / per_unit for s in self.speed),
            acceleration=tuple(a / per_unit for a in self.acceleration),
        )

    def costs(self, grid: ScanGrid) -> dict[str, Any]:
        """What points cost on ``grid`` (the model in its units), to tell in advance which regime a scan is in.

        Returns a raster's seconds per pixel, a point-wise point reached by a one-pitch step and by a jump of
        :data:`JUMP_PX` pixels, ``jump_vs_raster`` (the jump's cost over a raster pixel's), the break-even
        coverage ``1 / jump_vs_raster`` (below it, points that far apart take less time than the full raster),
        the share of a raster's time spent dwelling, and the regime: ``travel-bound`` when such a jump costs
        more than twice a raster pixel, else ``dwell-bound``.
        """
        pitch = min(grid.pixel_size)
        raster = self.raster_time(grid)
        per_pixel = raster / grid.size
        jump = float(self.durations([[0.0, JUMP_PX * pitch]])[0])
        ratio = jump / per_pixel if per_pixel > 0 else math.inf
        return {
            "raster_pixel_s": per_pixel,
            "step_point_s": float(self.durations([[0.0, pitch]])[0]),
            f"jump_{JUMP_PX}px_point_s": jump,
            "jump_vs_raster": ratio,
            "break_even_coverage": min(1.0, 1.0 / ratio) if ratio > 0 else 1.0,
            "raster_dwell_share": grid.size * self.dwell / raster if raster > 0 else 1.0,
            "regime": "travel-bound" if ratio > 2.0 else "dwell-bound",
        }

    # -- files ----------------------------------------------------------------------------------------
    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready fields (infinite accelerations as ``None``); :meth:`from_attrs` reads them back."""
        out = dataclasses.asdict(self)
        out["speed"] = list(self.speed)
        out["acceleration"] = [None if math.isinf(a) else a for a in self.acceleration]
        return out

    @classmethod
    def from_attrs(cls, attrs: Any, name: str | None = None) -> TimeModel:
        """A model from a mapping of its fields; unknown or missing fields are one clear error."""
        if not isinstance(attrs, dict):
            raise InputError(f"a time model must be a mapping of its fields; got {type(attrs).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in attrs.items() if k not in ("description",)}
        unknown = sorted(set(known) - fields)
        if unknown:
            raise InputError(f"unknown time-model field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        missing = [k for k in ("dwell", "speed") if k not in known]
        if missing:
            raise InputError(f"time model {name or attrs.get('name', '')!r} lacks {', '.join(missing)}")
        if name is not None:
            known.setdefault("name", name)
        return cls(**known)


def presets() -> dict[str, dict[str, Any]]:
    """The shipped presets, by name, as written in ``fastflow/data/time-presets.json`` (with descriptions)."""
    text = resources.files("fastflow.data").joinpath(PRESETS_FILE).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def preset(name: str) -> TimeModel:
    """A shipped preset by name; an unknown name is an error listing the known ones."""
    table = presets()
    if name not in table:
        raise InputError(f"unknown time-model preset {name!r}; known: {', '.join(table)}")
    return TimeModel.from_attrs(table[name], name=name)


def load_time_model(spec: str | Path | dict[str, Any] | TimeModel | None) -> TimeModel | None:
    """A time model from a preset name, a JSON file (a model's fields, or a document with a
    ``time_model`` entry as ``fastflow timing fit --out`` writes), a mapping or a model; ``None`` stays None.

    Raises
    ------
    InputError
        For an unknown preset, a missing or unreadable file, or malformed fields (naming them).
    """
    if spec is None or isinstance(spec, TimeModel):
        return spec
    if isinstance(spec, dict):
        return TimeModel.from_attrs(spec.get("time_model", spec))
    text = str(spec).strip()
    if text in presets():
        return preset(text)
    path = Path(text).expanduser()
    if not path.suffix:
        raise InputError(f"unknown time-model preset {text!r}; known: {', '.join(presets())} (or a .json file)")
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"time-model file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"time-model file {path} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"time-model file {path} must hold a JSON object")
    try:
        return TimeModel.from_attrs(doc.get("time_model", doc), name=path.stem)
    except InputError as exc:
        raise InputError(f"time-model file {path}: {exc}") from None


@dataclass(frozen=True)
class TimeFit:
    """A model fitted to a run's timestamps, with how well it explains them (seconds per point)."""

    model: TimeModel
    n_moves: int
    rms_s: float
    median_abs_s: float
    mean_point_s: float

    def to_attrs(self) -> dict[str, Any]:
        """JSON-ready: the model and the fit's figures."""
        return {"time_model": self.model.to_attrs(), "n_moves": self.n_moves, "rms_s": self.rms_s,
                "median_abs_s": self.median_abs_s, "mean_point_s": self.mean_point_s}


MIN_FIT_MOVES = 10


def fit_time_model(positions: Any, times: Any, batch: Any = None, *, dwell: float | None = None,
                   units: str | None = None, raster: str = "step", name: str = "fitted") -> TimeFit:
    """Fit a step-scan time model to measured points: their positions and the times they finished.

    Each point's duration is the time since the previous point of the same batch (the first point of a batch
    waits for the sampler, so it is left out). The model is ``overhead + move(distance)``, ``distance`` the
    larger axis move, with one speed and acceleration for both axes, fitted by robust least squares
    (``scipy.optimize.least_squares``, soft-L1 loss, so a few slow points do not bend it); a model without
    acceleration is kept when the ramp does not explain the data better. Timestamps cannot tell dwell from
    settling: give the known ``dwell`` and the rest of the overhead becomes ``settle``; without it the whole
    overhead is reported as dwell.

    Parameters
    ----------
    positions : (n, 2) array
        Physical positions in acquisition order.
    times : (n,) array
        Seconds at which each point finished.
    batch : (n,) array, optional
        Batch numbers; pairs across batches are skipped.
    dwell : float, optional
        The known dwell time.
    units : str, optional
        Units of ``positions`` (recorded in the model).
    raster : {"step", "fly"}
        How the instrument would measure a full raster (the timestamps of a step scan cannot tell).
    name : str
        Name of the fitted model.

    Raises
    ------
    InputError
        With fewer than :data:`MIN_FIT_MOVES` usable moves, or arrays of mismatched shapes.
    """
    from scipy.optimize import least_squares

    pos = np.asarray(positions, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or t.shape != (len(pos),):
        raise InputError(f"fit needs (n, 2) positions and (n,) times; got {pos.shape} and {t.shape}")
    keep = np.ones(max(len(pos) - 1, 0), dtype=bool)
    if batch is not None:
        b = np.asarray(batch)
        if b.shape != t.shape:
            raise InputError(f"batch numbers must be ({len(t)},); got {b.shape}")
        keep &= b[1:] == b[:-1]
    distance = np.abs(np.diff(pos, axis=0)).max(axis=1) if len(pos) > 1 else np.empty(0)
    duration = np.diff(t)
    keep &= np.isfinite(distance) & np.isfinite(duration) & (distance > 0) & (duration > 0)
    d, y = distance[keep], duration[keep]
    if len(d) < MIN_FIT_MOVES:
        raise InputError(f"fitting a time model needs at least {MIN_FIT_MOVES} timed moves within batches; "
                         f"this run has {len(d)}")
    # Linear start: duration = overhead + distance / speed.
    slope, intercept = np.polyfit(d, y, 1) if np.ptp(d) > 0 else (0.0, float(np.median(y)))
    c0 = max(float(intercept), 1e-9)
    v0 = 1.0 / slope if slope > 0 else float(np.max(d) / max(np.median(y), 1e-9)) * 1e3
    scale = float(np.median(y))

    def residual(p: np.ndarray, accel: bool) -> np.ndarray:
        c, v = math.exp(p[0]), math.exp(p[1])
        a = math.exp(p[2]) if accel else math.inf
        return (c + axis_move_time(d, v, a) - y) / scale

    fits = []
    for accel in (False, True):
        p0 = [math.log(c0), math.log(v0)] + ([math.log(v0 * v0 / max(np.median(d), 1e-12))] if accel else [])
        res = least_squares(residual, p0, args=(accel,), loss="soft_l1", f_scale=0.1)
        fits.append((res.cost, accel, res.x))
    (cost_plain, _, p_plain), (cost_accel, _, p_accel) = fits
    accel_pays = cost_accel < 0.95 * cost_plain
    p = p_accel if accel_pays else p_plain
    overhead, speed = math.exp(p[0]), math.exp(p[1])
    acceleration = math.exp(p[2]) if accel_pays else math.inf
    if dwell is not None:
        dwell = _number(dwell, "dwell")
        settle = max(overhead - dwell, 0.0)
    else:
        dwell, settle = overhead, 0.0
    model = TimeModel(dwell=dwell, speed=speed, acceleration=acceleration, settle=settle, raster=raster,
                      units=units, name=name,
                      source=f"fitted to {len(d)} timed moves ({'with' if accel_pays else 'without'} acceleration)")
    err = model.durations(np.column_stack([np.zeros_like(d), d])) - y
    return TimeFit(model=model, n_moves=int(len(d)), rms_s=float(np.sqrt(np.mean(err**2))),
                   median_abs_s=float(np.median(np.abs(err))), mean_point_s=float(np.mean(y)))


def fit_store(store: Any, *, dwell: float | None = None, raster: str = "step") -> TimeFit:
    """:func:`fit_time_model` on the measurements of a :class:`~fastflow.store.ScanStore`."""
    cols = store.point_columns(("y", "x", "time", "batch"))
    positions = np.column_stack([cols["y"], cols["x"]])
    return fit_time_model(positions, cols["time"], cols["batch"], dwell=dwell, units=store.grid.units,
                          raster=raster, name=f"fitted:{store.attrs.get('run_id', Path(store.path).stem)}")
