"""Tasks that rebuild images from stored runs and score them."""

from __future__ import annotations

from typing import Any

from prefect import task

from fastflow import evaluate
from tasks.common import logger, retry_unless_user_error


@task(name="reconstruct-and-score", persist_result=False, retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_user_error)
def reconstruct_and_score(run_dir: str, coverage: float, method: str, chunk: int | None = None) -> dict[str, Any]:
    """The run's image at ``coverage`` rebuilt with ``method``, with its metrics (large IDW images in blocks)."""
    if chunk is not None:
        from prefect_dask import get_dask_client

        try:
            with get_dask_client():
                result = evaluate.evaluate_run(run_dir, coverage, method, chunk=chunk)
        except RuntimeError:      # not running on a Dask worker: blocks computed in this process
            result = evaluate.evaluate_run(run_dir, coverage, method, chunk=chunk)
    else:
        result = evaluate.evaluate_run(run_dir, coverage, method)
    logger().info("%s at %.1f%% with %s: %s", run_dir, 100 * result["coverage"], method,
                  ", ".join(f"{k} {result[k]:.4f}" for k in ("nrmse", "ssim") if k in result) or "no truth")
    return result


@task(name="write-evaluation", persist_result=False, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_user_error)
def write_evaluation(run_dir: str, results: list[dict[str, Any]]) -> str:
    """Store the results of one run as ``evaluation.zarr`` in its folder."""
    return evaluate.write_evaluation(run_dir, results)
