"""The live view: a real `fastflow serve` app (Tiled + the view) on 127.0.0.1 watching and steering real scans.

The browser tests drive Debian's Chromium through Playwright (no browser download). They run wherever
``/usr/bin/chromium`` exists and are required where ``FASTFLOW_BROWSER_TESTS=required`` (``.ci/run``).
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fastflow.catalog import serving
from fastflow.controls import send_control
from fastflow.phantoms import flakes
from fastflow.runs import ScanConfig, acquire, create_run
from fastflow.scan import STOP_OPERATOR
from fastflow.store import ScanStore
from fastflow.view import downsample, resolve_run

KEY = "viewkey123"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sample") / "flakes.npy"
    np.save(path, flakes((200, 160), seed=5))
    return str(path)


class Scan:
    """A scan running in a thread until it is stopped (coverage 1, raster: long enough to watch)."""

    def __init__(self, data: Path, sample: str, name: str, **config) -> None:
        config = {"sampler": "raster", "coverage": 1.0, "snapshots": [0.05], "batch_size": 20, **config}
        self.run = create_run(ScanConfig(sample=sample, **config), data / name)
        self.report: dict = {}
        self.thread = threading.Thread(target=lambda: self.report.update(acquire(self.run, figure=False)))

    def __enter__(self) -> Scan:
        self.thread.start()
        wait_for(lambda: ScanStore.open(self.run / "scan.zarr").n_points > 0, 60, "the first batch")
        return self

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            send_control(self.run, "stop", source="test")
        self.thread.join(timeout=120)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_downsample_and_run_names():
    image = np.arange(64, dtype=float).reshape(8, 8)
    small = downsample(image, 4)
    assert small.shape == (4, 4) and small[0, 0] == np.mean([0, 1, 8, 9])
    assert downsample(image, 8) is image


def test_run_names_cannot_leave_the_data_folder(tmp_path, sample):
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    create_run(ScanConfig(sample=sample, sampler="halton", coverage=0.01), data / "r1")
    create_run(ScanConfig(sample=sample, sampler="halton", coverage=0.01), outside / "secret")
    os.symlink(outside / "secret", data / "link")
    assert resolve_run(data, "r1") == (data / "r1").resolve()
    for name in ("..", "../outside/secret", "/etc", ".tiled", "link", "r1/../r1", "", "r1\x00"):
        assert resolve_run(data, name) is None, name


def test_the_view_needs_the_key_watches_a_scan_and_steers_it(data, sample):
    with Scan(data, sample, "r1") as scan, serving(data, api_key=KEY, publish_existing=False) as srv:
        with httpx.Client(base_url=f"{srv.uri}/view", trust_env=False, timeout=30) as http:
            # no key, a wrong key: nothing
            for path in ("/", "/api/runs", "/api/runs/r1/state", "/api/runs/r1/image/points.png"):
                assert http.get(path).status_code == 401
                assert http.get(path, headers={"Authorization": "Apikey wrong123"}).status_code == 401
            assert http.post("/api/runs/r1/control", json={"action": "stop"}).status_code == 401
            assert not list((scan.run / "controls").glob("*.json")) if (scan.run / "controls").exists() else True
            # the key in the query sets a cookie that the page's requests then carry
            page = http.get("/", params={"api_key": KEY})
            assert page.status_code == 200 and "fastflow live view" in page.text
            assert http.get("/api/runs").status_code == 200
            http.cookies.clear()
            auth = {"Authorization": f"Apikey {KEY}"}
            # traversal attempts reach nothing
            for bad in ("..", "%2e%2e", "..%2F..%2Fetc", ".tiled", "r1%2F..%2Fr1", "nonexistent"):
                assert http.get(f"/api/runs/{bad}/state", headers=auth).status_code == 404, bad
                assert http.post(f"/api/runs/{bad}/control", headers=auth, json={"action": "stop"}).status_code in (404, 405)
            assert http.get("/api/runs/r1/image/secret.png", headers=auth).status_code == 404
            runs = http.get("/api/runs", headers=auth).json()
            assert [r["name"] for r in runs] == ["r1"] and runs[0]["status"] == "running"
            # points and the live reconstruction update while the scan runs
            first = http.get("/api/runs/r1/state", headers=auth).json()
            image1 = http.get("/api/runs/r1/image/points.png", params={"size": 200}, headers=auth)
            wait_for(lambda: http.get("/api/runs/r1/state", headers=auth).json()["n_points"] > first["n_points"] + 400,
                     60, "more points")
            image2 = http.get("/api/runs/r1/image/points.png", params={"size": 200}, headers=auth)
            a, b = (np.asarray(Image.open(io.BytesIO(i.content))) for i in (image1, image2))
            assert a.shape == b.shape == (200, 160, 4) and (b[..., 3] > 0).sum() > (a[..., 3] > 0).sum()
            live = np.asarray(Image.open(io.BytesIO(http.get("/api/runs/r1/image/live.png", headers=auth).content)))
            assert live.shape[:2] == (200, 160) and (live[..., 3] == 255).all()
            # the stored reconstruction is the latest snapshot while the scan runs; a raster has no ERD
            wait_for(lambda: http.get("/api/runs/r1/state", headers=auth).json()["snapshots"], 60, "the 5 % snapshot")
            recon = http.get("/api/runs/r1/image/reconstruction.png", params={"size": 64}, headers=auth)
            assert recon.status_code == 200 and Image.open(io.BytesIO(recon.content)).size == (40, 50)
            assert http.get("/api/runs/r1/image/erd.png", headers=auth).status_code == 204
            # steering: a bad control is refused with the reason; a stop ends the scan with the data kept
            bad = http.post("/api/runs/r1/control", headers=auth, json={"action": "stop_rule", "coverage": 3})
            assert bad.status_code == 400 and "coverage" in bad.json()["error"]
            assert http.post("/api/runs/r1/control", headers=auth, json={"action": "stop"}).json()["source"] == "view"
            scan.thread.join(timeout=120)
            state = http.get("/api/runs/r1/state", headers=auth).json()
    assert scan.report["stop_reason"] == STOP_OPERATOR == state["stop_reason"] and state["status"] == "complete"
    assert state["n_points"] == scan.report["n_points"] == ScanStore.open(scan.run / "scan.zarr").n_points
    assert state["controls"][-1]["action"] == "stop" and state["controls"][-1]["source"] == "view"


browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("FASTFLOW_BROWSER_TESTS") != "required",
    reason=f"no {CHROMIUM} (apt-get install chromium); .ci/run requires these tests")


@pytest.fixture
def page():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, headless=True,
                                     args=["--no-sandbox"])
        try:
            yield chromium.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            chromium.close()


@browser
def test_in_a_browser_the_view_updates_draws_a_no_go_region_and_stops_the_scan(data, sample, page, tmp_path):
    with Scan(data, sample, "r1", sampler="fast", coverage=0.6) as scan, \
            serving(data, api_key=KEY, publish_existing=False) as srv:
        refused = page.goto(f"{srv.uri}/view/")
        assert refused.status == 401
        page.goto(f"{srv.uri}/view/?api_key={KEY}&run=r1")
        page.wait_for_function("Number(document.body.dataset.points) > 0", timeout=30_000)
        # each new batch reaches the page (how fast is measured by benchmarks/live_view.py, not asserted)
        for _ in range(5):
            n = ScanStore.open(scan.run / "scan.zarr").n_points
            wait_for(lambda n=n: ScanStore.open(scan.run / "scan.zarr").n_points > n, 30, "a new batch")
            m = ScanStore.open(scan.run / "scan.zarr").n_points
            page.wait_for_function(f"Number(document.body.dataset.points) >= {m}", timeout=30_000)
        page.wait_for_function("document.getElementById('points').naturalWidth > 0")
        # draw a no-go region over the top half of the points panel: four clicks, then send
        page.click("#draw")
        box = page.locator("#overlay").bounding_box()
        for fx, fy in ((0.0, 0.0), (0.999, 0.0), (0.999, 0.45), (0.0, 0.45)):
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.click("#sendnogo")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('sent no_go')")
        wait_for(lambda: any(c["action"] == "no_go" for c in ScanStore.open(scan.run / "scan.zarr").attrs.get("controls", [])),
                 30, "the no-go region to apply")
        applied = next(c for c in ScanStore.open(scan.run / "scan.zarr").attrs["controls"] if c["action"] == "no_go")
        n_then = applied["n_points"]
        wait_for(lambda: ScanStore.open(scan.run / "scan.zarr").n_points > n_then + 200, 60, "points after the region")
        page.screenshot(path=str(tmp_path / "view.png"), full_page=True)
        if os.environ.get("FASTFLOW_SCREENSHOTS"):
            shutil.copy(tmp_path / "view.png", os.environ["FASTFLOW_SCREENSHOTS"])
        page.click("#stop")
        scan.thread.join(timeout=120)
        page.wait_for_function("document.body.dataset.status === 'complete'", timeout=30_000)
        assert "stopped by the operator" in page.text_content("#status")
    store = ScanStore.open(scan.run / "scan.zarr")
    codes, idx = store.region(), store.measurements()["indices"]
    after = idx[n_then:]
    assert len(after) > 200 and not (codes[after[:, 0], after[:, 1]] == 2).any()     # never measured after it was drawn
    assert (codes[:80] == 2).all() and store.attrs["stop_reason"] == STOP_OPERATOR
    assert [c["source"] for c in store.attrs["controls"]] == ["view", "view"]
