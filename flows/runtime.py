"""Where flows run: the Dask task runner (local cluster or an existing scheduler) and script entry points.

Embedded defaults: no Prefect server (Prefect's ephemeral API in a subprocess) and a local Dask cluster
of one single-threaded worker process per core. Scaling out: pass ``dask_address`` (a running
``dask scheduler``, dask-jobqueue or Kubernetes cluster) and set ``PREFECT_API_URL`` to a Prefect server.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import dask

from fastflow.errors import InputError


def default_workers() -> int:
    """Workers of the local cluster: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def share_api_with_workers() -> None:
    """Make processes started from here (local Dask workers) report to this process's Prefect API.

    Without a configured server, Prefect runs a temporary one per process; Dask worker processes would
    each start their own and their task runs would land in other databases. So the temporary server is
    started now and its address exported in ``PREFECT_API_URL`` for child processes.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        url = server.api_url
    os.environ["PREFECT_API_URL"] = url


def dask_runner(dask_address: str | None = None, n_workers: int | None = None) -> Any:
    """A :class:`prefect_dask.DaskTaskRunner` on an existing scheduler, or on a new local cluster.

    Parameters
    ----------
    dask_address : str, optional
        ``tcp://host:port`` of a running Dask scheduler. Its workers need ``PREFECT_API_URL`` of the same
        Prefect server to report their task runs.
    n_workers : int, optional
        Size of the local cluster (default: :func:`default_workers`); single-threaded worker processes.
    """
    from prefect_dask import DaskTaskRunner

    quiet_dask()
    if dask_address:
        if not isinstance(dask_address, str) or "://" not in dask_address:
            raise InputError(f"dask_address must look like tcp://HOST:PORT; got {dask_address!r}")
        return DaskTaskRunner(address=dask_address)
    n = default_workers() if n_workers is None else n_workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n_workers must be a positive integer; got {n_workers!r}")
    share_api_with_workers()
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes the many small numpy
    # allocations of a FAST step return memory to the system at once: measured 30-50 % slower cases here.
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": ":0", "host": "127.0.0.1"})


def quiet_dask() -> None:
    """Keep Dask's start-up and shutdown chatter (INFO) out of flow logs, here and in worker processes."""
    import logging

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    level = os.environ["DASK_LOGGING__DISTRIBUTED"].upper()
    for name in ("distributed", "prefect.task_runner.dask"):
        logging.getLogger(name).setLevel(level if name == "distributed" else "WARNING")


def parse_cli_parameters(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments of a flow script; values are JSON when they parse as JSON, else strings."""
    params: dict[str, Any] = {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"flow arguments are key=value (JSON values); got {arg!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def run_script(flow: Any) -> None:
    """Run ``flow`` with ``key=value`` parameters from the command line; print its result as JSON."""
    from fastflow.errors import FastflowError
    from fastflow.store import jsonable

    try:
        result = flow(**parse_cli_parameters(sys.argv[1:]))
    except (FastflowError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(jsonable(result), indent=2))
