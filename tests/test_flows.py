"""The Prefect flows, run for real (session Prefect API, local and external Dask clusters, Tiled)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fastflow.errors import InputError
from fastflow.phantoms import flakes
from fastflow.store import ScanStore

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sample") / "flakes.npy"
    np.save(path, flakes((48, 40), seed=3))
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def task_run_states(flow_run_id) -> list[str]:
    """State names of every task run of a flow run and of its subflow runs, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, FlowRunFilterId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        ids = [flow_run_id] + [r.id for r in children]
        grandchildren = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[r.id for r in children]))) if children else []
        ids += [r.id for r in grandchildren]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return [r.state.name for r in runs]


def test_adaptive_scan_full_path_then_tiled_serve(sample, tmp_path):
    """scan -> store -> evaluate on Dask -> publish; `fastflow serve` then returns the run as a Dataset."""
    from flows.adaptive_scan import adaptive_scan

    data = tmp_path / "data"
    state = adaptive_scan(sample=sample, sampler="fast", coverage=0.2, batch_size=20, snapshots=[0.1, 0.2],
                          data_dir=str(data), evaluate_methods=["idw", "biharmonic"], n_workers=2,
                          return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    run_dir = Path(report["run_dir"])
    assert run_dir.parent == data and report["n_points"] == round(0.2 * 48 * 40)
    assert report["tiled"]["key"] == report["run_id"] and report["tiled"]["catalog"] == str(data)

    # the evaluation equals the library's, method by method
    from fastflow.evaluate import evaluate_run

    ev = xr.open_zarr(report["evaluation"], consolidated=False)
    assert ev.attrs["methods"] == ["biharmonic", "idw"]
    for method in ("idw", "biharmonic"):
        direct = evaluate_run(run_dir, 0.1, method)
        got = ev.isel(coverage=0)
        np.testing.assert_allclose(got[f"image_{method}"].values, direct["image"])
        assert float(got[f"nrmse_{method}"]) == pytest.approx(direct["nrmse"])
    # biharmonic is the better reconstruction of smooth flakes, as in the FAST paper's scoring
    assert float(ev["nrmse_biharmonic"][-1]) < float(ev["nrmse_idw"][-1])

    # Prefect kept a markdown summary and the metrics table
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"scan-summary", "scan-snapshots", "evaluation-metrics"} <= keys

    # `fastflow serve RUN_DIR` (the run folder, as a new user tries first) serves the data folder's catalog,
    # where the run is published, and says so; on loopback, with a key
    from tiled.client import from_uri

    port, key = free_port(), "secret123"
    server = subprocess.Popen([sys.executable, "-m", "fastflow.cli", "serve", str(run_dir), "--port", str(port),
                               "--api-key", key], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        uri = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                assert server.poll() is None, server.stdout.read()
                return False

        wait_for(up, 120, "fastflow serve")
        client = from_uri(uri, api_key=key)
        ds = client[report["run_id"]].read()
        store = ScanStore.open(report["store"])
        m = store.measurements()
        np.testing.assert_array_equal(ds["iy"].values, m["indices"][:, 0])
        np.testing.assert_array_equal(ds["value"].values[:, 0], m["values"][:, 0])
        np.testing.assert_allclose(ds["reconstruction"].values, store.to_dataset()["reconstruction"].values)
        np.testing.assert_allclose(ds["eval_nrmse_idw"].values, ev["nrmse_idw"].values)
        assert ds.attrs["run_id"] == report["run_id"] and ds.attrs["sampler"]["name"] == "fast"
        from tiled.queries import Key

        assert report["run_id"] in client.search(Key("sampler") == "fast")
        assert report["run_id"] not in client.search(Key("sampler") == "raster")
        with pytest.raises(Exception, match="(?i)api key|401"):
            from_uri(uri)[report["run_id"]].read()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    said = server.stdout.read()
    assert f"{run_dir} is a run folder, not a data folder: serving {data}" in said
    assert f"serving the runs of {data} at {uri}" in said


def test_console_logs_show_pv_names_verbatim(tmp_path):
    """Prefect's console renders `:x:` as an emoji; a flow run's log lines must show PV names as written."""
    code = ("import flows\n"
            "from prefect import flow, get_run_logger\n"
            "@flow\n"
            "def move():\n"
            "    get_run_logger().info('moving BAR:X:SP to 1.5 mm (then :smile: [bold]done[/bold])')\n"
            "move()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "moving BAR:X:SP to 1.5 mm (then :smile: [bold]done[/bold])" in done.stderr, done.stderr[-3000:]
    assert "❌" not in done.stderr


def test_a_scan_with_regions_then_the_scan_control_flow(sample, tmp_path):
    """The scan flow takes regions as parameters; the scan-control flow (the Prefect UI's way) steers a run."""
    from flows.adaptive_scan import adaptive_scan
    from flows.scan_control import scan_control

    data = tmp_path / "data"
    report = adaptive_scan(sample=sample, sampler="fast", coverage=0.25, snapshots=[0.1], data_dir=str(data),
                           roi="0,0; 39,0; 39,35; 0,35", no_go=["10,10; 30,10; 20,30"], evaluate_methods=[],
                           publish=False)
    store = ScanStore.open(report["store"])
    codes, idx = store.region(), store.measurements()["indices"]
    assert (codes[idx[:, 0], idx[:, 1]] == 0).all() and (codes[36:] == 1).all() and (codes == 2).sum() > 100
    assert report["coverage"] == pytest.approx(len(idx) / int((codes == 0).sum()))
    assert report["no_go_crossing"]["points"] == 0 and store.attrs["config"]["no_go"] == ["10,10; 30,10; 20,30"]
    # the Prefect UI showed the scan's progress: a progress artifact at 100 % and a summary of the run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = {key: client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                 for key in ("scan-progress", "scan-progress-summary")}
    assert any(a.data == 100.0 for a in found["scan-progress"])
    summary = [a.data for a in found["scan-progress-summary"] if report["run_id"] in a.data]
    assert any(f"{report['n_points']} of {report['n_points']}" in text and "allowed pixels" in text
               and ": complete" in text for text in summary)
    sent = scan_control(run=report["run_id"], action="stop_rule", coverage=0.4, data_dir=str(data))
    assert sent["action"] == "stop_rule" and sent["coverage"] == 0.4 and sent["source"] == "prefect"
    state = scan_control(run=report["run_id"], action="no_go", data_dir=str(data), return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError, match="needs a region"):
        state.result()


def test_invalid_parameters_are_refused_before_anything_is_created(sample, tmp_path):
    from flows.adaptive_scan import adaptive_scan

    data = tmp_path / "data"
    for bad, fragment in ((dict(coverage=1.5), "coverage"), (dict(sampler="zigzag"), "zigzag"),
                          (dict(noise="loud:3"), "noise"), (dict(evaluate_methods=["magic"]), "magic"),
                          (dict(batch_size=0), "batch size")):
        state = adaptive_scan(sample=sample, data_dir=str(data), publish=False, return_state=True, **bad)
        assert state.is_failed()
        with pytest.raises(InputError, match=fragment):
            state.result()
    assert not data.exists()


def test_reconstruct_and_evaluate_in_blocks_equals_whole_image(sample, tmp_path):
    """IDW computed as a dask array in 16-pixel blocks on the workers equals the one-piece image."""
    from flows.adaptive_scan import adaptive_scan
    from flows.reconstruct_and_evaluate import reconstruct_and_evaluate

    data = tmp_path / "data"
    report = adaptive_scan(sample=sample, sampler="random", coverage=0.15, snapshots=[0.05, 0.15],
                           data_dir=str(data), evaluate_methods=[], publish=False)
    out = reconstruct_and_evaluate([report["run_id"]], coverages=[0.1], methods=["idw"], chunk=16,
                                   data_dir=str(data), n_workers=2)
    ev = xr.open_zarr(out["evaluations"][report["run_dir"]], consolidated=False)
    from fastflow.evaluate import evaluate_run

    np.testing.assert_array_equal(ev["image_idw"].isel(coverage=0).values,
                                  evaluate_run(report["run_dir"], 0.1, "idw")["image"])
    with pytest.raises(InputError, match="cannot evaluate"):
        reconstruct_and_evaluate([report["run_id"]], coverages=[0.5], data_dir=str(data))
    with pytest.raises(InputError, match="no run"):
        reconstruct_and_evaluate(["no-such-run"], data_dir=str(data))


def test_training_data_is_cached_and_a_model_is_trained(tmp_path):
    from flows.generate_training_data import generate_training_data
    from flows.train_erd_model import train_erd_model

    params = dict(images=["camera", "grains:3"], coverages=[0.05, 0.2], c_values=[2.0, 8.0], rows=200,
                  max_side=48, chunk_dir=str(tmp_path / "chunks"), n_workers=2)
    first = generate_training_data(out=str(tmp_path / "ts1.zarr"), return_state=True, **params)
    assert first.is_completed()
    result = first.result()
    assert result["chunks"] == 4 and result["rows"] == 4 * 200
    again = generate_training_data(out=str(tmp_path / "ts2.zarr"), return_state=True, **params)
    first_states = task_run_states(first.state_details.flow_run_id)
    assert "Cached" not in first_states
    assert task_run_states(again.state_details.flow_run_id).count("Cached") == 4   # every chunk came from the cache
    from fastflow.erd.fit import load_training_set

    a, b = load_training_set(result["training_set"]), load_training_set(again.result()["training_set"])
    np.testing.assert_array_equal(a.features, b.features)

    out = train_erd_model(out=str(tmp_path / "model"), training_set=result["training_set"], c_values=[2.0, 8.0],
                          validation_images=["particles:4"], max_iter=5, max_side=64, n_workers=2)
    card = out["card"]
    assert card["c"] in (2.0, 8.0) and set(card["selection"]["scores"]) == {"2", "8"}
    assert Path(out["figure"]).stat().st_size > 5_000
    from fastflow.erd.model import ERDModel

    assert ERDModel.load(out["model"]).content_hash() == card["content_hash"]
    with pytest.raises(InputError, match="both for training"):
        train_erd_model(out=str(tmp_path / "m2"), training_set=result["training_set"], c_values=[2.0],
                        validation_images=["camera"])
    with pytest.raises(InputError, match="not in the training set"):
        train_erd_model(out=str(tmp_path / "m3"), training_set=result["training_set"], c_values=[4.0],
                        validation_images=["particles:4"])


def test_benchmark_on_an_external_dask_cluster(prefect_api, tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1; the flow runs on them."""
    from flows.benchmark_samplers import benchmark_samplers

    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        address = f"tcp://127.0.0.1:{port}"
        procs.append(subprocess.Popen([str(bindir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        def two_workers() -> bool:
            try:
                with Client(address, timeout=5) as c:
                    return len(c.scheduler_info()["workers"]) == 2
            except OSError:
                return False

        wait_for(two_workers, 90, "two dask workers")
        out = tmp_path / "bench"
        state = benchmark_samplers(samplers=["halton", "raster"], images=["grains:2", "particles:2"],
                                   coverages=[0.1, 0.2], seeds=[0], max_side=40, out=str(out), dask_address=address,
                                   publish=True, return_state=True)
        assert state.is_completed(), state.message
        result = state.result()
        ds = xr.open_zarr(out / "results.zarr", consolidated=False)
        assert dict(ds.sizes) == {"image": 2, "sampler": 2, "coverage": 2, "seed": 1}
        assert np.all(np.isfinite(ds["nrmse"].values)) and np.all(ds["nrmse"].values > 0)
        # more points, better images
        assert np.all(ds["nrmse"].isel(coverage=1).values < ds["nrmse"].isel(coverage=0).values)
        assert "| grains:2 | halton |" in result["table"] and (out / "curves.png").stat().st_size > 5_000
        rows = json.loads((out / "results.json").read_text())
        assert len(rows) == 2 * 2 * 2
        # the four cases ran as task runs on the external workers, recorded in the same Prefect API
        assert task_run_states(state.state_details.flow_run_id).count("Completed") >= 4
        from fastflow.catalog import local_catalog

        with local_catalog(tmp_path) as catalog:
            published = catalog[result["tiled"]["key"]].read()
        np.testing.assert_allclose(published["nrmse"].values, ds["nrmse"].values)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_killed_scan_resumes_without_losing_or_repeating_points(tmp_path):
    """SIGKILL the `fastflow scan` process mid-scan; `fastflow scan --resume RUN_ID` completes the run."""
    image = tmp_path / "big.npy"
    np.save(image, flakes((300, 200), seed=4))
    data = tmp_path / "data"
    env = {**os.environ, "FASTFLOW_DATA_DIR": str(data)}
    args = [sys.executable, "-m", "fastflow.cli", "scan", "--sample", str(image), "--sampler", "halton",
            "--stop-coverage", "0.5", "--snapshots", "0.1", "--batch-size", "20", "--evaluate", "none",
            "--no-publish"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def some_points() -> bool:
            stores = list(data.glob("*/scan.zarr"))
            if not stores:
                assert proc.poll() is None, proc.stderr.read()
                return False
            try:
                return ScanStore.open(stores[0]).n_points >= 2000
            except Exception:  # noqa: BLE001 - the store may be between two commits
                return False

        wait_for(some_points, 240, "2000 stored points")
    finally:
        proc.kill()
        proc.wait()
    run_dir = next(data.iterdir())
    before = ScanStore.open(run_dir / "scan.zarr").measurements()
    n_total = 300 * 200
    assert 2000 <= len(before["indices"]) < round(0.5 * n_total)

    done = subprocess.run([*args[:3], "scan", "--resume", run_dir.name, "--report", "json", "--evaluate", "none",
                           "--no-publish"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["run_id"] == ScanStore.open(run_dir / "scan.zarr").attrs["run_id"]
    after = ScanStore.open(run_dir / "scan.zarr")
    m = after.measurements()
    np.testing.assert_array_equal(m["indices"][: len(before["indices"])], before["indices"])
    flat = m["indices"][:, 0] * 200 + m["indices"][:, 1]
    assert len(flat) == len(np.unique(flat)) == round(0.5 * n_total)      # none lost, none measured twice
    assert after.attrs["status"] == "complete"
    again = subprocess.run([*args[:3], "scan", "--resume", run_dir.name], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "already complete" in again.stderr
    assert ScanStore.open(run_dir / "scan.zarr").attrs["status"] == "complete"    # the refusal changed nothing


def test_learned_model_flow_then_a_scan_and_evaluation_with_uncertainty(sample, tmp_path, monkeypatch,
                                                                        tiny_learned_model_path):
    """train_learned_model (sets on Dask, torch in a task, artifacts); then a scan with --recon learned and a
    learned evaluation, whose uncertainty reaches the store, evaluation.zarr and the published dataset."""
    from fastflow.catalog import run_dataset
    from fastflow.recon.learned import LearnedModel
    from flows.adaptive_scan import adaptive_scan
    from flows.train_learned_model import train_learned_model

    params = dict(out=str(tmp_path / "learned"), train_sources=4, validation_sources=3, crop=32, steps=6,
                  batch_size=4, base=4, depth=2, n_workers=2)
    result = train_learned_model(**params)
    model = LearnedModel.load(result["model"])
    assert model.card["training"]["steps"] == 6 and model.card["content_hash"] == result["card"]["content_hash"]
    assert all(Path(f).stat().st_size > 5_000 for f in result["figures"].values())
    assert json.loads((tmp_path / "learned" / "model-card.json").read_text())["recipe"]["crop"] == 32
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"learned-model-card"} <= keys
    again = train_learned_model(**params)           # a rerun of a finished training: nothing is redone
    assert again["card"]["content_hash"] == result["card"]["content_hash"]
    with pytest.raises(InputError, match="another recipe"):
        train_learned_model(**{**params, "steps": 7})

    monkeypatch.setenv("FASTFLOW_LEARNED_MODEL", str(tiny_learned_model_path))
    data = tmp_path / "data"
    report = adaptive_scan(sample=sample, sampler="halton", coverage=0.2, snapshots=[0.1, 0.2], recon="learned",
                           data_dir=str(data), evaluate_methods=["idw", "learned"], n_workers=2)
    store = ScanStore.open(report["store"])
    sigma = store.uncertainty()
    assert sigma is not None and sigma.shape == (48, 40) and np.all(sigma >= 0)
    assert store.attrs["reconstruction_model"]["content_hash"] == LearnedModel.load(tiny_learned_model_path).content_hash
    ev = xr.open_zarr(report["evaluation"], consolidated=False)
    assert "sigma_learned" in ev and "sigma_idw" not in ev
    assert 0 <= float(ev["coverage90_learned"][-1]) <= 1
    published = run_dataset(report["run_dir"])
    assert "uncertainty" in published and "eval_sigma_learned" in published
