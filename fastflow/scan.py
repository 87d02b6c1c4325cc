"""The scan loop: ask the sampler, measure, persist, tell; snapshots, metrics and stop rules.

Plain Python, usable from a notebook; the Prefect flows and the command line call :func:`run_scan`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastflow.controls import ControlInbox
from fastflow.errors import InputError
from fastflow.instruments.base import Instrument, Measurement
from fastflow.metrics import evaluate
from fastflow.recon import reconstruct_with_uncertainty
from fastflow.route import order_route
from fastflow.sampling.protocol import BaseSampler, check_coverage
from fastflow.store import ScanStore, now_iso
from fastflow.timing import fit_store


class _Inline:
    """An executor that runs the call at once, in this thread (the sequential scan)."""

    @staticmethod
    def submit(func: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


_INLINE = _Inline()

#: Why a scan stopped, as recorded in the store's ``stop_reason`` attribute.
STOP_COVERAGE = "coverage reached"
STOP_SAMPLER = "sampler finished"
STOP_TIME = "time budget reached"
STOP_INTERRUPTED = "interrupted"
STOP_OPERATOR = "stopped by the operator"
STOP_TARGET = "target error reached"

#: Seconds between looks at the control inbox while a scan is paused.
PAUSE_POLL_S = 0.2


@dataclass
class StopRules:
    """When a scan stops (whichever comes first).

    Parameters
    ----------
    coverage : float
        Fraction of grid pixels to measure, in (0, 1].
    time_budget : float, optional
        Acquisition seconds (as the instrument counts them) after which no new batch starts.
    target_nrmse : float, optional
        Stop once the reconstruction's estimated NRMSE (the *upper* estimate of :mod:`fastflow.errorest`,
        so that a scan stops late rather than early) is at or below this, from the calibration's smallest
        coverage (5 %) on.
    """

    coverage: float = 1.0
    time_budget: float | None = None
    target_nrmse: float | None = None

    def __post_init__(self) -> None:
        self.coverage = check_coverage(self.coverage, "stop coverage")
        for name, what in (("time_budget", "time budget must be a positive number of seconds"),
                           ("target_nrmse", "target NRMSE must be a positive number (e.g. 0.05)")):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not (value > 0 and math.isfinite(value)):
                raise InputError(f"{what}; got {value!r}")
            setattr(self, name, float(value))

    def to_attrs(self) -> dict[str, Any]:
        """The rules as the store records them (its ``stop_rules`` attribute)."""
        return {"coverage": self.coverage, "time_budget_s": self.time_budget, "target_nrmse": self.target_nrmse}


@dataclass
class ScanResult:
    """What a finished (or stopped) scan reports."""

    stop_reason: str
    n_points: int
    coverage: float
    acquisition_time: float
    path_length: float
    reconstruction: np.ndarray
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0

    raster_time: float | None = None
    error_estimate: dict[str, Any] | None = None

    @property
    def saving(self) -> float | None:
        """Fraction of a full raster's time (on the same instrument) that the scan saved; None if unknown."""
        return None if not self.raster_time else 1.0 - self.acquisition_time / self.raster_time

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (without the image)."""
        return {
            "stop_reason": self.stop_reason,
            "n_points": self.n_points,
            "coverage": self.coverage,
            "acquisition_time_s": self.acquisition_time,
            "raster_time_s": self.raster_time,
            "saving": self.saving,
            "error_estimate": self.error_estimate,
            "path_length": self.path_length,
            "wall_time_s": self.wall_time,
            "snapshots": self.snapshots,
        }


class _Operator:
    """Applies operator controls between batches and records each in the store's ``controls`` attribute."""

    def __init__(self, inbox: ControlInbox | None, store: ScanStore, sampler: BaseSampler, stop: StopRules) -> None:
        self.inbox, self.store, self.sampler, self.stop = inbox, store, sampler, stop
        self.paused = False
        self.stopped = False

    def check(self) -> bool:
        """Apply the controls sent so far (waiting while paused); True when the scan must stop now."""
        if self.inbox is None:
            return False
        while True:
            for doc in self.inbox.poll():
                self._apply(doc)
            if self.stopped or not self.paused:
                return self.stopped
            time.sleep(PAUSE_POLL_S)

    def _apply(self, doc: dict[str, Any]) -> None:
        action = doc.get("action")
        entry = {**doc, "applied": now_iso(), "applied_unix": time.time(), "n_points": self.store.n_points}
        try:
            if action == "pause":
                self.paused = True
            elif action == "resume":
                self.paused = False
            elif action == "stop":
                self.stopped = True
            elif action == "stop_rule":
                rules = StopRules(coverage=doc.get("coverage", self.stop.coverage),
                                  time_budget=doc.get("time_budget", self.stop.time_budget),
                                  target_nrmse=doc.get("target_nrmse", self.stop.target_nrmse))
                entry["previous"] = self.stop.to_attrs()
                self.stop.coverage, self.stop.time_budget = rules.coverage, rules.time_budget
                self.stop.target_nrmse = rules.target_nrmse
            elif action == "no_go":
                from fastflow.regions import NO_GO, region_mask

                mask = region_mask(doc["region"], self.store.grid.shape)
                released = self.sampler.restrict(mask)
                codes = self.store.region()
                codes[mask] = NO_GO
                self.store.set_region(codes)
                entry.update(pixels=int(mask.sum()), released_pending=int(len(released)))
            else:
                raise InputError(doc.get("error", f"unknown control {action!r}"))
            entry["status"] = "applied"
        except InputError as exc:        # a bad control is refused and recorded; the scan goes on
            entry.update(status="refused", error=str(exc))
        controls = self.store.attrs.get("controls", [])
        self.store.update_attrs(controls=[*controls, entry], paused=self.paused,
                                stop_rules=self.stop.to_attrs())


