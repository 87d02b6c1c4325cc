"""A running ``fastflow scan`` stopped by SIGINT or SIGTERM: real processes, a real temporary Prefect server.

SIGTERM is what a batch scheduler, systemd or a Prefect cancellation sends. It must stop the scan as Ctrl-C
does: the points measured so far stay in the store, the run is recorded as ``interrupted`` (resumable), the
exit status says which signal stopped it, and no process the command started (Prefect's temporary API
server, the Dask nanny and worker) outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

psutil = pytest.importorskip("psutil")

from fastflow.errors import FastflowError  # noqa: E402
from fastflow.store import ScanStore  # noqa: E402
from test_deployments import processes_of  # noqa: E402 - every process started with a PREFECT_HOME

START_S = 240     # the command reaches its first batch in about 20 s here (temporary server, imports)


def _store(run: Path) -> ScanStore | None:
    try:
        return ScanStore.open(run / "scan.zarr")
    except FastflowError:
        return None


@pytest.mark.parametrize(("signum", "phase"), [(signal.SIGTERM, "scan"), (signal.SIGTERM, "evaluation"),
                                               (signal.SIGINT, "evaluation")],
                         ids=["SIGTERM-while-scanning", "SIGTERM-while-evaluating", "SIGINT-while-evaluating"])
def test_a_signalled_scan_keeps_its_points_and_leaves_no_process(tmp_path, signum, phase):
    y, x = np.mgrid[0:96, 0:96]
    image = (np.sin(x / 7.0) + np.cos(y / 5.0) + (x > 48)).astype(np.float32)
    np.save(tmp_path / "sample.npy", image)
    run, home = tmp_path / "run", str(tmp_path / "prefect")
    env = {**os.environ, "PREFECT_HOME": home, "FASTFLOW_DATA_DIR": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)      # the command starts its own temporary server, which must not outlive it
    scanning = phase == "scan"
    what = (["--sampler", "fast", "--stop-coverage", "0.7", "--evaluate", "none"] if scanning else
            ["--sampler", "halton", "--stop-coverage", "0.2", "--evaluate", "idw,biharmonic"])
    args = [sys.executable, "-m", "fastflow.cli", "scan", "--sample", str(tmp_path / "sample.npy"), "--out", str(run),
            "--no-publish", "--report", "json", "--workers", "1", "--batch-size", "20", *what]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + START_S
        children: list = []
        while proc.poll() is None and time.monotonic() < deadline:
            store = _store(run)
            with_points = store is not None and store.n_points > 0
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            if scanning and with_points:
                break
            # evaluating: the scan is complete and the Dask cluster is starting (server + nanny + worker)
            if not scanning and with_points and store.attrs.get("status") == "complete" and len(children) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the scan ended before it was signalled:\n{proc.communicate()[1][-3000:]}"
        assert children, "the command started no temporary Prefect server"
        before = _store(run).n_points
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 128 + signum, err[-3000:]
    # nothing the command started is left: the temporary server, the nanny and the worker are gone
    _, alive = psutil.wait_procs([*children, *processes_of(home)], timeout=30)
    leftovers = [" ".join(p.cmdline())[:120] for p in alive if p.is_running()]
    for p in alive:
        p.kill()
    assert not leftovers, leftovers
    # every point measured before the signal is in the store, with the values the instrument read
    store = ScanStore.open(run / "scan.zarr")
    m = store.measurements()
    assert store.n_points >= before > 0
    np.testing.assert_allclose(m["values"][:, 0], image[m["indices"][:, 0], m["indices"][:, 1]], rtol=1e-6)
    how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    if scanning:
        assert store.attrs["status"] == "interrupted" and store.attrs["stop_reason"] == "interrupted"
        assert f"{how}: the {store.n_points} points measured so far are saved in {run}" in err
        assert f"fastflow scan --resume {run}" in err
    else:
        assert store.attrs["status"] == "complete"
        assert f"{how} after the scan had finished" in err and f"fastflow recon {run}" in err
