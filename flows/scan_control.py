"""Flow: steer a running scan from the Prefect UI (pause, resume, stop, a new stop rule, a no-go region)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runtime import run_script


@flow(name="scan-control")
def scan_control(
    run: str,
    action: str,
    coverage: float | None = None,
    time_budget: float | None = None,
    target_nrmse: float | None = None,
    region: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Send a control to the scan of run ``run`` (its id under ``data_dir``, or its folder).

    ``action`` is ``pause``, ``resume``, ``stop``, ``stop_rule`` (with ``coverage``, ``time_budget`` and/or
    ``target_nrmse``)
    or ``no_go`` (with ``region``: a polygon ``"x,y; x,y; x,y"`` in grid pixels, or a mask / JSON polygon
    file). The scan applies it at its next batch boundary and records it in the run's provenance
    (:mod:`fastflow.controls`).

    Returns
    -------
    dict
        ``run_dir``, ``control`` (the file sent) and the control itself.
    """
    import json

    from prefect.logging import get_run_logger

    from fastflow.controls import send_control
    from fastflow.runs import find_run

    run_dir = find_run(run, data_dir)
    path = send_control(run_dir, action, source="prefect", coverage=coverage, time_budget=time_budget,
                        target_nrmse=target_nrmse, region=region)
    get_run_logger().info("sent %s to run %s; it applies at the scan's next batch boundary", action, run_dir.name)
    return {"run_dir": str(run_dir), "control": str(path), **json.loads(path.read_text())}


if __name__ == "__main__":
    run_script(scan_control)
