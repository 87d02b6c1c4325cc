"""Flow: an adaptive (or static) scan, persisted batch by batch, evaluated on Dask, published to Tiled."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow

from flows.runtime import run_script


def tiled_target(tiled_uri: str | None, api_key: str | None) -> tuple[str | None, str | None]:
    """The Tiled server to publish to: the parameters, else ``$FASTFLOW_TILED_URI`` / ``$FASTFLOW_TILED_API_KEY``."""
    from fastflow.catalog import ENV_API_KEY, ENV_URI

    return tiled_uri or os.environ.get(ENV_URI) or None, api_key or os.environ.get(ENV_API_KEY) or None


@flow(name="adaptive-scan")
def adaptive_scan(
    sample: str | None = "flakes",
    sampler: str = "fast",
    coverage: float = 0.2,
    batch_size: int = 50,
    snapshots: list[float] = [0.05, 0.1, 0.15, 0.2],  # noqa: B006 - Prefect parameters are copied per run
    recon: str = "idw",
    seed: int = 0,
    time_budget: float | None = None,
    target_nrmse: float | None = None,
    noise: str = "none",
    pixel_size: float = 1.0,
    units: str = "px",
    timing: str | None = None,
    dwell: float | None = None,
    speed: float | None = None,
    settle: float | None = None,
    route: bool | None = None,
    overlap: bool = False,
    sampler_options: dict[str, Any] | None = None,
    instrument: str = "simulated",
    pv_map: str | None = None,
    shape: list[int] | None = None,
    origin: list[float] | None = None,
    roi: str | None = None,
    no_go: list[str] | None = None,
    run_dir: str | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    data_dir: str | None = None,
    evaluate_methods: list[str] = ["idw", "biharmonic"],  # noqa: B006
    publish: bool = True,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Scan a sample, persist every batch as it arrives, rebuild and score it, and publish the run.

    Every parameter is validated before anything is created or moved. With ``resume`` (a run id or
    folder) the scan parameters are ignored and the stored run continues where it stopped. The scan
    parameters are those of :class:`fastflow.runs.ScanConfig`: ``instrument="epics"`` with ``pv_map`` (and
    ``shape`` or a ``sample``) drives a beamline through EPICS instead of the simulated instrument.
    ``roi`` and ``no_go`` restrict where it measures (:mod:`fastflow.regions`); the ``scan-control`` flow
    (or ``fastflow control``) pauses, resumes, stops or re-targets the running scan.

    Returns
    -------
    dict
        The run's report (``run_id``, ``run_dir``, ``store``, coverage, metrics per snapshot, times),
        plus ``evaluation`` (path) and ``tiled`` (where the run was published).
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.logging import get_run_logger

    from fastflow.recon import check_methods
    from fastflow.runs import ScanConfig, find_run, open_instructions, runs_root, scan_markdown
    from flows.reconstruct_and_evaluate import reconstruct_and_evaluate
    from tasks.publishing import publish_run
    from tasks.scanning import acquire, create_scan_run

    # 1. validate everything first
    if evaluate_methods:
        check_methods(evaluate_methods, "evaluation")
    uri, key = tiled_target(tiled_uri, api_key)
    if resume:
        folder = str(find_run(resume, data_dir))
    else:
        config = ScanConfig(sample=sample, sampler=sampler, coverage=coverage, batch_size=batch_size,
                            snapshots=snapshots, recon=recon, seed=seed, time_budget=time_budget, noise=noise,
                            target_nrmse=target_nrmse, pixel_size=pixel_size, units=units, timing=timing, dwell=dwell, speed=speed,
                            settle=settle, route=route, overlap=overlap, sampler_options=dict(sampler_options or {}),
                            instrument=instrument, pv_map=pv_map, shape=shape, origin=origin, roi=roi,
                            no_go=list(no_go or []))
        config.check()
        if run_dir is None and data_dir is not None:
            from fastflow.scan import new_run_id

            run_id = run_id or new_run_id()
            run_dir = os.path.join(data_dir, run_id)
        # 2. the run folder and its store, then the scan (each batch is on disk before the sampler sees it)
        folder = create_scan_run(config.to_dict(), run_dir, run_id)
    report = acquire(folder)
    # 3. rebuild and score at the snapshot coverages with each method, on Dask
    if evaluate_methods:
        evaluation = reconstruct_and_evaluate([folder], None, list(evaluate_methods), data_dir=data_dir,
                                              dask_address=dask_address, n_workers=n_workers)
        report["evaluation"] = evaluation["evaluations"][folder]
        report["evaluation_metrics"] = evaluation["metrics"]
    # 4. publish
    if publish:
        report["tiled"] = {"key": publish_run(folder, uri, key), "uri": uri,
                           "catalog": None if uri else str(os.path.dirname(folder) or runs_root())}
    create_table_artifact(report["snapshots"], key="scan-snapshots",
                          description=f"Snapshots of run {report['run_id']}")
    create_markdown_artifact(scan_markdown(report), key="scan-summary", description="Where the run is")
    get_run_logger().info("run %s is in %s; open it with:\n    %s", report["run_id"], folder,
                          "\n    ".join(open_instructions(report)))
    return report


if __name__ == "__main__":
    run_script(adaptive_scan)
