"""The live view: a web page that watches running and finished scans, and steers them.

``fastflow serve DATA_DIR`` mounts it at ``/view/`` next to Tiled, behind the same API key. It reads only what
the scans persist (each run's store and its control inbox), never talks to the scan process, and caches
what it renders per committed state, so watching costs a scan nothing and a viewer that goes away costs
nothing either.

Endpoints (all need the key: ``Authorization: Apikey KEY``, ``?api_key=KEY``, or the cookie that the page
sets after a first visit with ``?api_key=KEY``):

``GET /view/``
    The page.
``GET /view/api/runs``
    The runs of the data folder, newest first: id, status, sample, sampler, points, coverage.
``GET /view/api/runs/{run}/state``
    One run's state: status, pause, stop rule and reason, points, coverage, the estimated time left (in the
    instrument's seconds, from the rate so far), snapshots with their errors, the operator's controls, regions,
    the instrument's description.
``GET /view/api/runs/{run}/image/{layer}.png?size=PX``
    A layer as a PNG of at most ``PX`` pixels on its longer side (4096² grids are block-averaged down):
    ``points`` (measured pixels coloured by acquisition order), ``live`` (a reconstruction of every point
    stored so far, made at screen resolution by the view), ``reconstruction`` (the scan's latest stored
    one, or its latest snapshot while it runs), ``uncertainty`` (a learned reconstruction's), ``erd`` (the ERD of the latest snapshot, FAST) and
    ``region`` (no-go and outside the ROI).
``POST /view/api/runs/{run}/control``
    An operator control, JSON ``{"action": ..., ...}`` (:mod:`fastflow.controls`); sent with source ``view``.

Run names from the browser are looked up among the run folders of the data folder only; anything else
(``..``, absolute paths, hidden folders, symlinks out of the folder) is 404.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import threading
import warnings
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import FastflowError
from fastflow.store import ScanStore, commits_dir, is_scan_store, jsonable

LAYERS = ("points", "live", "reconstruction", "uncertainty", "erd", "region")
COOKIE = "fastflow_view_key"
MAX_SIZE = 2048
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def resolve_run(data_dir: Path, name: str) -> Path | None:
    """The run folder called ``name`` directly under ``data_dir``, or None (never a path outside it)."""
    if not _RUN_NAME.fullmatch(name or "") or ".." in name:
        return None
    root = data_dir.resolve()
    path = (root / name).resolve()
    if path.parent != root or not is_scan_store(path / "scan.zarr"):
        return None
    return path


def downsample(image: np.ndarray, size: int) -> np.ndarray:
    """Block-mean ``image`` (NaN ignored) so that its longer side is at most ``size`` pixels."""
    factor, (sy, sx) = _screen_shape(image.shape, size)
    if factor == 1:
        return image
    ny, nx = sy * factor, sx * factor
    padded = image if (ny, nx) == image.shape else np.full((ny, nx), np.nan)
    if padded is not image:
        padded[: image.shape[0], : image.shape[1]] = image
    blocks = padded.reshape(ny // factor, factor, nx // factor, factor)
    if (ny, nx) == image.shape and np.isfinite(image).all():
        return blocks.mean(axis=(1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # blocks of NaN only stay NaN
        return np.nanmean(blocks, axis=(1, 3))


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _colour(image: np.ndarray, cmap: str = "gray", lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """RGBA uint8 of ``image`` through a matplotlib colour map; NaN is transparent."""
    from matplotlib import colormaps

    finite = np.isfinite(image)
    if lo is None or hi is None:
        vals = image[finite]
        lo, hi = (float(np.percentile(vals, 0.5)), float(np.percentile(vals, 99.5))) if vals.size else (0.0, 1.0)
    scaled = np.clip((np.where(finite, image, lo) - lo) / ((hi - lo) or 1.0), 0, 1)
    rgba = (colormaps[cmap](scaled) * 255).astype(np.uint8)
    rgba[~finite, 3] = 0
    return rgba


def _screen_shape(shape: tuple[int, int], size: int) -> tuple[int, tuple[int, int]]:
    factor = max(1, int(np.ceil(max(shape) / size)))
    return factor, (-(-shape[0] // factor), -(-shape[1] // factor))


class ScreenPoints:
    """The points of one run binned onto a screen grid, kept up to date by reading only the new points.

    Per screen pixel: the sum and count of the values (for the live reconstruction) and the acquisition
    number of its latest point (for the order map).
    """

    def __init__(self, shape: tuple[int, int], size: int) -> None:
        self.factor, self.screen = _screen_shape(shape, size)
        n = self.screen[0] * self.screen[1]
        self.sums, self.counts = np.zeros(n), np.zeros(n)
        self.last = np.full(n, -1, dtype=np.int64)
        self.n = 0

    def update(self, store: ScanStore) -> None:
        """Add the points committed since the last call."""
        new = store.point_columns(("iy", "ix", "value"), start=self.n)
        if not len(new["iy"]):
            return
        cells = (new["iy"] // self.factor).astype(np.int64) * self.screen[1] + new["ix"] // self.factor
        n = len(self.sums)
        self.sums += np.bincount(cells, weights=np.asarray(new["value"])[:, 0], minlength=n)
        self.counts += np.bincount(cells, minlength=n)
        self.last[cells] = self.n + np.arange(len(cells))          # later points overwrite earlier ones
        self.n += len(cells)

    def order_rgba(self) -> np.ndarray:
        """Measured pixels coloured by acquisition order (dark: first, bright: last); empty ones transparent."""
        order = np.where(self.last >= 0, self.last / max(self.n - 1, 1), np.nan).reshape(self.screen)
        return _colour(order, "viridis", 0.0, 1.0)

    def live_rgba(self) -> np.ndarray:
        """A quick reconstruction: the mean of each screen pixel's points, empty pixels taking the value of
        the nearest pixel that has points (scipy's Euclidean distance transform)."""
        from scipy.ndimage import distance_transform_edt

        known = (self.counts > 0).reshape(self.screen)
        if not known.any():
            return _colour(np.full(self.screen, np.nan))
        means = np.divide(self.sums, self.counts, out=np.zeros_like(self.sums), where=self.counts > 0).reshape(self.screen)
        if not known.all():
            _, (iy, ix) = distance_transform_edt(~known, return_indices=True)
            means = means[iy, ix]
        return _colour(means)


def region_layer(codes: np.ndarray, size: int) -> np.ndarray:
    """No-go pixels red, outside the region of interest grey, allowed transparent."""
    factor, _ = _screen_shape(codes.shape, size)
    small = codes[::factor, ::factor]
    rgba = np.zeros((*small.shape, 4), dtype=np.uint8)
    rgba[small == 1] = (90, 90, 90, 150)
    rgba[small == 2] = (220, 30, 30, 140)
    return rgba


class _Lru:
    """A small thread-safe least-recently-used mapping (rendered PNGs, opened stores, binned points)."""

    def __init__(self, entries: int) -> None:
        self.entries, self.items, self.lock = entries, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.entries:
                self.items.popitem(last=False)


_OPEN = _Lru(64)          # path -> (commit mark, store)
_SCREENS = _Lru(16)       # (run, size) -> ScreenPoints
_SCREENS_LOCK = threading.Lock()    # one update of binned points at a time


def open_store(run_dir: Path) -> ScanStore:
    """The run's store, read-only, reopened only when a new state was committed (the commit link moved,
    or the sealed store's metadata changed): polling viewers then cost one ``readlink`` or ``stat``."""
    path = run_dir / "scan.zarr"
    mark: Any = None
    for link in (commits_dir(path) / "current", path / "zarr.json"):     # written / sealed
        try:
            st = os.lstat(link)        # each commit makes a new link: a new inode
        except OSError:
            continue
        mark = (str(link), st.st_ino, st.st_mtime_ns, st.st_size)
        break
    hit = _OPEN.get(str(path))
    if hit is not None and hit[0] == mark and mark is not None:
        return hit[1]
    store = ScanStore.open(path)
    _OPEN.put(str(path), (mark, store))
    return store


def run_state(run_dir: Path) -> dict[str, Any]:
    """The JSON-ready state of one run, from its store's committed metadata and point times."""
    store = open_store(run_dir)
    attrs = store.attrs
    n = store.n_points
    rules = attrs.get("stop_rules", {})
    allowed = (attrs.get("region_pixels") or {}).get("allowed") or store.grid.size
    coverage = attrs.get("coverage_reached")
    if coverage is None:
        coverage = n / allowed          # a running scan (points outside the regions are not measured)
    target = max(1, round(float(rules.get("coverage") or 1.0) * allowed))
    t_last = store.last_time()
    rate = n / t_last if t_last > 0 else None
    status = attrs.get("status", "running")
    left = (max(target - n, 0) / rate) if (rate and status == "running") else (0.0 if status != "running" else None)
    return {
        "run_id": attrs.get("run_id", run_dir.name), "name": run_dir.name, "status": status,
        "paused": bool(attrs.get("paused")), "stop_reason": attrs.get("stop_reason"),
        "sample": (attrs.get("sample") or {}).get("sample"), "sampler": (attrs.get("sampler") or {}).get("name"),
        "shape": list(store.grid.shape), "n_points": n, "target_points": target, "coverage": coverage,
        "stop_rules": rules, "acquisition_time_s": t_last, "time_left_s": left,
        "snapshots": store.snapshot_table(), "controls": attrs.get("controls", []),
        "regions": attrs.get("region_pixels"), "instrument": attrs.get("instrument"),
        "updated": attrs.get("updated"), "error": attrs.get("error"),
    }


def _screen_points(run_dir: Path, store: ScanStore, size: int) -> ScreenPoints:
    key = (str(run_dir), size)
    with _SCREENS_LOCK:
        screen = _SCREENS.get(key)
        if screen is None or screen.n > store.n_points:          # a new run in the same folder
            screen = ScreenPoints(store.grid.shape, size)
        _SCREENS.put(key, screen)
        screen.update(store)
        return screen


def render_layer(run_dir: Path, layer: str, size: int, store: ScanStore | None = None) -> bytes | None:
    """The PNG of ``layer`` of a run at most ``size`` pixels across, or None when the run has no such layer."""
    store = store or open_store(run_dir)
    if layer in ("points", "live"):
        screen = _screen_points(run_dir, store, size)
        return _png(screen.order_rgba() if layer == "points" else screen.live_rgba())
    if layer == "region":
        return _png(region_layer(store.region(), size))
    image = store.image(layer)
    if (image is None or not np.isfinite(image).any()) and layer in _SNAPSHOT_OF:
        image = store.latest_snapshot(_SNAPSHOT_OF[layer])     # a running scan: its latest snapshot
    if image is None or not np.isfinite(image).any():
        return None
    return _png(_colour(downsample(image, size), _CMAPS[layer]))


_CMAPS = {"reconstruction": "gray", "uncertainty": "magma", "erd": "inferno"}
_SNAPSHOT_OF = {"reconstruction": "snapshots", "uncertainty": "snapshot_uncertainty"}


def build_view_app(data_dir: str | Path, api_key: str) -> Any:
    """The live view as an ASGI (Starlette) app for the runs of ``data_dir``, requiring ``api_key``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    data_dir = Path(data_dir)
    cache = _Lru(64)    # rendered PNGs by run, layer, size and what they depend on

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        key = given[len("Apikey "):] if given.startswith("Apikey ") else None
        key = key or request.query_params.get("api_key") or request.cookies.get(COOKIE) or ""
        return secrets.compare_digest(key.encode(), api_key.encode())

    def refused() -> Response:
        return JSONResponse({"error": "an API key is required: open /view/?api_key=KEY"}, status_code=401)

    def checked_run(request: Request) -> tuple[Path | None, Response | None]:
        """The request's run folder, or the answer to send instead (401 without the key, 404 for no run)."""
        if not authorised(request):
            return None, refused()
        run = resolve_run(data_dir, request.path_params["run"])
        if run is None:
            return None, JSONResponse({"error": "no such run"}, status_code=404)
        return run, None

    async def page(request: Request) -> Response:
        if not authorised(request):
            return HTMLResponse("<h1>401</h1><p>Open this page as <code>/view/?api_key=KEY</code>.</p>", 401)
        html = resources.files("fastflow.data").joinpath("view.html").read_text()
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        if request.query_params.get("api_key"):
            response.set_cookie(COOKIE, request.query_params["api_key"], httponly=True, samesite="strict",
                                path="/view")
        return response

    def list_runs() -> list[dict[str, Any]]:
        out = []
        for path in sorted((p for p in data_dir.iterdir() if resolve_run(data_dir, p.name)), reverse=True):
            try:
                attrs = open_store(path).attrs
            except FastflowError:
                continue
            out.append({"name": path.name, "status": attrs.get("status"), "n_points": attrs.get("n_points"),
                        "sample": (attrs.get("sample") or {}).get("sample"),
                        "sampler": (attrs.get("sampler") or {}).get("name"), "created": attrs.get("created")})
        return out

    async def runs(request: Request) -> Response:
        if not authorised(request):
            return refused()
        return JSONResponse(await run_in_threadpool(list_runs))

    async def state(request: Request) -> Response:
        run, answer = checked_run(request)
        if answer is not None:
            return answer
        return JSONResponse(await run_in_threadpool(lambda: jsonable(run_state(run))))

    async def image(request: Request) -> Response:
        run, answer = checked_run(request)
        if answer is not None:
            return answer
        layer = request.path_params["layer"]
        if layer not in LAYERS:
            return JSONResponse({"error": f"no layer {layer!r}; layers: {', '.join(LAYERS)}"}, status_code=404)
        try:
            size = min(MAX_SIZE, max(16, int(request.query_params.get("size", 512))))
        except ValueError:
            return JSONResponse({"error": "size must be an integer"}, status_code=400)

        def render() -> bytes | None:
            store = open_store(run)
            attrs = store.attrs
            # points change with every batch; the stored images only at snapshots, the end and regions
            changes = ((store.n_points,) if layer in ("points", "live") else
                       (store.n_snapshots, attrs.get("status"), json.dumps(attrs.get("region_pixels"))))
            key = (str(run), layer, size, *changes)
            if (hit := cache.get(key)) is None:
                hit = render_layer(run, layer, size, store)
                cache.put(key, hit if hit is not None else b"")
            return hit or None

        png = await run_in_threadpool(render)
        if png is None:
            return Response(status_code=204)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def control(request: Request) -> Response:
        run, answer = checked_run(request)
        if answer is not None:
            return answer
        try:
            doc = await request.json()
        except ValueError:
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        if not isinstance(doc, dict):
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        from fastflow.controls import send_control

        params = {k: v for k, v in doc.items() if k != "action"}
        try:
            path = send_control(run, str(doc.get("action", "")), source="view", **params)
        except FastflowError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(json.loads(path.read_text()))

    return Starlette(routes=[
        Route("/", page),
        Route("/api/runs", runs),
        Route("/api/runs/{run}/state", state),
        Route("/api/runs/{run}/image/{layer}.png", image),
        Route("/api/runs/{run}/control", control, methods=["POST"]),
    ])
