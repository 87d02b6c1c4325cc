"""deployments/prefect.yaml against a real Prefect server: apply, list, trigger, run with a worker.

This is what a facility does (deployments/README.md), with every piece in a temporary folder:
``prefect server start`` (its own PREFECT_HOME and SQLite), ``prefect work-pool create``,
``prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml`` from the repository root,
``prefect deployment run`` with small parameters and ``prefect worker start --run-once`` from another
folder (the ``{{ $PROJECT_ROOT }}`` pull step must bring the flow run back to the checkout).

The session ``prefect_api`` fixture (Prefect's test harness) is not used: the subprocesses get their
own environment (a copied dict), and ``os.environ`` of the test process is left as it was.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

psutil = pytest.importorskip("psutil")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "fastflow-pool"
EXPECTED = {
    "adaptive-scan/on-demand": "flows/adaptive_scan.py:adaptive_scan",
    "benchmark-samplers/nightly": "flows/benchmark_samplers.py:benchmark_samplers",
    "generate-training-data/on-demand": "flows/generate_training_data.py:generate_training_data",
    "train-erd-model/on-demand": "flows/train_erd_model.py:train_erd_model",
    "train-learned-model/on-demand": "flows/train_learned_model.py:train_learned_model",
    "reconstruct-and-evaluate/on-demand": "flows/reconstruct_and_evaluate.py:reconstruct_and_evaluate",
    "scan-control/operator": "flows/scan_control.py:scan_control",
}
SERVER_START_S = 120    # about 13 s on a fresh database here; generous for a busy machine
WORKER_RUN_S = 300      # the small scan below takes about 20 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_of(home: str) -> list[Any]:
    """Every live process started with our PREFECT_HOME (server, worker, flow runs, Dask workers)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get("PREFECT_HOME") == home:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGINT the process and its descendants, wait, then SIGKILL whatever is left."""
    if proc.poll() is not None:
        return
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGINT)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    proc.wait(timeout=5)


class Server:
    """A ``prefect server start`` subprocess and the environment for the commands that talk to it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.home = str(tmp / "prefect-home")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_API_", "PREFECT_PROFILE", "FASTFLOW_TILED_")) and k != "PROJECT_ROOT"}
        (tmp / "tmp").mkdir()
        env.update({
            "PREFECT_HOME": self.home,
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "FASTFLOW_DATA_DIR": str(tmp / "default-runs"),     # never ./fastflow-runs of the checkout
            "DASK_TEMPORARY_DIRECTORY": str(tmp / "dask"),
            "TMPDIR": str(tmp / "tmp"),                         # the process worker's per-run folders
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        self.log = open(tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--analytics-off"],
            env=env, cwd=tmp, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.workers: list[subprocess.Popen] = []

    def wait_healthy(self) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < SERVER_START_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({self.proc.returncode}):\n{self.server_log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {SERVER_START_S} s:\n{self.server_log()}")

    def server_log(self) -> str:
        self.log.flush()
        return (self.tmp / "server.log").read_text(errors="replace")[-4000:]

    def prefect(self, *args: str, cwd: Path = ROOT, timeout: float = 180) -> str:
        """Run a ``prefect`` command against this server; its output (failing the test on an error)."""
        done = subprocess.run([PREFECT, *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"prefect {' '.join(args)} failed ({done.returncode}):\n{out[-4000:]}"
        return out

    def api(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        # workers first (stack notes G3: a worker or runner whose server is gone can hang), then the server
        for worker in self.workers:
            stop(worker)
        stop(self.proc)
        self.log.close()
        deadline = time.monotonic() + 15     # Dask workers of a flow run may take a moment to exit
        left = processes_of(self.home)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = processes_of(self.home)
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        assert not left, f"processes left behind (killed now): {[(p.pid, p.name()) for p in left]}"


@pytest.fixture
def prefect_server(tmp_path: Path):
    before = os.environ.get("PREFECT_API_URL")
    server = Server(tmp_path)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.close()
    assert os.environ.get("PREFECT_API_URL") == before, "PREFECT_API_URL leaked into the test process"


def test_deployments_apply_and_run_with_a_worker(prefect_server: Server, tmp_path: Path) -> None:
    server = prefect_server

    # 1. the pool and every deployment of deployments/prefect.yaml, applied from the repository root
    server.prefect("work-pool", "create", POOL, "--type", "process")
    server.prefect("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", cwd=ROOT)

    flows = {f["id"]: f["name"] for f in server.api("POST", "/flows/filter", {})}
    deployments = {f"{flows[d['flow_id']]}/{d['name']}": d for d in server.api("POST", "/deployments/filter", {})}
    assert sorted(deployments) == sorted(EXPECTED)
    for name, dep in deployments.items():
        assert dep["entrypoint"] == EXPECTED[name]
        assert (ROOT / dep["entrypoint"].split(":")[0]).is_file()
        assert dep["work_pool_name"] == POOL
        # deployed without PROJECT_ROOT in the environment, the placeholder stays for the worker to fill
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": "{{ $PROJECT_ROOT }}"}}], name
        assert dep["enforce_parameter_schema"], name
        if name != "benchmark-samplers/nightly":
            assert dep["schedules"] == [], f"{name} is on demand"

    nightly = deployments["benchmark-samplers/nightly"]
    assert len(nightly["schedules"]) == 1
    schedule = nightly["schedules"][0]
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is False, "the nightly benchmark ships paused; a facility turns it on"
    assert nightly["parameters"]["max_side"] <= 256

    # 2. a small scan, triggered from the CLI like an operator would
    image = tmp_path / "sample.npy"
    yy, xx = np.mgrid[:48, :48]
    np.save(image, (np.sin(xx / 5.0) + np.cos(yy / 7.0)).astype(np.float32))
    data_dir = tmp_path / "runs"
    out = server.prefect(
        "deployment", "run", "adaptive-scan/on-demand",
        "--param", f"sample={image}", "--param", "coverage=0.05", "--param", "snapshots=[0.05]",
        "--param", "batch_size=20", "--param", 'evaluate_methods=["idw"]', "--param", "publish=false",
        "--param", f"data_dir={data_dir}", "--param", "n_workers=1")
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    run = server.api("GET", f"/flow_runs/{flow_run_id}")
    assert run["parameters"]["sample"] == str(image)
    assert run["parameters"]["coverage"] == 0.05

    # 3. one worker, started outside the checkout with PROJECT_ROOT naming it, runs the flow and exits
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--run-once"],
                                  env={**server.env, "PROJECT_ROOT": str(ROOT)},
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server.workers.append(worker)
        try:
            worker.wait(timeout=WORKER_RUN_S)
        except subprocess.TimeoutExpired:
            stop(worker)
    logs = worker_log.read_text(errors="replace")[-6000:]
    run = server.api("GET", f"/flow_runs/{flow_run_id}")
    assert run["state_type"] == "COMPLETED", f"flow run ended {run['state_type']}; worker log:\n{logs}"

    # 4. the run folder is where the parameters said, with its store
    folders = [p for p in data_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, sorted(data_dir.iterdir())
    store = folders[0] / "scan.zarr"
    assert (store / "zarr.json").is_file()
    report = json.loads((folders[0] / "report.json").read_text())
    assert report["run_id"] == folders[0].name
    assert not (tmp_path / "default-runs").exists(), "data_dir was ignored"
