"""Live view timings: batch -> page delay, what watching costs a scan, and a 4096² run's first view and updates.

Run on demand (needs Debian's chromium and Playwright, as the browser tests do)::

    python benchmarks/live_view.py                       # all three parts
    python benchmarks/live_view.py --parts big --big 4096 --big-points 1600000

Parts
-----
``delay``
    A FAST scan of flakes (600x400) runs in a thread; a headless Chromium shows it. For each of ``--batches``
    batches the time from the batch's commit (seen by polling the store every 5 ms) to the page showing
    its point count is taken.
``cost``
    The same scan's wall time (``--cost-coverage``, alternating runs) with ``fastflow serve`` running in its own
    process and no page open, and with two pages open, ``--repeats`` each; the difference against the
    run-to-run spread. On a machine with few cores the browsers' own work competes with the scan for CPU.
``big``
    A synthetic run on a ``--big`` square grid with ``--big-points`` points (written in batches of 50,000 with
    a snapshot), served by the view: the first view (state plus the points, live and reconstruction layers at
    1024 px, cold) and an update (one more batch, the same requests again).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from fastflow.catalog import serving
from fastflow.controls import send_control
from fastflow.grid import ScanGrid
from fastflow.runs import ScanConfig, acquire, create_run
from fastflow.store import ScanStore

KEY = "benchkey123"


def _browser():
    from playwright.sync_api import sync_playwright

    p = sync_playwright().start()
    return p, p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                                args=["--no-sandbox"])


def _scan_thread(run: Path) -> threading.Thread:
    thread = threading.Thread(target=lambda: acquire(run, figure=False))
    thread.start()
    return thread


def part_delay(batches: int) -> None:
    data = Path(tempfile.mkdtemp())
    run = create_run(ScanConfig(sample="flakes", sampler="fast", coverage=0.5, snapshots=[0.05]), data / "r")
    thread = _scan_thread(run)
    p, chromium = _browser()
    delays = []
    try:
        with serving(data, api_key=KEY, publish_existing=False) as srv:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{srv.uri}/view/?api_key={KEY}&run=r")
            page.wait_for_function("Number(document.body.dataset.points) > 0", timeout=60_000)
            for _ in range(batches):
                n = ScanStore.open(run / "scan.zarr").n_points
                while (m := ScanStore.open(run / "scan.zarr").n_points) == n:
                    time.sleep(0.005)
                committed = time.monotonic()
                page.wait_for_function(f"Number(document.body.dataset.points) >= {m}", timeout=30_000)
                delays.append(time.monotonic() - committed)
            send_control(run, "stop", source="benchmark")
            thread.join()
    finally:
        chromium.close()
        p.stop()
    d = np.array(delays) * 1000
    print("\n| batches | median | 90th percentile | max |\n|---|---|---|---|")
    print(f"| {len(d)} | {np.median(d):.0f} ms | {np.percentile(d, 90):.0f} ms | {d.max():.0f} ms |")


@contextlib.contextmanager
def fastflow_serve(data: Path):
    """``fastflow serve DATA --api-key KEY`` on a free port, in its own process, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fastflow.cli", "serve", str(data), "--api-key", KEY,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{uri}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("fastflow serve did not start")
            time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def part_cost(repeats: int, coverage: float) -> None:
    results: dict[int, list[float]] = {0: [], 2: []}
    p, chromium = _browser()
    try:
        for k in range(repeats):
            for viewers in (0, 2):
                data = Path(tempfile.mkdtemp())
                run = create_run(ScanConfig(sample="flakes", sampler="fast", coverage=coverage,
                                            snapshots=[coverage / 2]), data / f"r{k}")
                with fastflow_serve(data) as uri:            # its own process, as `fastflow serve` runs
                    pages = [chromium.new_page() for _ in range(viewers)]
                    for page in pages:
                        page.goto(f"{uri}/view/?api_key={KEY}&run=r{k}")
                    t0 = time.perf_counter()
                    report = acquire(run, figure=False)
                    results[viewers].append(time.perf_counter() - t0)
                    for page in pages:
                        page.close()
                print(f"  run {k}, {viewers} viewers: {results[viewers][-1]:.2f} s ({report['n_points']} points)")
    finally:
        chromium.close()
        p.stop()
    print(f"\nFAST, flakes 600x400 to {coverage:.0%}, {repeats} alternating runs each\n")
    print("| viewers | mean wall time | standard deviation |\n|---|---|---|")
    for viewers, times in results.items():
        print(f"| {viewers} | {statistics.mean(times):.2f} s | {statistics.stdev(times) if len(times) > 1 else 0:.2f} s |")


def part_big(side: int, points: int) -> None:
    data = Path(tempfile.mkdtemp())
    grid = ScanGrid((side, side))
    store = ScanStore.create(data / "big" / "scan.zarr", grid, attrs={"run_id": "big", "stop_rules": {"coverage": 0.2}})
    rng = np.random.default_rng(0)
    flat = rng.choice(grid.size, size=points + 50_000, replace=False)
    yy, xx = np.divmod(flat, side)
    values = np.sin(yy / 97.0) * np.cos(xx / 131.0)
    t0 = time.perf_counter()
    for k, start in enumerate(range(0, points, 50_000)):
        sl = slice(start, min(start + 50_000, points))
        store.append(np.stack([yy[sl], xx[sl]], axis=1), values[sl], times=np.arange(sl.start, sl.stop) * 1e-3, batch=k)
    image = (np.sin(np.arange(side)[:, None] / 97.0) * np.cos(np.arange(side)[None, :] / 131.0))
    store.add_snapshot(points / grid.size, image)
    print(f"wrote {points} points on {side}x{side} in {time.perf_counter() - t0:.1f} s")
    layers = ("points", "live", "reconstruction")

    def view(http: httpx.Client) -> dict[str, float]:
        out = {}
        for what in ("state", *layers):
            t = time.perf_counter()
            url = "/api/runs/big/state" if what == "state" else f"/api/runs/big/image/{what}.png?size=1024"
            r = http.get(url, headers={"Authorization": f"Apikey {KEY}"})
            r.raise_for_status()
            out[what] = time.perf_counter() - t
        return out

    with serving(data, api_key=KEY, publish_existing=False) as srv, \
            httpx.Client(base_url=f"{srv.uri}/view", trust_env=False, timeout=120) as http:
        first = view(http)
        sl = slice(points, points + 50_000)
        store.append(np.stack([yy[sl], xx[sl]], axis=1), values[sl], times=np.arange(sl.start, sl.stop) * 1e-3,
                     batch=999)
        update = view(http)
    store.close()
    print(f"\n{side}x{side}, {points} points, layers at 1024 px\n")
    print("| request | first view | update (one more batch) |\n|---|---|---|")
    for what in first:
        print(f"| {what} | {first[what]:.2f} s | {update[what]:.2f} s |")
    print(f"| all | {sum(first.values()):.2f} s | {sum(update.values()):.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="delay,cost,big")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cost-coverage", type=float, default=0.1)
    parser.add_argument("--big", type=int, default=4096)
    parser.add_argument("--big-points", type=int, default=1_600_000)
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "delay" in parts:
        part_delay(args.batches)
    if "cost" in parts:
        part_cost(args.repeats, args.cost_coverage)
    if "big" in parts:
        part_big(args.big, args.big_points)


if __name__ == "__main__":
    main()