class _Timing:
    """Records the instrument's time model and a full raster's time in the store's attributes.

    An instrument that declares a model (``time_model``, e.g. the simulated one) is recorded once; for one that
    does not (EPICS), a model is fitted to the stored timestamps at every snapshot
    (:func:`fastflow.timing.fit_store`), so the saving is estimated from what the hardware really took.
    """

    def __init__(self, instrument: Instrument, store: ScanStore) -> None:
        self.store = store
        self.declared = getattr(instrument, "time_model", None)
        self.known_dwell = getattr(instrument, "dwell", None)
        if self.declared is not None:
            self._record(self.declared, fitted=None)

    def refresh(self) -> None:
        """Fit the model again from the stored points, for an instrument without a declared one."""
        if self.declared is not None:
            return
        try:
            fit = fit_store(self.store, dwell=self.known_dwell)
        except (InputError, ValueError, ArithmeticError, np.linalg.LinAlgError):
            return                  # too few timed moves so far, or timestamps no model explains: keep scanning
        self._record(fit.model, fitted=fit.to_attrs())

    def _record(self, model: Any, fitted: dict[str, Any] | None) -> None:
        grid = self.store.grid
        attrs = {"time_model": model.to_attrs(), "raster_time_s": model.raster_time(grid),
                 "time_costs": model.costs(grid)}
        if fitted is not None:
            attrs["time_model_fit"] = {k: v for k, v in fitted.items() if k != "time_model"}
        self.store.update_attrs(**attrs)


