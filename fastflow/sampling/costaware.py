"""Cost-aware FAST: choose by expected reduction in distortion per second of acquisition, route included.

Point-wise FAST (:class:`~fastflow.sampling.slads.FastSampler`) spreads every batch over the whole field: on
an instrument whose stage is slow next to its dwell (the travel-bound regime, :meth:`TimeModel.costs
<fastflow.timing.TimeModel.costs>`) each point then costs tens of raster pixels of travel, and the scan saves
points but loses time. This sampler keeps FAST's ERD, fill and payoff machinery and changes how a batch is
put together, with the instrument's :class:`~fastflow.timing.TimeModel` inside the decision:

- **Initial scan** in serpentine order (row by row, every other row reversed), so it costs what a coarse
  raster costs.
- **A tour, not a set**: a batch is toured inside one region, the block of 3x3 tiles (32 px) worth the most
  score per second of a batch spent there (the move from the stage included). From where the stage is,
  each next point is the candidate of highest ``score / seconds**3``, ``score`` FAST's selection score (ERD
  with its proximity discount, lowered around the points already chosen for the batch, as FAST's
  diversity does) and ``seconds`` the time model's cost of reaching and measuring it from the previous
  point. The cube (not the plain ratio) was chosen by measurement: it keeps the tour local enough that a
  slow stage follows edges and measures coherent regions, at about point-wise FAST's error per point.
- **Fill picks near the tour**: the share of fill picks FAST learns from its payoff is taken from the
  interlaced lattice's pixels closest to the tour (not from wherever the lattice's order stands).
- **Dense samples become a raster**: once FAST trusts the ERD less than a regular pattern (fill share of one
  half or more: a lattice, shot noise), the fill picks sweep the target lattice in serpentine order from the
  stage, and the ERD picks are toured around the swept pixels: the scan measures like the raster of its
  target coverage.
- Where travel is cheap (a dwell-bound instrument) point-wise FAST is the cost-aware choice, and
  :func:`~fastflow.sampling.slads.make_fast_sampler` makes that instead of this sampler.
- The batch is visited along a short route (:func:`fastflow.route.order_route`) from the stage; the sampler
  is ``ordered`` (the scan loop keeps its order) and knows where the stage ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.route import order_route
from fastflow.sampling.interlaced import interlaced_pattern
from fastflow.sampling.slads import _COVER, _RESCORE_DRIFT, _TILE, FastSampler
from fastflow.segments import batch_durations
from fastflow.timing import TimeModel

#: Tiles (of 32 px) on each side of a region's central tile: a batch is toured inside one region.
WINDOW = 1
#: Exponent of the seconds in a tour's ``score / seconds**TOUR_ALPHA``: 3 reached point-wise FAST's error
#: at 20 % coverage sooner than 1, 2 or 4 on flakes and coins under the demo instrument (issue 15's note).
TOUR_ALPHA = 3.0
#: Fill share from which the sampler sweeps the lattice (FAST then snaps all its ERD picks onto it too).
SWEEP_SHARE = 0.5


def serpentine(flat: np.ndarray, nx: int) -> np.ndarray:
    """Grid pixel numbers ``flat`` sorted row by row, every other row (of those present) right to left."""
    y, x = np.divmod(flat, nx)
    rows, rank = np.unique(y, return_inverse=True)
    direction = np.where(rank % 2 == 0, x, -x)
    return flat[np.lexsort((direction, y))]


class CostAwareFastSampler(FastSampler):
    """FAST choosing by ERD per second of the instrument's time model; see the module docstring.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    cost : TimeModel
        The instrument's time model (expressed on ``grid`` here).
    window : int
        Tiles of 32 px on each side of the central tile of a region (a batch is toured in one region).
    **options
        Those of :class:`~fastflow.sampling.slads.FastSampler`.
    """

    ordered = True     # batches come routed from the stage position

    def __init__(self, grid: ScanGrid, cost: TimeModel, *, window: int = WINDOW, **options: Any) -> None:
        super().__init__(grid, **options)
        if not isinstance(cost, TimeModel):
            raise InputError(f"cost must be a fastflow TimeModel; got {type(cost).__name__}")
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
            raise InputError(f"window must be an integer number of tiles >= 0; got {window!r}")
        self.cost, self.window = cost.for_grid(grid), int(window)
        ny, nx = grid.shape
        self._initial = serpentine(self._initial, nx)
        n_lattice = max(len(self._initial), round(self.target_coverage * grid.size))
        lattice = grid.ravel(interlaced_pattern(grid.shape, n_lattice))
        self._sweep = serpentine(lattice, nx)
        self._sweep_pos = 0
        self._on_lattice = np.zeros(grid.size, dtype=bool)
        self._on_lattice[lattice] = True
        rows, cols = self._axes
        self._spacing = float(min(ny / max(len(rows), 1), nx / max(len(cols), 1)))
        self._stage = np.zeros(2)            # (y, x) in pixels: where the instrument starts (pixel (0, 0))
        self._scale = np.asarray(grid.pixel_size, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "cost": self.cost.to_attrs(), "window": self.window}

    def _observe(self, indices: np.ndarray, values: np.ndarray) -> dict[str, Any]:
        if self.n_pending == 0 and len(indices):      # nothing planned beyond: the stage is at the last point
            self._stage = indices[-1].astype(np.float64)   # (so a replayed, resumed scan continues from there)
        return super()._observe(indices, values)

    # -- proposals --------------------------------------------------------------------------------
    def _propose(self, n: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not self.adaptive:                            # the initial scan, in serpentine order
            rest = self._initial[~self.is_taken(self._initial)]
            if len(rest) or self.n_pending or not self._initial_complete():
                return self._routed(self.grid.unravel(rest[:n]), {"phase": "initial"}, route=False)
            self._start()                                # a region took the initial scan's last pixels
        if self.proximity and abs(self._width() / self._score_width - 1) > _RESCORE_DRIFT:
            self._rescore(self.field.unmeasured(), new_width=True)
        want = self.fill_share * n + self._fill_carry
        n_fill = min(n, int(want))
        self._fill_carry = want - n_fill
        sweeping = self.fill_share >= SWEEP_SHARE
        if sweeping:
            filled = self._sweep_fill(n_fill)
            self._block(filled)
            chosen = self._snap(self._tour(n - len(filled), near=filled))
            chosen = chosen[~np.isin(chosen, filled)]     # a pick snapped onto a swept pixel
        else:
            chosen = self._snap(self._tour(n - n_fill))
            self._block(chosen)
            filled = self._near_fill(n_fill, chosen)
        if len(chosen) + len(filled) < n:                 # one kind ran short (the very end of a scan)
            self._block(np.concatenate([chosen, filled]))
            chosen = np.concatenate([chosen, self._tour(n - len(chosen) - len(filled))])
        picked = np.concatenate([chosen, filled])
        self._kind[chosen], self._kind[filled] = 0, 1
        self._block(picked)                                # pending until told
        record = {"phase": "adaptive", "erd_max": float(self.erd.max()), "n_fill": int(len(filled)),
                  "fill_share": self.fill_share, "sweeping": sweeping}
        return self._routed(self.grid.unravel(picked), record, route=True)

    def _routed(self, indices: np.ndarray, record: dict[str, Any], *, route: bool) -> tuple[np.ndarray, dict[str, Any]]:
        """The batch in visiting order from the stage (a short route, or as given), and the stage moved to its end."""
        if len(indices) == 0:
            return indices, record
        if route:
            indices = indices[order_route(indices * self._scale, self._stage * self._scale)]
        start = np.asarray(self.grid.origin, dtype=np.float64) + self._stage * self._scale
        record["planned_s"] = float(batch_durations(indices, self.cost, self.grid, start).sum())
        self._stage = indices[-1].astype(np.float64)
        return indices, record

    def _block(self, flat: np.ndarray) -> None:
        """Take pixels out of the candidates of this batch (chosen, or pending until told)."""
        self._score[self._pad(flat)] = -np.inf
        self._set_dist(self._pad(flat), -np.inf)

    def _tour(self, n: int, near: np.ndarray | None = None) -> np.ndarray:
        """Up to ``n`` pixels, each the best ``score / seconds`` from the one before: from the best region, or
        (``near``, the pixels a sweep takes) from around those pixels, so the batch stays where the sweep is."""
        n = min(n, self.remaining)
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        cand = self._region(n) if near is None or len(near) == 0 else self._around(near, n)
        s = np.maximum(self._score[self._pad(cand)].astype(np.float64), 0.0)
        if len(cand) == 0:
            return np.empty(0, dtype=np.int64)
        pos = self._xy(cand)
        width2 = 2.0 * (self.diversity * np.maximum(self.field.features[cand, 2].astype(np.float64), 1.0)) ** 2
        here = self._stage.copy()
        picks: list[int] = []
        free = np.ones(len(cand), dtype=bool)
        for _ in range(min(n, len(cand))):
            seconds = self.cost.durations((pos - here) * self._scale)
            gain = np.where(free, s / seconds ** TOUR_ALPHA, -np.inf)
            i = int(np.argmax(gain))
            if not free[i]:
                break
            picks.append(i)
            free[i] = False
            if self.diversity:
                s *= -np.expm1(-((pos - pos[i]) ** 2).sum(axis=1) / width2[i])
            here = pos[i]
        return cand[np.asarray(picks, dtype=np.int64)]

    def _region(self, n: int) -> np.ndarray:
        """Free pixels of the block of tiles worth the most score per second of a batch of ``n`` spent there.

        A block is ``(2 * window + 1)**2`` tiles of 32 px around a tile; its worth is the sum of its positive
        scores; its time is the move from the stage to its nearest pixel plus ``n`` points at the current
        mean spacing of the measurements. A block with too few free pixels grows until it has ``4 n``.
        """
        (py, px), w, t = self._padded, self.window, _TILE
        nty, ntx = py // t, px // t
        sc = self._score.reshape(nty, t, ntx, t)
        value = np.where(np.isfinite(sc), np.maximum(sc, 0.0), 0.0).sum(axis=(1, 3), dtype=np.float64)
        count = np.isfinite(sc).sum(axis=(1, 3))
        k = 2 * w + 1
        pad = ((w, w), (w, w))
        csum = np.pad(value, pad).cumsum(0).cumsum(1)
        ccnt = np.pad(count, pad).cumsum(0).cumsum(1)

        def box(c: np.ndarray) -> np.ndarray:
            c = np.pad(c, ((1, 0), (1, 0)))
            return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]

        worth, free = box(csum), box(ccnt)
        ty, tx = np.mgrid[0:nty, 0:ntx]
        y0, y1 = np.maximum(ty - w, 0) * t, np.minimum(ty + w + 1, nty) * t - 1
        x0, x1 = np.maximum(tx - w, 0) * t, np.minimum(tx + w + 1, ntx) * t - 1
        sy, sx = self._stage
        dy = np.maximum(np.maximum(y0 - sy, sy - y1), 0.0)
        dx = np.maximum(np.maximum(x0 - sx, sx - x1), 0.0)
        travel = self.cost.move_times(np.column_stack([dy.ravel(), dx.ravel()]) * self._scale).reshape(nty, ntx)
        spacing = 1.0 / np.sqrt(max(self.coverage, self.initial_coverage, 1.0 / self.grid.size))
        local = n * float(self.cost.durations([[0.0, spacing * self._scale[1]]])[0])
        rate = np.where(free >= min(n, self.remaining), worth / (travel + local), -np.inf)
        if not np.isfinite(rate).any():
            rate = worth / (travel + local)
        best = int(np.argmax(rate))
        by, bx = divmod(best, ntx)
        ny, nx = self.grid.shape
        grow = 0
        while True:
            r = w + grow
            ys = np.arange(max(by - r, 0) * t, min((by + r + 1) * t, ny))
            xs = np.arange(max(bx - r, 0) * t, min((bx + r + 1) * t, nx))
            flat = (ys[:, None] * nx + xs[None, :]).ravel()
            flat = flat[np.isfinite(self._score[self._pad(flat)])]
            if len(flat) >= min(4 * n, self.remaining) or (len(ys) >= ny and len(xs) >= nx):
                return flat
            grow += 1

    def _around(self, anchors: np.ndarray, n: int) -> np.ndarray:
        """Free pixels within one tile of the box around ``anchors`` (grid pixel numbers); the best region
        instead if fewer than ``n`` are free there."""
        flat = self._box(self._xy(anchors), _TILE)
        flat = flat[np.isfinite(self._score[self._pad(flat)])]
        return flat if len(flat) >= n else self._region(n)

    def _box(self, pos: np.ndarray, margin: int) -> np.ndarray:
        """Grid pixel numbers of the box around positions ``pos`` (``(n, 2)``), widened by ``margin`` pixels."""
        (ny, nx) = self.grid.shape
        lo = np.maximum(pos.min(axis=0).astype(int) - margin, 0)
        hi = np.minimum(pos.max(axis=0).astype(int) + margin + 1, (ny, nx))
        ys, xs = np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1])
        return (ys[:, None] * nx + xs[None, :]).ravel()

    def _uncovered(self, flat: np.ndarray) -> np.ndarray:
        """Lattice pixels of ``flat`` that are free and that no measurement covers."""
        d = self.field.features[flat, 2].astype(np.float64)
        return flat[(d >= _COVER * self._spacing) & np.isfinite(self._score[self._pad(flat)])]

    def _near_fill(self, n: int, tour: np.ndarray) -> np.ndarray:
        """Up to ``n`` uncovered lattice pixels closest to the tour (from near the stage if it is empty)."""
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        anchors = self._xy(tour) if len(tour) else self._stage[None, :]
        box = self._box(anchors, int(np.ceil(2 * self._spacing)) + 1)
        free = self._uncovered(box[self._on_lattice[box]])
        if len(free) < n:                                  # none near: continue the sweep instead
            return np.concatenate([free, self._sweep_fill(n - len(free), exclude=free)])
        d = cdist(self._xy(free), anchors, "chebyshev").min(axis=1)
        return free[np.lexsort((free, d))[:n]]

    def _sweep_fill(self, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """The next ``n`` uncovered pixels of the target lattice in serpentine order."""
        out: list[np.ndarray] = []
        need = n
        while need > 0 and self._sweep_pos < len(self._sweep):
            block = self._sweep[self._sweep_pos:self._sweep_pos + max(4 * need, 64)]
            free = self._uncovered(block)
            if exclude is not None and len(exclude):
                free = free[~np.isin(free, exclude)]
            take = free[:need]
            self._sweep_pos += int(np.flatnonzero(block == take[-1])[0]) + 1 if len(take) == need else len(block)
            out.append(take)
            need -= len(take)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)
