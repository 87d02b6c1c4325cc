"""Cost-aware FAST on an instrument that flies: every batch a tour of line segments along the fast axis.

On a fly-scan instrument (its :class:`~fastflow.timing.TimeModel` has ``raster="fly"``) a pixel flown along
a line costs its dwell, while a point costs a move, a settle and a dwell: tens of pixels' worth. Points,
however well chosen, then lose to a flown raster. This sampler keeps FAST's ERD and selection score and
measures segments (:mod:`fastflow.segments`) instead of points:

- **The lattice, flown**: the fill's lattice of the target coverage is made of rows of every ``kx``-th
  pixel (``kx`` the integer nearest to ``1 / sqrt(coverage)``, so that a row is one segment at equal steps).
- **Initial scan**: every ``initial_every``-th row of that lattice (a third of the target coverage by
  default), flown in serpentine order.
- **Each batch a tour of row segments**: from where the stage is, the next segment is the window of free
  pixels of one row, of a length from :data:`LENGTHS` (capped by the pixels left in the batch) and a step
  from :data:`STEPS`, whose summed selection score per second is highest, the seconds being the time
  model's move from the stage, the settle, and the flight of its pixels with ramps and the line overhead
  (:meth:`TimeModel.fly_durations <fastflow.timing.TimeModel.fly_durations>`). A pixel's score counts
  less next to its neighbours in the segment, as FAST's diversity discounts around a point, with
  :data:`SEGMENT_DIVERSITY` times its width: contiguous lines where measurements are dense, every few
  pixels where they are sparse. The segment is entered at its nearer end. Around each chosen segment the
  scores of the rows above and below are discounted too, so that a batch does not stack segments on one
  edge.
- **Fill and dense samples**: FAST's payoff learning sets the share of fill, taken as the next lines of the
  lattice in serpentine order (a whole line at least, else carried to the next batch); once the fill share is one half or more (lattices, shot noise) every batch continues the sweep,
  and the scan measures like the flown raster of its target coverage. Until the sweep is over, segments
  chosen by score keep off the lattice's lines, so that each line stays one segment.
- A batch holds at least one row's worth of pixels (:attr:`min_batch`): each segment pays a settle and a
  line overhead, which short batches would not amortise.

Where the instrument cannot fly, or is dwell-bound, :func:`~fastflow.sampling.slads.make_fast_sampler`
makes another sampler (see there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.sampling.costaware import SWEEP_SHARE, CostAwareFastSampler, serpentine
from fastflow.sampling.slads import _RESCORE_DRIFT
from fastflow.timing import TimeModel

#: Segment lengths (pixels) a batch chooses from; the row's width is always a candidate too.
LENGTHS = (8, 16, 32, 64, 128, 256, 512)
#: Width of the discount of a pixel next to its neighbours in a segment, as a share of FAST's diversity
#: width there (its distance to the nearest measurement): 0.5 reached lower errors per second than 0.125,
#: 0.25 and 1 on flakes and a 6 px lattice under ``xray-nanoprobe-fly`` (issue 15's note).
SEGMENT_DIVERSITY = 0.5
#: Steps (pixels between a segment's pixels) a batch chooses from: 1 is a contiguous line, more a row of a
#: sub-raster (steps of 8, 12 and 16 were offered too: none of 140 segments of a flakes scan to 20 % under
#: ``xray-nanoprobe-fly`` took one).
STEPS = (1, 2, 3, 4, 6)


class FlyingFastSampler(CostAwareFastSampler):
    """FAST measuring row segments on a fly-scan instrument; see the module docstring.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    cost : TimeModel
        The instrument's time model; it must fly (``raster="fly"``).
    initial_every : int
        The initial scan flies every ``initial_every``-th row of the lattice.
    **options
        Those of :class:`~fastflow.sampling.costaware.CostAwareFastSampler`.
    """

    def __init__(self, grid: ScanGrid, cost: TimeModel, *, initial_every: int = 3, **options: Any) -> None:
        super().__init__(grid, cost, **options)
        if self.cost.raster != "fly":
            raise InputError(f"the flying sampler needs a time model that flies; {self.cost.name!r} steps")
        if isinstance(initial_every, bool) or not isinstance(initial_every, (int, np.integer)) or initial_every < 1:
            raise InputError(f"initial_every must be a positive integer; got {initial_every!r}")
        self.initial_every = int(initial_every)
        ny, nx = grid.shape
        # the lattice of the target coverage, flown: rows of every kx-th pixel (an integer step, so that a row
        # is one segment), as many rows as the target coverage needs
        kx = max(1, int(round(1.0 / np.sqrt(self.target_coverage))))
        cols = np.arange(kx // 2, nx, kx)
        n_rows = int(np.clip(round(self.target_coverage * grid.size / len(cols)), 1, ny))
        rows = np.floor((np.arange(n_rows) + 0.5) * ny / n_rows).astype(np.int64)
        self._sweep, self._sweep_pos = serpentine((rows[:, None] * nx + cols[None, :]).ravel(), nx), 0
        self._line_ends = np.r_[np.flatnonzero(np.diff(self._sweep // nx)) + 1, len(self._sweep)]
        self._on_lattice[:] = False
        self._on_lattice[self._sweep] = True
        self._spacing = float(min(ny / n_rows, kx))
        self._lattice_row = len(cols)
        self._lattice_rows = np.zeros(ny, dtype=bool)
        self._lattice_rows[rows] = True
        first = rows[(self.initial_every - 1) // 2::self.initial_every]
        self._initial = serpentine((first[:, None] * nx + cols[None, :]).ravel(), nx)
        self.min_batch = nx

    def params(self) -> dict[str, Any]:
        return {**super().params(), "segments": "rows", "initial_every": self.initial_every}

    def _propose(self, n: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not self.adaptive:
            return super()._propose(n)
        if self.proximity and abs(self._width() / self._score_width - 1) > _RESCORE_DRIFT:
            self._rescore(self.field.unmeasured(), new_width=True)
        sweeping = self.fill_share >= SWEEP_SHARE
        want = (1.0 if sweeping else self.fill_share) * n + self._fill_carry
        n_fill = min(n, int(want))
        if n_fill < min(self._lattice_row, n) and not sweeping:
            n_fill = 0                                     # too few for a line of the lattice: carried
        self._fill_carry = want - n_fill
        filled = self._sweep_rows(n_fill)
        self._block(filled)
        start = self._xy(filled[-1:])[0] if len(filled) else self._stage
        chosen, segments = self._segments(n - len(filled), start)
        picked = np.concatenate([filled, chosen])
        self._kind[chosen], self._kind[filled] = 0, 1
        self._block(chosen)                                # the fill is blocked already
        record = {"phase": "adaptive", "erd_max": float(self.erd.max()), "n_fill": int(len(filled)),
                  "fill_share": self.fill_share, "sweeping": sweeping,
                  "segments": [[int(k), int(step)] for k, step in segments]}
        return self._routed(self.grid.unravel(picked), record, route=False)

    def _sweep_rows(self, n: int) -> np.ndarray:
        """The free pixels of the next lines of the lattice, in serpentine order: whole lines while they fit in
        ``n`` pixels (a line is one flown segment; splitting it would pay a second run-up and line overhead),
        the start of a line only when not even one fits. Unlike the point-wise fill, pixels next to a
        measurement are kept: on the line they cost one dwell, and leaving them out would split it."""
        out: list[np.ndarray] = []
        need = n
        while need > 0 and self._sweep_pos < len(self._sweep):
            pos = self._sweep_pos
            end = int(self._line_ends[np.searchsorted(self._line_ends, pos, side="right")])
            line = self._sweep[pos:end]
            free = line[np.isfinite(self._score[self._pad(line)])]    # measured ones too close would break it
            if len(free) > need and out:
                break
            take = free[:need]
            self._sweep_pos = end if len(take) == len(free) else pos + int(np.flatnonzero(line == take[-1])[0]) + 1
            out.append(take)
            need -= len(take)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def _segments(self, n: int, start: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Up to ``n`` free pixels as a tour of row segments from ``start`` (``(y, x)`` in pixels), and each
        segment's number of pixels and step."""
        ny, nx = self.grid.shape
        n = min(n, self.remaining)
        score = self._score.reshape(self._padded)[:ny, :nx].astype(np.float64)
        free = np.isfinite(score)
        if self._sweep_pos < len(self._sweep) and free[~self._lattice_rows].any():
            free[self._lattice_rows] = False     # the lines the sweep will fly stay whole (one segment each)
        value = np.where(free, np.maximum(score, 0.0), 0.0)
        near = SEGMENT_DIVERSITY * self.diversity * np.maximum(self.field.features[:, 2].astype(np.float64), 1.0)
        near = near.reshape(ny, nx)
        dx = self._scale[1]
        width = max(self._score_width or self._width(), 1.0)
        here = np.asarray(start, dtype=np.float64).copy()
        yx = np.stack(np.divmod(np.arange(ny * nx), nx), axis=1).astype(np.float64)
        out: list[np.ndarray] = []
        lengths: list[tuple[int, int]] = []
        left = n
        while left > 0 and free.any():
            # the move from the stage to every pixel; a window is entered at its nearer end, or straight
            # across when the stage is above or below it (move times grow with the distance along x)
            to = self.cost.move_times((yx - here) * self._scale).reshape(ny, nx)
            hx = int(np.clip(round(here[1]), 0, nx - 1))
            best: tuple[float, int, int, int, int] | None = None          # (rate, row, start, step, length)
            for step in STEPS:
                if step > 1 and step >= nx:
                    break
                # a pixel's worth next to its neighbours in the segment, as FAST's diversity discounts it
                worth = value * -np.expm1(-(step * step) / (2.0 * near * near)) if self.diversity else value
                csum, cfree = _strided_cumsum(worth, step), _strided_cumsum(free.astype(np.float64), step)
                for length in sorted({min(v, left) for v in (*LENGTHS, nx)}):
                    span = (length - 1) * step
                    if span >= nx:
                        continue
                    m = nx - span                                   # first pixels x0 = 0 .. m - 1
                    total = csum[:, span + step:span + step + m] - csum[:, :m]
                    ok = (cfree[:, span + step:span + step + m] - cfree[:, :m]) > length - 0.5
                    if not ok.any():
                        continue
                    x0 = np.arange(m)
                    move = np.minimum(to[:, :m], to[:, span:span + m])
                    across = (x0 <= hx) & (hx <= x0 + span)
                    move[:, across] = to[:, hx:hx + 1]
                    flight = (float(self.cost.fly_durations((0.0, step * dx), length).sum()) if length > 1
                              else self.cost.dwell)
                    rate = np.where(ok, total / (move + self.cost.settle + flight), -np.inf)
                    k = int(np.argmax(rate))
                    if best is None or rate.flat[k] > best[0]:
                        best = (float(rate.flat[k]), *divmod(k, m), step, length)
            if best is None or best[0] <= 0:
                break
            _, y, a, step, length = best
            xs = a + step * np.arange(length)
            if abs(here[1] - xs[-1]) < abs(here[1] - xs[0]):
                xs = xs[::-1]                                  # enter at the nearer end
            out.append(y * nx + xs)
            lengths.append((length, step))
            left -= length
            free[y, xs] = False
            value[y, xs] = 0.0
            lo, hi = max(int(xs.min()) - int(2 * width), 0), min(int(xs.max()) + int(2 * width) + 1, nx)
            rows = np.arange(max(y - int(3 * width), 0), min(y + int(3 * width) + 1, ny))
            value[rows, lo:hi] *= -np.expm1(-((rows - y) ** 2)[:, None] / (2.0 * width**2))
            here = np.array([float(y), float(xs[-1])])
        picked = np.concatenate(out) if out else np.empty(0, dtype=np.int64)
        return picked, lengths


def _strided_cumsum(a: np.ndarray, step: int) -> np.ndarray:
    """``c`` with ``c[:, x + step] = a[:, x] + c[:, x]`` and ``c[:, :step] = 0``: a window of pixels
    ``x0, x0 + step, ..., x0 + (L - 1) * step`` sums to ``c[:, x0 + L * step] - c[:, x0]``."""
    ny, nx = a.shape
    width = -(-nx // step) * step
    padded = np.zeros((ny, width + step))
    padded[:, step:step + nx] = a
    return np.cumsum(padded.reshape(ny, -1, step), axis=1).reshape(ny, -1)