class _ErrorWatch:
    """The error estimate of the points so far (:mod:`fastflow.errorest`): at every snapshot, and after each
    batch while a target NRMSE is set.

    Far from the target (upper estimate above ``NEAR`` times it) the estimate is made again only once the
    points have grown by ``REGROW``: the error falls slower than the points grow, so it cannot cross the
    target sooner, and a large scan does not pay a cross-validation of all its points after every batch.
    """

    NEAR = 1.1
    REGROW = 1.02

    def __init__(self, sampler: BaseSampler, method: str, stop: StopRules) -> None:
        from fastflow.errorest import sampler_family

        self.sampler, self.method, self.stop = sampler, method, stop
        self.family = sampler_family(sampler)
        self._model: Any = None
        self.last: Any = None
        self.n_checked = 0
        if stop.target_nrmse is not None:
            self.model()                 # a broken calibration file fails before anything is measured

    def model(self) -> Any:
        if self._model is None:
            from fastflow.errorest import ErrorModel

            self._model = ErrorModel.load()
        return self._model

    def estimate(self, indices: np.ndarray, values: np.ndarray) -> Any:
        """The estimate for these points (None while there are too few to cross-validate)."""
        if len(indices) < self.model().k + 1:
            return None
        self.last = self.model().estimate(indices, values, self.sampler.coverage, method=self.method,
                                          family=self.family)
        self.n_checked = len(indices)
        return self.last

    def reached(self, n_points: int, points: Callable[[], tuple[np.ndarray, np.ndarray]]) -> bool:
        """True when a target is set and the upper estimate is at or below it (from the calibrated coverages on)."""
        target = self.stop.target_nrmse
        if target is None:
            return False
        if self.last is not None and self.last.upper > self.NEAR * target and n_points < self.REGROW * self.n_checked:
            return False
        est = self.estimate(*points())
        return est is not None and est.coverage >= self.model().coverage_range[0] - 1e-9 and est.upper <= target

    def attrs(self) -> dict[str, Any]:
        """The latest estimate as the store records it (``error_estimate``), or nothing."""
        return {"error_estimate": self.last.to_attrs()} if self.last is not None else {}

    def columns(self) -> dict[str, float] | None:
        """The latest estimate as snapshot columns."""
        return None if self.last is None else {"nrmse_estimate": self.last.nrmse, "nrmse_upper": self.last.upper}


