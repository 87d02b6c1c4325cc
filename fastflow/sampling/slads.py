"""The FAST / SLADS-Net adaptive sampler: measure where the expected reduction in distortion (ERD) is largest.

Loop (Kandel et al., Nat. Commun. 14, 5501, 2023; Zhang et al., EI 2018; Godaliyadda et al., IEEE TCI 2018):
an initial scan spread evenly over the field (1 % by default: the coarse levels of the interlaced lattice, or
a Halton low-discrepancy pattern as in the paper); then, for every unmeasured pixel, the six SLADS features of
the IDW reconstruction (:mod:`fastflow.erd.features`) go through the ERD model (:mod:`fastflow.erd.model`),
and each batch takes the pixels with the highest ERD. After a batch only the pixels whose neighbourhood
changed are recomputed.

Batch diversity. Taking the top ERD pixels greedily clusters a batch on one edge: the batch is chosen as if
one point at a time were measured, and each chosen pixel discounts the ERD of the candidates around it by
``1 - exp(-d² / (2 w²))`` with ``w = diversity × (distance of the chosen pixel to its nearest measurement)``,
the same neighbourhood that measuring it would inform. An optional ``explore`` share of every batch continues
the low-discrepancy pattern, so sparse regions keep being visited.

Trusting the ERD, measured. On dense or noisy textures (an atomic lattice, shot noise) every region is
equally unpredictable, the ERD mostly ranks noise, and a regular pattern beats it. So each batch is split:
a share of *fill* picks and the rest by ERD. Fill picks follow the interlaced lattice of the scan's target
coverage (:mod:`fastflow.sampling.interlaced`: nested lattices, coarse to fine, that make a raster at the
target and at each quarter of it), skipping lattice pixels that a measurement already covers (closer than
half the lattice spacing); past the target, or with the lattice used up, they are greedy farthest-point
picks (the pixels farthest from every measurement, planned around the batch's other points). After each
batch the sampler compares how wrong the reconstruction was, before measuring, at the two kinds of pick
(``|measured - IDW estimate|``, a discounted mean over recent batches). Their ratio ``r`` (ERD over fill)
sets the fill share of the next batches: ``1 - (r - 1) / (fill_gain - 1)``, clipped to
``[fill_floor, 1 - fill_floor]``. On sparse samples ERD picks find errors many times larger than fill picks
(flakes, coins: ``r`` ~ 10) and the scan stays greedy; where they find no larger errors (``r <= 1``: a
lattice) it turns almost into a regular fill. The floor keeps both kinds of pick measured, so the
comparison stays current as the scan proceeds. In between, the less the ERD is trusted, the more its picks
are pulled onto the finest lattice (:meth:`FastSampler._snap`; all of them from a fill share of one half on):
on a lattice the ERD then only orders the lattice pixels, and the scan ends as the raster of its target
coverage.

Values are put on the declared 0-100 scale by robust percentiles of the initial scan, frozen; if later values
leave that range by more than half of it, the scale is refitted on all values so far and everything is
recomputed once (recorded in the tell record).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from fastflow.erd.features import FeatureField, normalise, value_range
from fastflow.erd.model import ERDModel
from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.sampling.interlaced import interlaced_levels, interlaced_pattern, lattice_axes
from fastflow.sampling.protocol import BaseSampler, check_coverage
from fastflow.sampling.static import halton_pattern

DEFAULT_MODEL = "erd-default.safetensors"
_CANDIDATES_PER_POINT = 20
_MIN_CANDIDATES = 512
_TILE = 32
_FILL_CANDIDATES_PER_POINT = 8
_MIN_FILL_CANDIDATES = 64
"""Fill picks are taken among this many pixels farthest from the measurements (each hole gives a few)."""
_FILL_SLACK = 0.01
"""Pixels: fill candidates may miss pixels farther from the measurements than the last candidate by less."""
_RESCORE_DRIFT = 0.05
"""All scores are recomputed when the proximity width has drifted by more than this fraction."""
_TIE_BONUS = 1e-6
"""ERD bonus per pixel of distance to the nearest measurement: decides between equal ERDs only."""
_PAYOFF_DECAY = 0.8
"""Weight kept by the running prediction-error sums per batch (they remember about five batches)."""
_COVER = 0.5
"""A lattice pixel is covered (the fill skips it) when a measurement lies closer than this fraction of the
spacing of its level."""
INITIAL_PATTERNS = ("interlaced", "halton")


def default_model_path() -> Path:
    """Path of the ERD model shipped inside the package."""
    return Path(str(resources.files("fastflow.data").joinpath(DEFAULT_MODEL)))


def load_model(model: ERDModel | str | Path | None) -> ERDModel:
    """An :class:`ERDModel` from a model, a file path, or ``None`` for the shipped default."""
    if isinstance(model, ERDModel):
        return model
    return ERDModel.load(default_model_path() if model is None else Path(model))


class FastSampler(BaseSampler):
    """Adaptive FAST sampler.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    model : ERDModel, path or None
        The ERD model; ``None`` uses the model shipped with fastflow.
    seed : int
        Seed of the Halton patterns (the initial scan with ``initial="halton"``, the exploration stream).
    initial_coverage : float
        Fraction of pixels of the initial scan (FAST: 1 %).
    initial : {"interlaced", "halton"}
        Initial scan: the coarse levels of the interlaced lattice (regular, and continued by the fill) or a
        Halton low-discrepancy pattern (the paper's choice).
    target_coverage : float
        Coverage the scan is meant to reach (its stop rule): the fill's interlaced lattice is a raster there.
    diversity : float
        Width factor of the ERD discount around points already chosen for a batch (0 = plain top-ERD).
    proximity : float
        Width, in units of the current mean spacing ``1/sqrt(coverage)``, of the discount of pixels close to
        measurements: the score is ``ERD × (1 - exp(-d² / 2w²))`` with ``d`` the distance to the nearest
        measurement (0 = no discount).
    explore : float
        Share of every batch, in [0, 1), taken from the continued low-discrepancy pattern.
    fill : "auto" or float
        Share of every batch (after ``explore``) taken by space-filling picks (greedy farthest-point);
        ``"auto"`` sets it after each batch from the measured payoff of ERD picks against fill picks.
    fill_floor : float
        With ``fill="auto"``: the least share, in [0, 0.5), of each kind of pick (keeps both measured).
    fill_gain : float
        With ``fill="auto"``: the ratio (> 1) of prediction errors, ERD picks over fill picks, from which on
        the fill share is at its floor; at a ratio of 1 or less it is at ``1 - fill_floor``.
    erd_stop : float, optional
        Stop when the total ERD falls below this fraction of its value after the initial scan.
    refresh_every : int
        Recompute all features every this many batches (0 = never: local updates are exact).
    """

    name = "fast"
    ordered = False  # batches are sets: the scan loop orders them along a short route
    family = "adaptive"

    def __init__(
        self,
        grid: ScanGrid,
        model: ERDModel | str | Path | None = None,
        *,
        seed: int = 0,
        initial_coverage: float = 0.01,
        diversity: float = 1.0,
        proximity: float = 1.3,
        explore: float = 0.0,
        erd_stop: float | None = None,
        refresh_every: int = 0,
        fill: float | str = "auto",
        fill_floor: float = 0.05,
        fill_gain: float = 2.0,
        initial: str = "interlaced",
        target_coverage: float = 1.0,
    ) -> None:
        super().__init__(grid)
        self.model = load_model(model)
        self.seed = int(seed)
        self.initial_coverage = check_coverage(initial_coverage, "initial coverage")
        for name, value in (("diversity", diversity), ("proximity", proximity)):
            if not (value >= 0 and math.isfinite(value)):
                raise InputError(f"{name} must be a number >= 0; got {value!r}")
        if initial not in INITIAL_PATTERNS:
            raise InputError(f"initial must be one of {', '.join(INITIAL_PATTERNS)}; got {initial!r}")
        self.initial, self.target_coverage = initial, check_coverage(target_coverage, "target coverage")
        if not 0 <= explore < 1:
            raise InputError(f"explore must be in [0, 1); got {explore!r}")
        if not (fill == "auto" or (isinstance(fill, (int, float)) and not isinstance(fill, bool) and 0 <= fill <= 1)):
            raise InputError(f"fill must be 'auto' or a share in [0, 1]; got {fill!r}")
        if not 0 <= fill_floor < 0.5:
            raise InputError(f"fill_floor must be in [0, 0.5); got {fill_floor!r}")
        if not (fill_gain > 1 and math.isfinite(fill_gain)):
            raise InputError(f"fill_gain must be a number > 1; got {fill_gain!r}")
        if erd_stop is not None and not 0 < erd_stop < 1:
            raise InputError(f"erd_stop must be in (0, 1); got {erd_stop!r}")
        self.diversity, self.explore, self.erd_stop = float(diversity), float(explore), erd_stop
        self.proximity = float(proximity)
        self._score_width = 0.0
        self.refresh_every = int(refresh_every)
        self.fill = fill if fill == "auto" else float(fill)
        self.fill_floor, self.fill_gain = float(fill_floor), float(fill_gain)
        self.fill_share = self.fill_floor if fill == "auto" else float(fill)
        self.payoff_ratio: float | None = None
        self._payoff = np.zeros((2, 2))     # discounted [sum of |error|, count] of ERD picks (0), fill picks (1)
        self._fill_carry = 0.0              # fractional fill pick carried to the next batch
        card = self.model.card
        self.field = FeatureField(grid.shape, k=int(card.get("k", 10)),
                                  density_radius=float(card.get("density_radius", 8.0)))
        n_init = min(grid.size, max(self.field.k + 1, round(self.initial_coverage * grid.size)))
        n_lattice = max(n_init, round(self.target_coverage * grid.size))
        self._levels = interlaced_levels(grid.shape, n_lattice)   # the fill's lattice, one level at a time
        self._axes = lattice_axes(grid.shape, n_lattice)           # its finest level
        self._level: tuple[np.ndarray, float] = (np.empty(0, dtype=np.int64), 0.0)
        self._level_pos = 0
        if initial == "halton":
            self._initial = grid.ravel(halton_pattern(grid.shape, n_init, seed=self.seed))
            self._explore_stream, self._explore_cursor = self._initial, n_init   # exploring continues it
        else:   # the lattice's coarse levels; Halton pixels make up any shortfall of a rounded lattice
            self._initial = grid.ravel(interlaced_pattern(grid.shape, n_lattice, n_init))
            if len(self._initial) < n_init:
                halton = grid.ravel(halton_pattern(grid.shape, n_init, seed=self.seed))
                extra = halton[~np.isin(halton, self._initial)][:n_init - len(self._initial)]
                self._initial = np.concatenate([self._initial, extra])
            self._explore_stream, self._explore_cursor = np.empty(0, dtype=np.int64), 0
        self.erd = np.zeros(grid.size, dtype=np.float32)
        ny, nx = grid.shape
        self._padded = (-(-ny // _TILE) * _TILE, -(-nx // _TILE) * _TILE)
        # selection score on the grid padded to whole tiles (-inf: taken or padding), see _top
        self._score = np.full(self._padded[0] * self._padded[1], -np.inf, dtype=np.float32)
        # distance to the nearest measurement on the same padded layout (-inf: taken or padding), see _fill
        self._dist = np.full(self._padded[0] * self._padded[1], -np.inf, dtype=np.float32)
        self._dist_tile_max = np.full(self._padded[0] * self._padded[1] // _TILE**2, -np.inf, dtype=np.float32)
        self._dist_dirty = np.zeros(len(self._dist_tile_max), dtype=bool)   # tiles whose maximum is stale
        self._kind = np.full(grid.size, -1, dtype=np.int8)   # pending pick: 0 ERD, 1 fill, -1 other
        self.scale: tuple[float, float] | None = None
        self.erd_start: float | None = None
        self.steps = 0
        self.stop_reason: str | None = None
        self._raw = np.zeros(grid.size, dtype=np.float64)  # raw channel-0 values, for refitting the scale

    # -- protocol ---------------------------------------------------------------------------------
    @property
    def adaptive(self) -> bool:
        """True once the initial scan is measured and the ERD exists."""
        return self.scale is not None

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "initial": self.initial,
            "initial_coverage": self.initial_coverage,
            "target_coverage": self.target_coverage,
            "diversity": self.diversity,
            "proximity": self.proximity,
            "explore": self.explore,
            "erd_stop": self.erd_stop,
            "refresh_every": self.refresh_every,
            "fill": self.fill,
            "fill_floor": self.fill_floor,
            "fill_gain": self.fill_gain,
            "model_hash": self.model.card.get("content_hash", self.model.content_hash()),
            "model_c": self.model.card.get("c"),
        }

    def erd_map(self) -> np.ndarray | None:
        """The ERD of every pixel, ``(ny, nx)`` (NaN where measured or out of play), once it exists."""
        if not self.adaptive:
            return None
        image = self.erd.reshape(self.grid.shape).astype(np.float32)
        image[self.measured | ~self.allowed] = np.nan
        return image

    def total_erd(self) -> float:
        """Sum of the ERD over the pixels not yet measured."""
        return float(self.erd.sum(dtype=np.float64))

    def _exhausted(self) -> bool:
        if self.erd_stop is not None and self.adaptive and self.erd_start:
            if self.total_erd() < self.erd_stop * self.erd_start:
                self.stop_reason = f"ERD below {self.erd_stop:g} of its initial total"
                return True
        return False

    def _propose(self, n: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not self.adaptive:
            rest = self._initial[~self.is_taken(self._initial)]
            if len(rest) or self.n_pending or not self._initial_complete():
                return self.grid.unravel(rest[:n]), {"phase": "initial"}
            self._start()                                    # a region took the initial scan's last pixels
        if self.proximity and abs(self._width() / self._score_width - 1) > _RESCORE_DRIFT:
            self._rescore(self.field.unmeasured(), new_width=True)
        n_explore = min(n, int(round(self.explore * n)))
        want = self.fill_share * (n - n_explore) + self._fill_carry
        n_fill = min(n - n_explore, int(want))
        self._fill_carry = want - n_fill
        chosen = self._select(n - n_explore - n_fill)
        chosen = self._snap(chosen)
        self._set_dist(self._pad(chosen), -np.inf)
        filled = self._lattice_fill(n_fill, exclude=chosen)
        if len(filled) < n_fill:                            # the lattice is used up: farthest-point picks
            self._set_dist(self._pad(filled), -np.inf)
            filled = np.concatenate([filled, self._fill(n_fill - len(filled), np.concatenate([chosen, filled]))])
        if len(chosen) + len(filled) < n - n_explore:    # one kind ran short (the very end of a scan)
            self._score[self._pad(np.concatenate([chosen, filled]))] = -np.inf
            chosen = np.concatenate([chosen, self._select(n - n_explore - len(chosen) - len(filled))])
        extra = self._explore_points(n - len(chosen) - len(filled), exclude=np.concatenate([chosen, filled]))
        picked = np.concatenate([chosen, filled, extra])
        self._kind[chosen], self._kind[filled] = 0, 1
        self._score[self._pad(picked)] = -np.inf           # pending until told
        self._set_dist(self._pad(picked), -np.inf)
        record = {"phase": "adaptive", "erd_max": float(self.erd.max()), "n_explore": int(len(extra)),
                  "n_fill": int(len(filled)), "fill_share": self.fill_share}
        return self.grid.unravel(picked), record

    def _observe(self, indices: np.ndarray, values: np.ndarray) -> dict[str, Any]:
        flat = self.grid.ravel(indices)
        self._raw[flat] = values[:, 0]
        if not self.adaptive:
            if taken_all := self._initial_complete():
                self._start()
            return {"phase": "initial", "initial_complete": taken_all}
        self.steps += 1
        kinds = self._kind[flat]
        self._kind[flat] = -1
        lo, hi = self.scale
        norm = normalise(values[:, 0], lo, hi)
        if np.any(norm < -50) or np.any(norm > 150):   # far outside the frozen scale: refit once
            self._start()
            return {"phase": "adaptive", "rescaled": True, "scale": list(self.scale)}
        self._learn_payoff(kinds, np.abs(norm - self.field.recon.ravel()[flat]))   # errors before updating
        full = self.refresh_every > 0 and self.steps % self.refresh_every == 0
        changed = self.field.add(flat, norm, full=full)
        self._predict(changed)
        self.erd[flat] = 0.0
        self._score[self._pad(flat)] = -np.inf
        self._set_dist(self._pad(flat), -np.inf)
        return {"phase": "adaptive", "updated": int(len(changed)), "fill_share": self.fill_share,
                "payoff_ratio": self.payoff_ratio}

    # -- internals --------------------------------------------------------------------------------
    def _initial_complete(self) -> bool:
        """Every pixel of the initial scan is measured or out of play (a region)."""
        return bool((self.measured | ~self.allowed).ravel()[self._initial].all())

    def _forbid(self, flat: np.ndarray) -> None:
        """Pixels taken out of play: no ERD, never a candidate; the initial scan keeps enough pixels."""
        self.erd[flat] = 0.0
        self._score[self._pad(flat)] = -np.inf
        self._set_dist(self._pad(flat), -np.inf)
        if not self.adaptive:
            need = self.field.k + 1 - int(self.allowed.ravel()[self._initial].sum())
            if need > 0:       # too few initial pixels left for the features: random allowed pixels join
                free = np.flatnonzero(self.allowed.ravel())
                free = free[~np.isin(free, self._initial)]
                extra = np.random.default_rng(self.seed).choice(free, size=min(need, len(free)), replace=False)
                self._initial = np.concatenate([self._initial, np.sort(extra)])

    def _start(self) -> None:
        """(Re)build the value scale, the features and the ERD from every measurement so far."""
        measured = np.flatnonzero(self.measured.ravel())
        self.scale = value_range(self._raw[measured])
        self.field = FeatureField(self.grid.shape, k=self.field.k, density_radius=self.field.density_radius)
        self.field.add(measured, normalise(self._raw[measured], *self.scale), full=True)
        self.erd[:] = 0.0
        self._score[:] = -np.inf
        self._dist[:] = -np.inf
        self._dist_dirty[:] = True
        self._predict(self.field.unmeasured(), new_width=True)
        if self.erd_start is None:
            self.erd_start = self.total_erd()

    def _predict(self, flat: np.ndarray, *, new_width: bool = False) -> None:
        """ERD (clipped at 0) and selection score of unmeasured pixels ``flat``."""
        if len(flat):
            erd = np.maximum(self.model.predict(self.field.features[flat]), 0.0)
            self.erd[flat] = np.where(self.allowed.ravel()[flat], erd, 0.0)
            self._rescore(flat, new_width=new_width)

    def _width(self) -> float:
        """Current proximity width: ``proximity`` times the mean spacing of the measurements."""
        return self.proximity / math.sqrt(max(self.coverage, self.initial_coverage, 1.0 / self.grid.size))

    def _rescore(self, flat: np.ndarray, *, new_width: bool = False) -> None:
        """Selection score of unmeasured pixels ``flat`` from their ERD and distance to measurements.

        The ERD is discounted close to measurements (on dense or noisy textures the ERD alone grows streaks
        next to measured pixels and leaves gaps); among equal scores (flat regions clip the ERD to 0) pixels
        far from any measurement come first. ``new_width``: ``flat`` is every unmeasured pixel, so the
        proximity width is brought up to date first.
        """
        d = self.field.features[flat, 2].astype(np.float64)
        score = self.erd[flat].astype(np.float64)
        if self.proximity:
            if new_width or not self._score_width:
                self._score_width = self._width()
            score *= -np.expm1(-d * d / (2.0 * self._score_width**2))
        score += _TIE_BONUS * d
        blocked = self._pending.ravel()[flat] | ~self.allowed.ravel()[flat]
        self._score[self._pad(flat)] = np.where(blocked, -np.inf, score)
        self._set_dist(self._pad(flat), np.where(blocked, -np.inf, d))

    def _select(self, n: int) -> np.ndarray:
        """Up to ``n`` pixels of high ERD, spread out by discounting around each pixel already chosen."""
        free = self.remaining
        n = min(n, free)
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        m = min(free, max(_MIN_CANDIDATES, _CANDIDATES_PER_POINT * n))
        cand = self._top(m)
        cand_score = self._score[self._pad(cand)].astype(np.float64)
        order = np.lexsort((cand, -cand_score))                  # deterministic order: score, then pixel
        cand, s = cand[order], cand_score[order]
        if self.diversity == 0:
            return cand[:n]
        pos = self._xy(cand)
        width = self.diversity * np.maximum(self.field.features[cand, 2].astype(np.float64), 1.0)
        picks = np.empty(n, dtype=np.int64)
        for j in range(n):
            i = int(np.argmax(s))
            picks[j] = i
            d2 = ((pos - pos[i]) ** 2).sum(axis=1)
            s *= -np.expm1(-d2 / (2.0 * width[i] ** 2))
            s[i] = -np.inf
        return cand[picks]

    def _xy(self, flat: np.ndarray) -> np.ndarray:
        """``(n, 2)`` float positions ``(y, x)``, in pixels, of grid pixel numbers ``flat``."""
        return np.stack(np.divmod(flat, self.grid.shape[1]), axis=1).astype(np.float64)

    def _pad(self, flat: np.ndarray) -> np.ndarray:
        """Pixel numbers of the grid -> positions in the tile-padded score array."""
        y, x = np.divmod(flat, self.grid.shape[1])
        return y * self._padded[1] + x

    def _snap(self, chosen: np.ndarray) -> np.ndarray:
        """ERD picks moved onto the nearest free pixel of the lattice's finest level, within a radius that
        grows with the fill share: none while the ERD is trusted (share at its floor), up to half a cell's
        diagonal (every pick) once half of each batch or more is fill.

        Half a batch of fill means that ERD picks were found no more informative than a regular pattern by
        a clear margin (with the default ``fill_gain``, errors at most 1.5x those at fill picks); from there
        on an exact lattice is worth more than the ERD's choice within a cell (measured on lattice phantoms:
        a few per cent of the measurements off the lattice cost 1-2 % NRMSE against a raster)."""
        if not len(chosen) or self.fill != "auto":
            return chosen
        distrust = (self.fill_share - self.fill_floor) / (0.5 - self.fill_floor)
        rows, cols = self._axes
        ny, nx = self.grid.shape
        radius = float(np.clip(distrust, 0.0, 1.0)) * 0.5 * math.hypot(ny / len(rows), nx / len(cols))
        if radius <= 0:
            return chosen
        y, x = np.divmod(chosen, nx)

        def nearest(axis: np.ndarray, v: np.ndarray) -> np.ndarray:
            i = np.clip(np.searchsorted(axis, v), 1, max(len(axis) - 1, 1))
            lo, hi = axis[i - 1], axis[np.minimum(i, len(axis) - 1)]
            return np.where(np.abs(v - lo) <= np.abs(hi - v), lo, hi)

        sy, sx = nearest(rows, y), nearest(cols, x)
        site = sy * nx + sx
        move = (np.hypot(sy - y, sx - x) <= radius + 1e-9) & ~self.is_taken(site) & ~np.isin(site, chosen)
        out = chosen.copy()
        idx = np.flatnonzero(move)
        _, first = np.unique(site[idx], return_index=True)       # two picks, one site: the first moves
        out[idx[first]] = site[idx[first]]
        return out

    def _lattice_fill(self, n: int, exclude: np.ndarray) -> np.ndarray:
        """Up to ``n`` next pixels of the interlaced lattice that no measurement and no pixel of ``exclude``
        covers (closer than ``_COVER`` times the spacing of the pixel's level); covered ones are passed over
        for good (measurements only grow)."""
        ex = self._xy(exclude)
        out: list[np.ndarray] = []
        need = n
        while need > 0:
            pixels, spacing = self._level
            if self._level_pos >= len(pixels):
                if (level := next(self._levels, None)) is None:
                    break
                self._level, self._level_pos = level, 0
                continue
            block = pixels[self._level_pos:self._level_pos + max(4 * need, 64)]
            d = self.field.features[block, 2].astype(np.float64)
            if len(ex):
                d = np.minimum(d, np.sqrt(cdist(self._xy(block), ex, "sqeuclidean").min(axis=1)))
            free = np.flatnonzero((d >= _COVER * spacing) & ~self.is_taken(block))
            take = free[:need]
            self._level_pos += int(take[-1]) + 1 if len(take) == need else len(block)
            out.append(block[take])
            need -= len(take)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def _fill(self, n: int, exclude: np.ndarray) -> np.ndarray:
        """Up to ``n`` pixels far from the measurements and from ``exclude``, by greedy farthest-point.

        Candidates are the pixels farthest from any measurement; each pick is the candidate farthest from
        the measurements, ``exclude`` and the picks so far (the batch is planned around all of them).
        ``exclude`` must already be out of the distance array (-inf).
        """
        free = self.remaining - len(exclude)
        n = min(n, free)
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        cand = self._top(min(free, max(_MIN_FILL_CANDIDATES, _FILL_CANDIDATES_PER_POINT * n)), self._dist,
                         self._dist_tiles(), slack=_FILL_SLACK)
        d = self._dist[self._pad(cand)].astype(np.float64)
        order = np.lexsort((cand, -d))                           # deterministic order: distance, then pixel
        cand, d2 = cand[order], d[order] ** 2
        pos = self._xy(cand)
        if len(exclude):
            np.minimum(d2, cdist(pos, self._xy(exclude), "sqeuclidean").min(axis=1), out=d2)
        picks = np.empty(n, dtype=np.int64)
        for j in range(n):
            i = int(np.argmax(d2))
            picks[j] = i
            np.minimum(d2, ((pos - pos[i]) ** 2).sum(axis=1), out=d2)
            d2[i] = -np.inf
        return cand[picks]

    def _set_dist(self, padded: np.ndarray, values: np.ndarray | float) -> None:
        """Write distances at padded positions and mark their tiles' maxima stale."""
        self._dist[padded] = values
        y, x = np.divmod(padded, self._padded[1])
        self._dist_dirty[(y // _TILE) * (self._padded[1] // _TILE) + x // _TILE] = True

    def _dist_tiles(self) -> np.ndarray:
        """Maximum distance per tile, recomputed for the tiles written since the last call only."""
        dirty = np.flatnonzero(self._dist_dirty)
        if len(dirty):
            t, px = _TILE, self._padded[1]
            ty, tx = np.divmod(dirty, px // t)
            offsets = (np.arange(t)[:, None] * px + np.arange(t)[None, :]).ravel()
            self._dist_tile_max[dirty] = self._dist[(ty * t * px + tx * t)[:, None] + offsets[None, :]].max(axis=1)
            self._dist_dirty[dirty] = False
        return self._dist_tile_max

    def _learn_payoff(self, kinds: np.ndarray, errors: np.ndarray) -> None:
        """Update the prediction errors found by ERD and fill picks; with ``fill="auto"`` set the fill share."""
        self._payoff *= _PAYOFF_DECAY
        for k in (0, 1):
            sel = kinds == k
            self._payoff[k] += (float(errors[sel].sum()), float(sel.sum()))
        (e_erd, n_erd), (e_fill, n_fill) = self._payoff
        if n_erd > 0 and n_fill > 0:
            self.payoff_ratio = float((e_erd / n_erd) / max(e_fill / n_fill, 1e-12))
            if self.fill == "auto":
                share = 1.0 - (self.payoff_ratio - 1.0) / (self.fill_gain - 1.0)
                self.fill_share = float(np.clip(share, self.fill_floor, 1.0 - self.fill_floor))

    def _top(
        self, m: int, score: np.ndarray | None = None, tile_max: np.ndarray | None = None, slack: float = 0.0
    ) -> np.ndarray:
        """The ``m`` pixels of highest score (exactly), looking only inside the best tiles of the grid.

        ``score`` is a padded array like the selection score (the default), ``tile_max`` its maximum per tile
        if already known. With ``slack > 0`` the result may miss pixels that beat its m-th score by less than
        ``slack`` (tiles of nearly equal maxima, common for distances, are then not all opened).

        The max over 32x32 tiles is one cheap pass over the padded score; tiles are then taken best first,
        in rounds that double, keeping the best ``m`` pixels so far, until the next tile's maximum cannot
        beat the m-th of them. Returns grid pixel numbers.
        """
        sc = self._score if score is None else score
        (py, px), t = self._padded, _TILE
        nty, ntx = py // t, px // t
        if tile_max is None:
            tile_max = sc.reshape(nty, t, ntx, t).max(axis=(1, 3)).ravel()
        order = np.argsort(-tile_max, kind="stable")
        offsets = (np.arange(t)[:, None] * px + np.arange(t)[None, :]).ravel()
        best = np.empty(0, dtype=np.int64)
        used = 0
        while used < len(order):
            take = order[used:max(used + -(-m // (t * t)) + 1, 2 * used)]
            used += len(take)
            ty, tx = np.divmod(take, ntx)
            pixels = ((ty * t * px + tx * t)[:, None] + offsets[None, :]).ravel()
            pool = np.concatenate([best, pixels[np.isfinite(sc[pixels])]])
            best = pool if len(pool) <= m else pool[np.argpartition(sc[pool], len(pool) - m)[len(pool) - m:]]
            if len(best) >= m and used < len(order) and tile_max[order[used]] < sc[best].min() + slack:
                break
        y, x = np.divmod(best, px)
        return y * self.grid.shape[1] + x

    def _explore_points(self, n: int, exclude: np.ndarray) -> np.ndarray:
        """The next ``n`` free pixels of the seeded Halton stream that started with the initial scan."""
        out: list[np.ndarray] = []
        need = n
        while need > 0:
            if self._explore_cursor >= len(self._explore_stream):
                if len(self._explore_stream) >= self.grid.size:
                    break
                size = min(self.grid.size, max(2 * len(self._explore_stream), 256))
                self._explore_stream = self.grid.ravel(halton_pattern(self.grid.shape, size, seed=self.seed))
            block = self._explore_stream[self._explore_cursor:self._explore_cursor + 4 * need + 16]
            self._explore_cursor += len(block)
            block = block[~self.is_taken(block) & ~np.isin(block, exclude)]
            out.append(block[:need])
            need -= len(out[-1])
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def make_fast_sampler(grid: ScanGrid, *, coverage: float = 1.0, seed: int | None = 0, **options: Any) -> FastSampler:
    """Registry factory: ``coverage`` (the scan loop's stop rule) becomes the fill's target coverage.

    ``cost``: an instrument's :class:`~fastflow.timing.TimeModel` (or a preset name or model file). Where it
    is travel-bound on ``grid`` (a far point costs more than two raster pixels, :meth:`TimeModel.costs
    <fastflow.timing.TimeModel.costs>`) this makes the cost-aware FAST of :mod:`fastflow.sampling.costaware`;
    where it is dwell-bound, far points cost about what near ones do and point-wise FAST is the cost-aware
    choice. ``None`` or ``"off"``: point-wise FAST. On a travel-bound model that flies (``raster="fly"``) it
    measures flown row segments (:mod:`fastflow.sampling.flying`) unless ``segments="off"``.
    """
    check_coverage(coverage)
    options.setdefault("target_coverage", coverage)
    cost = options.pop("cost", None)
    segments = options.pop("segments", "auto")
    if segments not in ("auto", "off"):
        raise InputError(f"segments must be 'auto' or 'off'; got {segments!r}")
    seed = 0 if seed is None else int(seed)
    if cost is None or (isinstance(cost, str) and cost.strip().lower() == "off"):
        return FastSampler(grid, seed=seed, **options)
    from fastflow.sampling.costaware import CostAwareFastSampler
    from fastflow.timing import load_time_model

    model = load_time_model(cost).for_grid(grid)
    if model.costs(grid)["regime"] != "travel-bound":
        return FastSampler(grid, seed=seed, **options)
    if segments == "auto" and model.raster == "fly":
        from fastflow.sampling.flying import FlyingFastSampler

        return FlyingFastSampler(grid, cost=model, seed=seed, **options)
    return CostAwareFastSampler(grid, cost=model, seed=seed, **options)
