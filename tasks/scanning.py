"""Tasks of a scan: create the run, acquire (or resume) it."""

from __future__ import annotations

import sys
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

    def progress(done: int, total: int) -> None:
        state["batch"] += 1
        bar.total = total
        bar.update(done - bar.n)
        log.info("batch %d: %d / %d points (%.1f%%)", state["batch"], done, total, 100 * done / total,
                 extra={PROGRESS_RECORD: True})

    try:
        report = runs.acquire(run_dir, progress=progress)
    finally:
        bar.close()
    log.info("scan stopped (%s) at %.1f%% coverage, %d points", report["stop_reason"], 100 * report["coverage"],
             report["n_points"])
    return report