def parse_fractions(text: str | Sequence[float] | None, what: str = "snapshot coverage") -> list[float]:
    """Parse ``"0.05,0.1"`` (or a sequence) into sorted unique fractions in (0, 1]."""
    if text is None or text == "":
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    return sorted({check_coverage(v.strip() if isinstance(v, str) else v, what) for v in items})


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-xxxxxx``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_scan(
    sampler: BaseSampler,
    instrument: Instrument,
    store: ScanStore,
    *,
    stop: StopRules,
    batch_size: int = 50,
    snapshots: Sequence[float] = (),
    truth: np.ndarray | None = None,
    recon_method: str = "idw",
    route: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    overlap: bool = False,
    control: ControlInbox | None = None,
) -> ScanResult:
    """Run a scan until a stop rule holds, persisting every batch before the sampler sees it.

    If ``store`` already holds measurements (a resumed scan), they are replayed into the sampler first and
    the scan continues from there: nothing is measured twice. Stored times and stage path continue from the
    stored points (start the instrument at the last stored position).

    Parameters
    ----------
    sampler : BaseSampler
        Decides where to measure.
    instrument : Instrument
        Measures values at grid indices.
    store : ScanStore
        Open for appending; left open (the caller closes it with the stop reason).
    stop : StopRules
        Target coverage, optional time budget and target NRMSE (of the estimate, :mod:`fastflow.errorest`).
    batch_size : int
        Points asked per step. Batches are shortened so that snapshots land exactly on their coverage.
    snapshots : sequence of float
        Coverages at which a reconstruction (and metrics, with ``truth``) is stored, with the estimate of its
        NRMSE (:mod:`fastflow.errorest`); the final state is always stored too.
    truth : ndarray, optional
        Ground truth image for metrics (simulations).
    recon_method : str
        Reconstruction for snapshots and the final image (see :mod:`fastflow.recon`).
    route : bool, optional
        Visit each batch along a short route from the stage's last position (:mod:`fastflow.route`).
        Default: for samplers whose batches are sets (``sampler.ordered`` is false), not for trajectories.
    progress : callable, optional
        Called as ``progress(n_measured, n_target)`` after each batch.
    overlap : bool, optional
        Measure and think in parallel: while the instrument measures batch k (in a thread), the sampler
        already chooses batch k+1 from the points measured before batch k. Static samplers choose the same
        points either way; an adaptive sampler's batch k+1 then lacks batch k's values (a one-batch lag).
        The time saved is the sampler's step time per batch. Errors in either keep the batch in flight.
    control : ControlInbox, optional
        Operator controls (pause, resume, stop, a new stop rule, a no-go region), read between batches,
        applied and recorded in the store's ``controls`` attribute (:mod:`fastflow.controls`).

    Coverage counts the pixels the sampler may measure (:meth:`BaseSampler.restrict`, :mod:`fastflow.regions`);
    restrict the sampler before the call, as :func:`fastflow.runs.acquire` does from the store's regions.

    Returns
    -------
    ScanResult
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer; got {batch_size!r}")
    grid = store.grid
    idx_parts, val_parts = [], []
    stored_coverages = store.snapshots()[0]
    snap_due = [c for c in sorted(set(snapshots))       # a resumed scan does not repeat its snapshots
                if not (len(stored_coverages) and stored_coverages.max() >= c - 0.5 / sampler.n_allowed)]
    t_wall = time.perf_counter()

    def target() -> int:
        """Points to measure: as many allowed pixels as a static pattern of the stop coverage has."""
        return max(1, round(stop.coverage * sampler.n_allowed))

    def next_snapshot() -> int | None:
        """Point count of the next snapshot due, or None."""
        due = [max(1, round(c * sampler.n_allowed)) for c in snap_due if c <= stop.coverage]
        return min(due) if due else None

    t_offset = path_offset = 0.0
    if store.n_points:  # resume: replay what is on disk, and continue its clock and stage path
        m = store.measurements()
        sampler.tell(m["indices"], m["values"])
        idx_parts.append(m["indices"])
        val_parts.append(m["values"][:, 0])
        times = m["time"][np.isfinite(m["time"])]
        t_offset = float(times.max()) if len(times) else 0.0
        path_offset = float(np.hypot(*np.diff(m["positions"], axis=0).T).sum())
    batch_no = int(store.attrs.get("n_batches", 0))
    if route is None:
        route = not getattr(sampler, "ordered", True)

    latest: dict[str, Any] = {}

    def points() -> tuple[np.ndarray, np.ndarray]:
        """Every point measured so far and its values (channel 0)."""
        return np.concatenate(idx_parts), np.concatenate(val_parts)

    def rebuild() -> tuple[np.ndarray, np.ndarray | None]:
        """The reconstruction of every point so far (and its uncertainty), computed once per state."""
        n_now = sum(len(part) for part in idx_parts)
        if latest.get("n") != n_now:
            indices, values = points()
            latest.update(n=n_now, result=reconstruct_with_uncertainty(grid, indices, values, method=recon_method))
        return latest["result"]

    timing = _Timing(instrument, store)
    watch = _ErrorWatch(sampler, recon_method, stop)

    def snapshot() -> None:
        timing.refresh()
        image, sigma = rebuild()
        metrics = evaluate(truth, image) if truth is not None else {}
        if watch.n_checked != sum(len(part) for part in idx_parts):
            watch.estimate(*points())
        erd = getattr(sampler, "erd_map", None)
        if callable(erd) and (decision := erd()) is not None:
            store.set_erd(decision)          # first: a viewer keys the stored images on the snapshot count
        store.add_snapshot(sampler.coverage, image, metrics, uncertainty=sigma, estimate=watch.columns())
        snap_due[:] = [c for c in snap_due if max(1, round(c * sampler.n_allowed)) > sampler.n_inside]

    last = {"batch": idx_parts[-1] if idx_parts else None}   # the batch the stage visits last, for routes

    def plan() -> np.ndarray | None:
        """The next batch (routed), counting points being measured as taken; None when no batch is due."""
        n_known = sampler.n_inside + sampler.n_pending
        if n_known >= target() or sampler.done:
            return None
        limit = min(max(batch_size, sampler.min_batch), target() - n_known)
        upcoming = next_snapshot()
        if upcoming is not None and upcoming > n_known:
            limit = min(limit, upcoming - n_known)
        indices = sampler.ask(limit)
        if len(indices) == 0:
            return None
        if route:
            prev = last["batch"]
            here = grid.to_position(prev[-1:])[0] if prev is not None else np.asarray(grid.origin)
            indices = indices[order_route(grid.to_position(indices), here)]
        last["batch"] = indices
        return indices

    def persist(indices: np.ndarray, measured: Measurement) -> None:
        nonlocal batch_no
        store.append(indices, measured.values, positions=measured.positions, times=t_offset + measured.times,
                     batch=batch_no)
        batch_no += 1
        idx_parts.append(indices)
        val_parts.append(measured.values[:, 0])
        sampler.tell(indices, measured.values)

    def keep_partial(indices: np.ndarray, exc: BaseException) -> None:
        """An instrument that failed (or was stopped) part-way hands over what it measured: keep it."""
        partial = getattr(exc, "partial", None)
        if partial is not None and len(partial):
            store.append(indices[: len(partial)], partial.values, positions=partial.positions,
                         times=t_offset + partial.times, batch=batch_no)

    def finish(running: Future, indices: np.ndarray) -> Measurement:
        """Wait for the batch in flight; whatever happens, what it measured is on disk before this returns."""
        try:
            return running.result()
        except BaseException:
            failure = running.exception() if running.done() else None
            if failure is not None:      # the measurement itself failed or was interrupted
                keep_partial(indices, failure)
                raise
            persist(indices, finish(running, indices))   # stopped while waiting: the batch completes, then stop
            raise

    stop_reason = None
    operator = _Operator(control, store, sampler, stop)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastflow-measure") if overlap else None
    try:
        batch = None if operator.check() else plan()
        while batch is not None:
            if stop.time_budget is not None and t_offset + instrument.elapsed >= stop.time_budget:
                stop_reason = STOP_TIME
                break
            running = (pool or _INLINE).submit(instrument.measure, batch)
            following = None
            if pool is not None:  # measure this batch while the sampler chooses the next one from what is known
                try:
                    following = plan()
                except BaseException:
                    persist(batch, finish(running, batch))
                    raise
            persist(batch, finish(running, batch))
            due = next_snapshot()
            if due is not None and sampler.n_inside >= due:
                snapshot()
            if progress is not None:
                progress(sampler.n_inside, target())
            if watch.reached(sum(len(part) for part in idx_parts), points):
                stop_reason = STOP_TARGET
                break
            if operator.check():
                stop_reason = STOP_OPERATOR
                break
            if following is not None:         # a region drawn since it was planned: drop what lies inside
                following = following[sampler.allowed[following[:, 0], following[:, 1]]]
                following = following if len(following) else None
            batch = following if following is not None else plan()   # a sampler may need the values first
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if stop_reason is None and operator.stopped:
        stop_reason = STOP_OPERATOR
    if stop_reason is None:
        if sampler.n_inside >= target():
            stop_reason = STOP_COVERAGE
        elif sampler.done:
            stop_reason = getattr(sampler, "stop_reason", None) or STOP_SAMPLER
        else:
            stop_reason = STOP_SAMPLER

    if not idx_parts:
        if stop_reason == STOP_OPERATOR:
            raise InputError("the scan was stopped by the operator before it measured a point")
        raise InputError("the scan measured no points; check the sampler and stop rules")
    table = store.snapshot_table()
    if not table or table[-1]["n_points"] != store.n_points:
        snapshot()
    final, final_sigma = rebuild()
    store.set_reconstruction(final, uncertainty=final_sigma, method=recon_method, coverage=sampler.coverage,
                             n_points=store.n_points)
    acquisition_time = t_offset + float(instrument.elapsed)
    path_length = path_offset + float(instrument.path_length)
    store.update_attrs(acquisition_time_s=acquisition_time, path_length=path_length, coverage_reached=sampler.coverage,
                       **watch.attrs())
    return ScanResult(
        stop_reason=stop_reason,
        n_points=store.n_points,
        coverage=sampler.coverage,
        acquisition_time=acquisition_time,
        path_length=path_length,
        reconstruction=final,
        snapshots=store.snapshot_table(),
        wall_time=time.perf_counter() - t_wall,
        raster_time=store.attrs.get("raster_time_s"),
        error_estimate=watch.last.to_attrs() if watch.last is not None else None,
    )
