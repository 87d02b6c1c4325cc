"""Tasks of a sampler benchmark."""

from __future__ import annotations

from typing import Any

from prefect import task

from fastflow import benchmark
from tasks.common import logger, retry_unless_user_error


@task(name="benchmark-case", persist_result=False, retries=1, retry_condition_fn=retry_unless_user_error)
def benchmark_case(sampler: str, image: str, coverages: list[float], seed: int, batch_size: int, recon: str,
                   noise: str | None, max_side: int | None) -> list[dict[str, Any]]:
    """One sampler on one image with one seed, scored at every coverage."""
    rows = benchmark.run_case(sampler, image, coverages, seed, batch_size=batch_size, recon=recon, noise=noise,
                              max_side=max_side)
    logger().info("%s on %s (seed %d): NRMSE %s", sampler, image, seed,
                  ", ".join(f"{r['nrmse']:.4f}@{r['coverage']:.0%}" for r in rows))
    return rows
