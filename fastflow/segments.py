"""Line segments measured with continuous motion (fly scans), and how a batch of points is split into them.

A *segment* is a straight run of pixels at equal steps, ``first + i * step`` for ``i < n`` (``step`` an
integer grid vector, e.g. ``(0, 1)`` along a row, ``(0, 3)`` every third pixel, ``(1, 1)`` a diagonal). An
instrument that can fly (its :class:`~fastflow.timing.TimeModel` has ``raster="fly"``) measures a segment
in one continuous motion: a move and a settle to its first pixel, then the line flown at the speed that
gives each pixel its dwell (:meth:`TimeModel.fly_durations <fastflow.timing.TimeModel.fly_durations>`),
with no settle between its pixels. A single pixel is a segment of ``n = 1``: a step-scan point.

A sampler proposes a segment by asking for its pixels in visiting order; :func:`plan_segments` splits an
ordered batch into maximal runs of equal steps and flies those that the model measures faster flown than
stepped. :func:`batch_durations` is what that plan costs, so a sampler that weighs time (cost-aware FAST)
plans with the same numbers as the instrument measures with. An instrument that cannot fly measures
every pixel as a point.

Examples
--------
>>> import numpy as np
>>> from fastflow.timing import TimeModel
>>> fly = TimeModel(dwell=0.01, speed=100.0, settle=0.005, raster="fly")
>>> batch = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [5, 9]])
>>> from fastflow.grid import ScanGrid
>>> [(s.first.tolist(), s.step.tolist(), s.n) for s in plan_segments(batch, fly, ScanGrid((8, 12)))]
[([0, 0], [0, 1], 4), ([5, 9], [0, 0], 1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.timing import TimeModel


@dataclass(frozen=True)
class Segment:
    """``n`` pixels ``first + i * step`` (grid indices), measured in one motion when ``n > 1``.

    ``offset`` is the position of its first pixel in the batch it was planned from.
    """

    first: np.ndarray
    step: np.ndarray
    n: int
    offset: int = 0

    def pixels(self) -> np.ndarray:
        """The ``(n, 2)`` grid indices, in visiting order."""
        return self.first[None, :] + np.arange(self.n)[:, None] * self.step[None, :]


def make_segment(first: Any, last: Any, n: int | None = None) -> Segment:
    """The segment from pixel ``first`` to pixel ``last`` (grid indices, both measured).

    ``n``: number of pixels (default: every pixel on the way along the longer axis, so the step is a unit
    step when the line is a row, a column or a 45-degree diagonal). The step ``(last - first) / (n - 1)``
    must be an integer vector.

    Raises
    ------
    InputError
        If the ends are not integer pairs or the pixels cannot be spaced evenly on the grid.
    """
    a = np.asarray(first)
    b = np.asarray(last)
    if a.shape != (2,) or b.shape != (2,) or not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise InputError(f"a segment's ends must be integer (iy, ix) pairs; got {first!r} and {last!r}")
    span = b - a
    if n is None:
        n = int(np.abs(span).max()) + 1
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"a segment needs at least one pixel; got n={n!r}")
    if n == 1:
        if span.any():
            raise InputError("a one-pixel segment must start and end on the same pixel")
        return Segment(a.astype(np.int64), np.zeros(2, np.int64), 1)
    step, rest = np.divmod(span, n - 1)
    if rest.any():
        raise InputError(f"{n} pixels from {a.tolist()} to {b.tolist()} do not lie on the grid at equal steps")
    return Segment(a.astype(np.int64), step.astype(np.int64), int(n))


def as_segments(segments: Any) -> list[Segment]:
    """``segments`` as a list of :class:`Segment`: each given as one, or as a ``(first, last)`` pair of grid
    indices (:func:`make_segment`)."""
    if isinstance(segments, Segment):
        segments = [segments]
    out = []
    for s in segments:
        if isinstance(s, Segment):
            out.append(s)
        else:
            try:
                first, last = s
            except (TypeError, ValueError):
                raise InputError(f"a segment is a Segment or a (first, last) pair of grid indices; got {s!r}") from None
            out.append(make_segment(first, last))
    return out


def split_runs(indices: np.ndarray) -> list[Segment]:
    """Split an ordered batch into maximal runs of equal, non-zero steps (every pixel in exactly one run).

    A run of two or more pixels is a candidate for flying; the rest are one-pixel segments.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    runs: list[Segment] = []
    i, n = 0, len(idx)
    steps = np.diff(idx, axis=0)
    while i < n:
        j = i
        if i + 1 < n and steps[i].any():
            while j + 1 < n and (steps[j] == steps[i]).all():
                j += 1
        step = steps[i] if j > i else np.zeros(2, np.int64)
        runs.append(Segment(idx[i].copy(), step.copy(), j - i + 1, offset=i))
        i = j + 1
    return runs


