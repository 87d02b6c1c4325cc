"""Tasks of a scan: create the run, acquire (or resume) it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import task

from fastflow import runs
from tasks.common import logger, retry_unless_user_error

#: Log records of per-batch progress carry this attribute, so that a terminal showing a progress bar
#: can keep them out of the console while the Prefect API still receives them.
PROGRESS_RECORD = "fastflow_progress"


@task(name="create-scan-run", persist_result=False)
def create_scan_run(config: dict[str, Any], run_dir: str | None = None, run_id: str | None = None) -> str:
    """Validate the configuration and create the run folder and its empty store; returns the folder."""
    from prefect.runtime import flow_run

    extra = {"flow_run_id": str(flow_run.id)} if flow_run.id else {}
    path = runs.create_run(runs.ScanConfig.from_dict(config), run_dir, run_id=run_id, extra_attrs=extra)
    logger().info("run %s created in %s", path.name, path)
    return str(path)


@task(name="acquire", persist_result=False, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_user_error)
def acquire(run_dir: str) -> dict[str, Any]:
    """Measure until a stop rule holds, persisting every batch as it arrives; returns the run's report.

    A retry continues from the points already stored (nothing is measured twice), so retrying after an
    instrument or disk fault is safe.
    """
    from tqdm import tqdm

    log = logger()
    bar = tqdm(total=None, unit="pt", file=sys.stderr, disable=None, desc="scanning", dynamic_ncols=True)
    state = {"batch": 0}
    ui = ProgressArtifacts(run_dir)

    def progress(done: int, total: int) -> None:
        state["batch"] += 1
        bar.total = total
        bar.update(done - bar.n)
        log.info("batch %d: %d / %d points (%.1f%%)", state["batch"], done, total, 100 * done / total,
                 extra={PROGRESS_RECORD: True})
        ui.update(done, total)

    try:
        report = runs.acquire(run_dir, progress=progress)
    finally:
        bar.close()
    ui.update(report["n_points"], report["n_points"], force=True)
    log.info("scan stopped (%s) at %.1f%% coverage, %d points", report["stop_reason"], 100 * report["coverage"],
             report["n_points"])
    return report


class ProgressArtifacts:
    """The scan's progress in the Prefect UI: a progress artifact and a markdown summary, kept current.

    Updates are throttled (``every_s`` for the progress bar, ``summary_every_s`` for the summary) so that a
    scan of many small batches does not spend its time on API calls; a failing API call is logged once and
    never stops the scan.
    """

    def __init__(self, run_dir: str, every_s: float = 1.0, summary_every_s: float = 5.0) -> None:
        self.run_dir = run_dir
        self.every_s, self.summary_every_s = every_s, summary_every_s
        self.started = time.monotonic()
        self.artifact_id = None
        self.last = self.last_summary = -float("inf")
        self.failed = False

    def update(self, done: int, total: int, force: bool = False) -> None:
        """Report ``done`` of ``total`` points (at most once per ``every_s`` unless ``force``)."""
        now = time.monotonic()
        if self.failed or (not force and now - self.last < self.every_s):
            return
        from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

        percent = 100.0 * min(done / max(total, 1), 1.0)
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(percent, key="scan-progress",
                                                            description=f"Points measured of run {Path(self.run_dir).name}")
            else:
                update_progress_artifact(self.artifact_id, percent)
            self.last = now
            if force or now - self.last_summary >= self.summary_every_s:
                create_markdown_artifact(runs.progress_markdown(self.run_dir, done, total, now - self.started),
                                         key="scan-progress-summary", description="The running scan, now")
                self.last_summary = now
        except Exception as exc:  # noqa: BLE001 - the UI is a view; the scan goes on without it
            self.failed = True
            logger().warning("progress in the Prefect UI stopped: %s", exc)
