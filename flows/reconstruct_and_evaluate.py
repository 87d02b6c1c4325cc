"""Flow: rebuild stored runs at chosen coverages with each reconstruction method, score them, in parallel on Dask."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runtime import dask_runner, run_script
from tasks.evaluation import reconstruct_and_score, write_evaluation

#: Images larger than this many pixels are rebuilt in blocks (IDW) so that one image spreads over workers.
CHUNK_ABOVE = 2048 * 2048
CHUNK = 1024


def plan_evaluation(runs: list[str], coverages: list[float] | None, methods: list[str],
                    data_dir: str | None, chunk: int | None = None) -> list[tuple[str, list[float], int | None]]:
    """Check runs, coverages and methods before anything runs; ``(run_dir, coverages, block)`` per run.

    Without ``coverages``, each run is evaluated at its own snapshot coverages. ``block`` is the IDW block
    side: ``chunk`` if given, else 1024 for images above 2048x2048 pixels, else None (one piece).
    """
    from fastflow.errors import InputError
    from fastflow.recon import check_methods
    from fastflow.runs import STORE_NAME, find_run
    from fastflow.scan import parse_fractions
    from fastflow.store import ScanStore

    if isinstance(runs, str):
        runs = [runs]
    if not runs:
        raise InputError("reconstruct_and_evaluate needs at least one run")
    check_methods(methods)
    wanted = parse_fractions(coverages, "evaluation coverage") if coverages else None
    plan = []
    for run in runs:
        run_dir = find_run(run, data_dir)
        store = ScanStore.open(run_dir / STORE_NAME)
        covs = wanted or sorted({float(c) for c in store.snapshots()[0]})
        reached = store.n_points / store.grid.size
        too_far = [c for c in covs if round(c * store.grid.size) > store.n_points]
        if too_far:
            raise InputError(f"run {run_dir.name} reached {reached:.2%} coverage; cannot evaluate it at "
                             f"{', '.join(f'{c:.2%}' for c in too_far)}")
        plan.append((str(run_dir), covs, chunk or (CHUNK if store.grid.size > CHUNK_ABOVE else None)))
    return plan


@flow(name="evaluate-on-dask")
def _evaluate(plan: list[tuple[str, list[float], int | None]], methods: list[str]) -> dict[str, Any]:
    from prefect.artifacts import create_table_artifact

    futures = {}
    for run_dir, covs, block in plan:
        futures[run_dir] = [reconstruct_and_score.submit(run_dir, c, m, block) for c in covs for m in methods]
    out, table = {}, []
    for run_dir, fs in futures.items():
        results = [f.result() for f in fs]
        out[run_dir] = write_evaluation.submit(run_dir, results).result()
        table += [{"run": run_dir.rsplit("/", 1)[-1], "method": r["method"], "coverage": round(r["coverage"], 4),
                   **{k: round(r[k], 5) for k in ("nrmse", "ssim", "psnr") if k in r}} for r in results]
    create_table_artifact(table, key="evaluation-metrics", description="Reconstruction metrics per run, method and coverage")
    return {"evaluations": out, "metrics": table}


@flow(name="reconstruct-and-evaluate")
def reconstruct_and_evaluate(
    runs: list[str],
    coverages: list[float] | None = None,
    methods: list[str] = ["idw", "biharmonic"],  # noqa: B006 - Prefect parameters are copied per run
    chunk: int | None = None,
    data_dir: str | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Rebuild each run from its first points at each coverage with each method, score, store ``evaluation.zarr``.

    Parameters
    ----------
    runs : list of str
        Run ids (under ``data_dir``) or run folders.
    coverages : list of float, optional
        Default: each run's snapshot coverages.
    methods : list of str
        Reconstruction methods (idw, biharmonic, learned; learned also stores its uncertainty map).
    chunk : int, optional
        Rebuild IDW images in blocks of this side, spread over the workers (default: for images above
        2048x2048 pixels, blocks of 1024).
    data_dir : str, optional
        Where run ids are looked up (default: ``$FASTFLOW_DATA_DIR`` or ``./fastflow-runs``).
    dask_address : str, optional
        A running Dask scheduler; default: a local cluster of ``n_workers`` processes.
    """
    plan = plan_evaluation(runs, coverages, list(methods), data_dir, chunk)
    return _evaluate.with_options(task_runner=dask_runner(dask_address, n_workers))(plan, list(methods))


if __name__ == "__main__":
    run_script(reconstruct_and_evaluate)
