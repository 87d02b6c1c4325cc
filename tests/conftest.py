"""Test configuration: isolate every state directory before heavy libraries are imported."""

from __future__ import annotations

import os
import tempfile

_SCRATCH = tempfile.mkdtemp(prefix="fastflow-tests-")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["FASTFLOW_DATA_DIR"] = os.path.join(_SCRATCH, "runs")
os.environ["PREFECT_HOME"] = os.path.join(_SCRATCH, "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", os.path.join(_SCRATCH, "dask"))
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import pytest  # noqa: E402 - after the environment above


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One Prefect API server for the session (Prefect's test harness, SQLite in a temporary folder).

    Its URL is exported in ``PREFECT_API_URL`` so that subprocesses (the ``fastflow`` command, Dask
    workers) report to it instead of starting a temporary server each.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)