def plan_segments(indices: np.ndarray, model: TimeModel, grid: ScanGrid) -> list[Segment]:
    """The segments an instrument with ``model`` (in ``grid``'s units) measures an ordered batch in.

    Runs of equal steps (:func:`split_runs`) are flown when the model can fly (``raster="fly"``) and the
    flight from the run's first pixel is faster than stepping through it; the other pixels are points.
    """
    runs = split_runs(indices)
    scale = np.asarray(grid.pixel_size, dtype=np.float64)
    out: list[Segment] = []
    for r in runs:
        if r.n > 1 and model.raster == "fly":
            step = r.step * scale
            flown = float(model.fly_durations(step, r.n).sum())
            stepped = model.dwell + float(model.durations(np.repeat(step[None], r.n - 1, axis=0)).sum())
            if flown < stepped:
                out.append(r)
                continue
        out.extend(Segment(p, np.zeros(2, np.int64), 1, offset=r.offset + k) for k, p in enumerate(r.pixels()))
    return out


def flown(indices: np.ndarray, model: TimeModel, grid: ScanGrid) -> list[Segment]:
    """The segments of :func:`plan_segments` that are flown (``n > 1``); none on a model that cannot fly."""
    if model.raster != "fly":
        return []
    return [seg for seg in plan_segments(indices, model, grid) if seg.n > 1]


def batch_durations(indices: np.ndarray, model: TimeModel, grid: ScanGrid, start: Any) -> np.ndarray:
    """Seconds spent on each point of an ordered batch from the physical stage position ``start``, as an
    instrument with ``model`` (in ``grid``'s units) measures it (:func:`plan_segments`): a move, a settle
    and the dwell per point, or the flight of a segment."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    if len(idx) == 0:
        return np.zeros(0)
    positions = grid.to_position(idx)
    moves = np.diff(np.vstack([np.asarray(start, dtype=np.float64).reshape(1, 2), positions]), axis=0)
    return with_flights(model.durations(moves), idx, model, grid)


def with_flights(stepped: np.ndarray, indices: np.ndarray, model: TimeModel, grid: ScanGrid) -> np.ndarray:
    """``stepped`` (each point's move, settle and dwell, :meth:`TimeModel.durations`) with the flown runs of
    the batch (:func:`flown`) charged as flights instead: :func:`batch_durations` from moves already known."""
    return charge_flights(stepped, flown(indices, model, grid), model, grid)


def charge_flights(stepped: np.ndarray, segments: list[Segment], model: TimeModel, grid: ScanGrid) -> np.ndarray:
    """``stepped`` with each segment of ``segments`` (``n > 1``, placed in the batch by its ``offset``)
    charged as a flight: the move and settle to its first pixel, then :meth:`TimeModel.fly_durations`."""
    out = np.array(stepped, dtype=np.float64)
    scale = np.asarray(grid.pixel_size, dtype=np.float64)
    for seg in segments:
        if seg.n < 2:
            continue
        o = seg.offset
        fly = model.fly_durations(seg.step * scale, seg.n)
        out[o] = out[o] - model.dwell + fly[0]
        out[o + 1:o + seg.n] = fly[1:]
    return out


def place(segments: list[Segment]) -> tuple[np.ndarray, list[Segment]]:
    """The pixels of ``segments`` one after the other, and the segments with their offsets in that batch."""
    if not segments:
        return np.empty((0, 2), dtype=np.int64), []
    placed, offset = [], 0
    for seg in segments:
        placed.append(Segment(seg.first, seg.step, seg.n, offset=offset))
        offset += seg.n
    return np.concatenate([s.pixels() for s in placed]), placed


def fly_flags(segments: list[Segment], n_points: int) -> np.ndarray:
    """Per point of a batch of ``n_points``: 1 where the stage flies to it from the point before (every pixel
    of a flown segment but its first), 0 where it moves, settles and then acquires."""
    flags = np.zeros(n_points, dtype=np.int64)
    for seg in segments:
        if seg.n > 1:
            flags[seg.offset + 1:seg.offset + seg.n] = 1
    return flags


def segments_from_flags(indices: Any, flags: Any) -> list[Segment]:
    """The flown segments (``n > 1``) of a batch described by :func:`fly_flags`, checked: a flown point must
    follow another point at the same step as the rest of its segment.

    Raises
    ------
    InputError
        If the first point is flagged, the flags and points differ in length, or a segment's steps differ.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    fl = np.asarray(flags).reshape(-1).astype(bool)
    if len(fl) != len(idx):
        raise InputError(f"{len(fl)} fly flags for {len(idx)} points")
    if len(fl) and fl[0]:
        raise InputError("the first point of a batch cannot be flown to: a segment starts with a move")
    out: list[Segment] = []
    i = 0
    while i < len(fl):
        if not fl[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(fl) and fl[j + 1]:
            j += 1
        steps = np.diff(idx[i - 1:j + 1], axis=0)
        if not steps[0].any() or (steps != steps[0]).any():
            raise InputError(f"points {i - 1}..{j} are flagged as one flown segment but are not at equal, "
                             "non-zero steps")
        out.append(Segment(idx[i - 1].copy(), steps[0].copy(), j - i + 2, offset=i - 1))
        i = j + 1
    return out
