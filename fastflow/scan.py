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

from fastflow.errors import InputError
from fastflow.instruments.base import Instrument, Measurement
from fastflow.metrics import evaluate
from fastflow.recon import reconstruct_with_uncertainty
from fastflow.route import order_route
from fastflow.sampling.protocol import BaseSampler, check_coverage
from fastflow.store import ScanStore


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


@dataclass
class StopRules:
    """When a scan stops (whichever comes first).

    Parameters
    ----------
    coverage : float
        Fraction of grid pixels to measure, in (0, 1].
    time_budget : float, optional
        Acquisition seconds (as the instrument counts them) after which no new batch starts.
    """

    coverage: float = 1.0
    time_budget: float | None = None

    def __post_init__(self) -> None:
        self.coverage = check_coverage(self.coverage, "stop coverage")
        if self.time_budget is not None and not (self.time_budget > 0 and math.isfinite(self.time_budget)):
            raise InputError(f"time budget must be a positive number of seconds; got {self.time_budget!r}")


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

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (without the image)."""
        return {
            "stop_reason": self.stop_reason,
            "n_points": self.n_points,
            "coverage": self.coverage,
            "acquisition_time_s": self.acquisition_time,
            "path_length": self.path_length,
            "wall_time_s": self.wall_time,
            "snapshots": self.snapshots,
        }


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
        Target coverage and optional time budget.
    batch_size : int
        Points asked per step. Batches are shortened so that snapshots land exactly on their coverage.
    snapshots : sequence of float
        Coverages at which a reconstruction (and metrics, with ``truth``) is stored; the final state is
        always stored too.
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

    Returns
    -------
    ScanResult
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer; got {batch_size!r}")
    grid = store.grid
    n_total = grid.size
    n_target = max(1, round(stop.coverage * n_total))      # as many pixels as a static pattern of that coverage
    snap_targets = sorted({max(1, round(c * n_total)) for c in snapshots if c <= stop.coverage})
    idx_parts, val_parts = [], []
    done_snapshots = {int(round(c * n_total)) for c in store.snapshots()[0]}
    t_wall = time.perf_counter()

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

    def rebuild() -> tuple[np.ndarray, np.ndarray | None]:
        """The reconstruction of every point so far (and its uncertainty), computed once per state."""
        n_now = sum(len(part) for part in idx_parts)
        if latest.get("n") != n_now:
            indices, values = np.concatenate(idx_parts), np.concatenate(val_parts)
            latest.update(n=n_now, result=reconstruct_with_uncertainty(grid, indices, values, method=recon_method))
        return latest["result"]

    def snapshot(n_measured: int) -> None:
        image, sigma = rebuild()
        metrics = evaluate(truth, image) if truth is not None else {}
        cov = n_measured / n_total
        store.add_snapshot(cov, image, metrics, uncertainty=sigma)
        done_snapshots.add(n_measured)

    last = {"batch": idx_parts[-1] if idx_parts else None}   # the batch the stage visits last, for routes

    def plan() -> np.ndarray | None:
        """The next batch (routed), counting points being measured as taken; None when no batch is due."""
        n_known = sampler.n_measured + sampler.n_pending
        if n_known >= n_target or sampler.done:
            return None
        limit = min(batch_size, n_target - n_known)
        upcoming = [t for t in snap_targets if t > n_known]
        if upcoming:
            limit = min(limit, upcoming[0] - n_known)
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
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastflow-measure") if overlap else None
    try:
        batch = plan()
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
            if sampler.n_measured in snap_targets and sampler.n_measured not in done_snapshots:
                snapshot(sampler.n_measured)
            if progress is not None:
                progress(sampler.n_measured, n_target)
            batch = following if following is not None else plan()   # a sampler may need the values first
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if stop_reason is None:
        if sampler.n_measured >= n_target:
            stop_reason = STOP_COVERAGE
        elif sampler.done:
            stop_reason = getattr(sampler, "stop_reason", None) or STOP_SAMPLER
        else:
            stop_reason = STOP_SAMPLER

    if not idx_parts:
        raise InputError("the scan measured no points; check the sampler and stop rules")
    if sampler.n_measured not in done_snapshots:
        snapshot(sampler.n_measured)
    final, final_sigma = rebuild()
    store.set_reconstruction(final, uncertainty=final_sigma, method=recon_method, coverage=sampler.coverage,
                             n_points=store.n_points)
    acquisition_time = t_offset + float(instrument.elapsed)
    path_length = path_offset + float(instrument.path_length)
    store.update_attrs(acquisition_time_s=acquisition_time, path_length=path_length, coverage_reached=sampler.coverage)
    return ScanResult(
        stop_reason=stop_reason,
        n_points=store.n_points,
        coverage=sampler.coverage,
        acquisition_time=acquisition_time,
        path_length=path_length,
        reconstruction=final,
        snapshots=store.snapshot_table(),
        wall_time=time.perf_counter() - t_wall,
    )
