"""The scan store: one Zarr v3 store per scan run, appended as measurements arrive, safe against crashes.

Layout (``xarray.open_zarr(path, consolidated=False)`` returns it as a Dataset)::

    measurements along ``point`` (acquisition order, append-only)
        iy, ix    int32    grid indices
        y, x      float64  physical positions actually reached (attrs: units)
        value     float64  (point, channel)
        batch     int32    batch number (0 = first batch)
        time      float64  seconds since the scan started, when the point was complete (attrs: units)
    channel       str      channel names (coordinate)
    reconstruction (y, x)            float64  latest reconstruction of channel 0 (NaN until one is written)
    snapshots      (coverage, y, x)  float64  reconstructions at chosen coverages
    uncertainty    (y, x)            float64  standard deviation of the latest reconstruction's error, where
                                              its method estimates one (``learned``); NaN otherwise
    snapshot_uncertainty (coverage, y, x)     the same for each snapshot
    region         (y, x)            uint8    0 allowed, 1 outside the region of interest, 2 no-go
    erd            (y, x)            float32  an adaptive sampler's ERD map at the latest snapshot (NaN otherwise)
    coverage       (coverage,)       float64  coverage of each snapshot; snapshot_points (coverage,) int64
    snapshot_time  (coverage,)       float64  acquisition seconds at each snapshot (attrs raster_time_s: a
                                              full raster's seconds on the same instrument, fastflow.timing)
    nrmse, ssim, psnr (coverage,)    float64  metrics against a ground truth, when the store has one
    nrmse_estimate, nrmse_upper (coverage,)   the reconstruction's NRMSE as estimated from the points alone,
                                              and its upper bound (fastflow.errorest; NaN: not estimated)
    attrs: grid, channels, provenance, n_points, status, stop_reason, ...

Crash safety
------------
xarray's ``to_zarr(append_dim=...)`` updates one array after another, so a killed writer leaves arrays of
different lengths (the store will not open) or padded with fill values. Here the data chunks are written
first, beyond the arrays' committed shapes where readers do not look; then all metadata documents of the new
state are written into a fresh *generation* folder beside the store, and one atomic symlink swap publishes
that generation. Every ``zarr.json`` inside the store is a symlink through ``<store>.commits/current``, so a
reader sees either the old or the new state of *all* arrays, never a mix. A killed writer therefore loses at
most the batch in flight, and ``xarray.open_zarr`` works at any moment. Closing the store (:meth:`ScanStore.close`)
replaces every symlink by the file it points to (same bytes, atomic ``rename``) and removes the commit folder,
leaving a plain Zarr store; opening it for writing again reverses that.

There is no ``fsync``: this protects against a killed process, not against power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from fastflow.errors import StoreError
from fastflow.grid import ScanGrid

STORE_FORMAT = "fastflow-scan"
STORE_VERSION = 1
POINT_CHUNK = 4096
IMAGE_CHUNK = 256
METRIC_NAMES = ("nrmse", "ssim", "psnr")
#: Per-snapshot error estimate columns (:mod:`fastflow.errorest`): the estimate and its upper bound.
ESTIMATE_NAMES = ("nrmse_estimate", "nrmse_upper")
_POINT_VARS = ("iy", "ix", "y", "x", "value", "batch", "time")
_KEEP_GENERATIONS = 4


def commits_dir(path: str | os.PathLike) -> Path:
    """The folder beside a store that holds its metadata generations while it is open for writing."""
    path = Path(path)
    return path.parent / f".{path.name}.commits"


def is_scan_store(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a fastflow scan store (sealed or still being written)."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("format") == STORE_FORMAT


class ScanStore:
    """An append-only, resumable scan dataset on disk.

    Create one with :meth:`create`, reopen one with :meth:`open`. Writers hold an exclusive lock, so two
    processes cannot append to the same scan.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastflow.grid import ScanGrid
    >>> d = tempfile.mkdtemp()
    >>> store = ScanStore.create(d + "/scan.zarr", ScanGrid((8, 8)))
    >>> store.append(np.array([[0, 1], [2, 3]]), np.array([0.5, 0.7]))
    2
    >>> store.close(stop_reason="coverage reached")
    >>> int(store.to_dataset().sizes["point"])
    2
    """

    def __init__(self, path: Path, mode: str) -> None:
        self.path = Path(path)
        self.mode = mode
        self._root = zarr.storage.LocalStore(self.path, read_only=(mode == "r"))
        self._meta: dict[str, Any] = {}
        self._attrs: dict[str, Any] = {}
        self._generation = 0
        self._lock_fd: int | None = None
        self.closed = False

    # -- creation and opening ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        grid: ScanGrid,
        *,
        channels: tuple[str, ...] | list[str] = ("value",),
        attrs: Mapping[str, Any] | None = None,
        with_metrics: bool = False,
    ) -> ScanStore:
        """Create an empty scan store at ``path``.

        Parameters
        ----------
        path : path-like
            Folder of the new Zarr store; it must not exist or be empty.
        grid : ScanGrid
            The scan grid (its shape fixes the image arrays).
        channels : sequence of str
            Names of the measured channels.
        attrs : mapping, optional
            JSON-ready provenance attributes.
        with_metrics : bool
            Create the ``nrmse``/``ssim``/``psnr`` arrays (when a ground truth is known).

        Raises
        ------
        StoreError
            If ``path`` exists and is not an empty folder, or cannot be written.
        """
        path = Path(path)
        channels = tuple(str(c) for c in channels)
        if not channels or len(set(channels)) != len(channels):
            raise StoreError(f"channel names must be unique and at least one; got {channels!r}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            what = "another scan" if is_scan_store(path) else "other files"
            raise StoreError(f"{path} already exists and holds {what}; choose a new output folder")
        if commits_dir(path).exists():
            shutil.rmtree(commits_dir(path))
        try:
            path.mkdir(parents=True, exist_ok=True)
            self = cls(path, "a")
            self._lock()
            self._build(grid, channels, dict(attrs or {}), with_metrics)
        except OSError as exc:
            raise StoreError(f"cannot create the scan store at {path}: {exc.strerror or exc}") from exc
        return self

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> ScanStore:
        """Open an existing scan store, read-only (``"r"``) or for appending (``"a"``).

        Opening for appending recovers from a killed writer: it drops unpublished generations and
        temporary chunk files. Everything committed before the kill is kept.

        Raises
        ------
        StoreError
            If ``path`` is not a fastflow scan store, or another process is writing it.
        """
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' or 'a'; got {mode!r}")
        path = Path(path)
        if not is_scan_store(path):
            raise StoreError(f"{path} is not a fastflow scan store")
        self = cls(path, mode)
        if mode == "a":
            self._lock()
            self._recover()
        self._load()
        return self

    def _build(self, grid: ScanGrid, channels: tuple[str, ...], attrs: dict, with_metrics: bool) -> None:
        group = zarr.open_group(store=self._root, mode="w", zarr_format=3)
        nch = len(channels)
        ny, nx = grid.shape
        img_chunks = (min(IMAGE_CHUNK, ny), min(IMAGE_CHUNK, nx))

        def point(name: str, dtype: str, fill: Any, units: str | None = None, extra: tuple = ()) -> None:
            arr = group.create_array(
                name, shape=(0, *extra), chunks=(POINT_CHUNK, *extra), dtype=dtype, fill_value=fill,
                dimension_names=["point", *(["channel"] if extra else [])],
            )
            if units:
                arr.attrs["units"] = units

        point("iy", "int32", -1)
        point("ix", "int32", -1)
        point("y", "float64", np.nan, grid.units)
        point("x", "float64", np.nan, grid.units)
        point("value", "float64", np.nan, extra=(nch,))
        point("batch", "int32", -1)
        point("time", "float64", np.nan, "s")
        ch = group.create_array("channel", shape=(nch,), dtype=str, dimension_names=["channel"])
        ch[:] = np.array(channels)
        rec = group.create_array(
            "reconstruction", shape=(ny, nx), chunks=img_chunks, dtype="float64", fill_value=np.nan,
            dimension_names=["y", "x"],
        )
        rec.attrs["channel"] = channels[0]
        group.create_array(
            "snapshots", shape=(0, ny, nx), chunks=(1, *img_chunks), dtype="float64", fill_value=np.nan,
            dimension_names=["coverage", "y", "x"],
        )
        unc = group.create_array(
            "uncertainty", shape=(ny, nx), chunks=img_chunks, dtype="float64", fill_value=np.nan,
            dimension_names=["y", "x"],
        )
        unc.attrs["description"] = "standard deviation of the reconstruction's error (NaN: not estimated)"
        group.create_array(
            "snapshot_uncertainty", shape=(0, ny, nx), chunks=(1, *img_chunks), dtype="float64",
            fill_value=np.nan, dimension_names=["coverage", "y", "x"],
        )
        erd = group.create_array("erd", shape=(ny, nx), chunks=img_chunks, dtype="float32", fill_value=np.nan,
                                 dimension_names=["y", "x"])
        erd.attrs["description"] = "expected reduction in distortion at the latest snapshot (adaptive samplers; NaN otherwise)"
        region = group.create_array("region", shape=(ny, nx), chunks=img_chunks, dtype="uint8", fill_value=0,
                                    dimension_names=["y", "x"])
        region.attrs["description"] = "0 allowed, 1 outside the region of interest, 2 no-go (fastflow.regions)"
        group.create_array("coverage", shape=(0,), chunks=(256,), dtype="float64", fill_value=np.nan,
                           dimension_names=["coverage"])
        group.create_array("snapshot_points", shape=(0,), chunks=(256,), dtype="int64", fill_value=-1,
                           dimension_names=["coverage"])
        group.create_array("snapshot_time", shape=(0,), chunks=(256,), dtype="float64", fill_value=np.nan,
                           dimension_names=["coverage"]).attrs["units"] = "s"
        for name in ESTIMATE_NAMES:
            group.create_array(name, shape=(0,), chunks=(256,), dtype="float64", fill_value=np.nan,
                               dimension_names=["coverage"])
        if with_metrics:
            for name in METRIC_NAMES:
                group.create_array(name, shape=(0,), chunks=(256,), dtype="float64", fill_value=np.nan,
                                   dimension_names=["coverage"])
        self._attrs = {
            "format": STORE_FORMAT,
            "format_version": STORE_VERSION,
            "grid": grid.to_attrs(),
            "channels": list(channels),
            "n_points": 0,
            "n_batches": 0,
            "status": "running",
            "created": now_iso(),
            **attrs,
        }
        for name in group.array_keys():
            self._meta[name] = zarr.open_array(store=self._root, path=name, mode="r").metadata
        self._group_meta = group.metadata
        self._start_generations()

    # -- reading ----------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The store's attributes (a copy)."""
        return json.loads(json.dumps(self._attrs))

    @property
    def grid(self) -> ScanGrid:
        """The scan grid."""
        return ScanGrid.from_attrs(self._attrs["grid"])

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._attrs["channels"])

    @property
    def n_points(self) -> int:
        """Number of committed measurements."""
        return int(self._meta["iy"].shape[0])

    @property
    def n_snapshots(self) -> int:
        return int(self._meta["coverage"].shape[0])

    @property
    def has_metrics(self) -> bool:
        return "nrmse" in self._meta

    def _read(self, name: str, sel: Any = slice(None)) -> np.ndarray:
        arr = zarr.Array(AsyncArray(metadata=self._meta[name], store_path=zarr.storage.StorePath(self._root, name)))
        return np.asarray(arr[sel])

    def measurements(self) -> dict[str, np.ndarray]:
        """All committed measurements as numpy arrays: ``indices`` (n, 2), ``positions`` (n, 2),
        ``values`` (n, channels), ``batch`` (n,), ``time`` (n,)."""
        return {
            "indices": np.stack([self._read("iy"), self._read("ix")], axis=1).astype(np.int64),
            "positions": np.stack([self._read("y"), self._read("x")], axis=1),
            "values": self._read("value"),
            "batch": self._read("batch").astype(np.int64),
            "time": self._read("time"),
        }

    def point_columns(self, names: tuple[str, ...] = ("iy", "ix"), start: int = 0) -> dict[str, np.ndarray]:
        """Some point arrays (``iy``, ``ix``, ``value``, ``batch``, ``time``, ``y``, ``x``) from point ``start``
        on, of the committed state: what a viewer needs, without reading the rest."""
        unknown = sorted(set(names) - set(_POINT_VARS))
        if unknown:
            raise StoreError(f"unknown point arrays {', '.join(unknown)}; known: {', '.join(_POINT_VARS)}")
        sel = slice(min(max(int(start), 0), self.n_points), self.n_points)
        return {name: self._read(name, sel) for name in names}

    def snapshots(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coverages, images)`` of the snapshots written so far."""
        return self._read("coverage"), self._read("snapshots")

    def snapshot_table(self) -> list[dict[str, Any]]:
        """One JSON-ready row per snapshot: ``coverage``, ``n_points``, the metrics, if any, and the acquisition
        time ``time_s`` with, when the store knows a full raster's time, ``saving`` (``1 - time_s /
        raster_time_s``: the fraction of a full raster's time saved; negative when slower) and, where it was
        made, the error estimate ``nrmse_estimate`` and its upper bound ``nrmse_upper`` (:mod:`fastflow.errorest`)."""
        columns = {"coverage": self._read("coverage"), "n_points": self._read("snapshot_points")}
        if self.has_metrics:
            columns.update({name: self._read(name) for name in METRIC_NAMES})
        columns.update({name: self._read(name) for name in ESTIMATE_NAMES if name in self._meta})
        if "snapshot_time" in self._meta:
            columns["time_s"] = self._read("snapshot_time")
            raster = self._attrs.get("raster_time_s")
            if raster:
                columns["saving"] = 1.0 - columns["time_s"] / float(raster)
        return [{k: jsonable(v[i]) for k, v in columns.items()} for i in range(self.n_snapshots)]

    def to_dataset(self) -> xr.Dataset:
        """The store as a lazily loaded :class:`xarray.Dataset`."""
        return xr.open_zarr(self.path, consolidated=False)

    # -- writing ----------------------------------------------------------------------------------
    def append(
        self,
        indices: np.ndarray,
        values: np.ndarray,
        *,
        positions: np.ndarray | None = None,
        times: np.ndarray | None = None,
        batch: int | None = None,
    ) -> int:
        """Append one batch of measurements in acquisition order and commit it; returns ``n_points``.

        Parameters
        ----------
        indices : (n, 2) int array
            Grid indices ``(iy, ix)``.
        values : (n,) or (n, channels) array
            Measured values (stored as they came, NaN included: nothing acquired is dropped).
        positions : (n, 2) float array, optional
            Physical positions reached; defaults to the grid positions of ``indices``.
        times : (n,) float array, optional
            Seconds since the scan started; defaults to NaN.
        batch : int, optional
            Batch number; defaults to the number of batches appended so far.
        """
        self._check_writable()
        grid = self.grid
        idx = grid.check_indices(indices)
        n = len(idx)
        vals = np.asarray(values, dtype=np.float64)
        vals = vals[:, None] if vals.ndim == 1 else vals
        if vals.shape != (n, len(self.channels)):
            raise StoreError(f"values must be ({n}, {len(self.channels)}) for {n} points; got {vals.shape}")
        pos = grid.to_position(idx) if positions is None else np.asarray(positions, dtype=np.float64)
        if pos.shape != (n, 2):
            raise StoreError(f"positions must be ({n}, 2); got {pos.shape}")
        tms = np.full(n, np.nan) if times is None else np.asarray(times, dtype=np.float64).ravel()
        if tms.shape != (n,):
            raise StoreError(f"times must have {n} entries; got {tms.shape}")
        if n == 0:
            return self.n_points
        b = int(self._attrs["n_batches"]) if batch is None else int(batch)
        columns = {
            "iy": idx[:, 0], "ix": idx[:, 1], "y": pos[:, 0], "x": pos[:, 1],
            "value": vals, "batch": np.full(n, b), "time": tms,
        }
        n0 = self.n_points
        self._grow_and_write({k: (n0, v) for k, v in columns.items()},
                             {"n_points": n0 + n, "n_batches": max(b + 1, int(self._attrs["n_batches"]))})
        return self.n_points

    @property
    def has_uncertainty(self) -> bool:
        """Whether the store can hold uncertainty maps (stores of fastflow 0.1 cannot)."""
        return "uncertainty" in self._meta

    def uncertainty(self) -> np.ndarray | None:
        """The latest reconstruction's standard deviation map, or None if none was written."""
        if not self.has_uncertainty:
            return None
        sigma = self._read("uncertainty")
        return None if np.isnan(sigma).all() else sigma

    def image(self, name: str) -> np.ndarray | None:
        """One of the ``(y, x)`` images (``reconstruction``, ``uncertainty``, ``erd``, ``region``), or None
        when the store has no such array (made by an older fastflow)."""
        if name not in self._meta or self._meta[name].dimension_names != ("y", "x"):
            return None
        return self._read(name)

    def latest_snapshot(self, name: str = "snapshots") -> np.ndarray | None:
        """The last snapshot's image (``snapshots``) or uncertainty map (``snapshot_uncertainty``), or None."""
        k = self.n_snapshots
        if not k or name not in self._meta:
            return None
        return self._read(name, k - 1)

    def last_time(self) -> float:
        """Seconds since the scan started when its last stored point was complete (0 with no point)."""
        n = self.n_points
        value = float(self._read("time", slice(n - 1, n))[0]) if n else 0.0
        return value if np.isfinite(value) else 0.0

    def set_erd(self, erd: np.ndarray) -> None:
        """Replace the stored ERD map (the adaptive sampler's decision map at the latest snapshot)."""
        self._check_writable()
        if "erd" not in self._meta:
            return
        with self._transaction():
            sync(self._array("erd").setitem(slice(None), self._check_image(erd).astype(np.float32)))
            self._commit()

    def region(self) -> np.ndarray:
        """The region code of every pixel, ``(ny, nx)`` uint8: 0 allowed, 1 outside the region of interest,
        2 no-go (:mod:`fastflow.regions`); all 0 for a store made before regions existed."""
        if "region" not in self._meta:
            return np.zeros(self.grid.shape, dtype=np.uint8)
        return self._read("region").astype(np.uint8)

    def set_region(self, codes: np.ndarray) -> None:
        """Replace the region codes (the regions given at the start, plus any drawn since)."""
        self._check_writable()
        codes = np.asarray(codes)
        if codes.shape != self.grid.shape or not np.isin(codes, (0, 1, 2)).all():
            raise StoreError(f"region codes must be 0, 1 or 2 on the grid's shape {self.grid.shape}")
        if "region" not in self._meta:
            raise StoreError(f"{self.path} was made before regions existed; it cannot record one")
        with self._transaction():
            sync(self._array("region").setitem(slice(None), codes.astype(np.uint8)))
            self._commit({}, {"region_pixels": {"allowed": int((codes == 0).sum()),
                                                "outside_roi": int((codes == 1).sum()),
                                                "no_go": int((codes == 2).sum())}})

    def set_reconstruction(self, image: np.ndarray, uncertainty: np.ndarray | None = None, **attrs: Any) -> None:
        """Replace the latest reconstruction (``(ny, nx)``), and its uncertainty map where the method gives
        one, and record ``attrs`` (e.g. method, coverage)."""
        self._check_writable()
        image = self._check_image(image)
        sigma = self._uncertainty_or_nan(uncertainty)
        with self._transaction():
            sync(self._array("reconstruction").setitem(slice(None), image))
            names = {"reconstruction": {k: jsonable(v) for k, v in attrs.items()}}
            if sigma is not None:
                sync(self._array("uncertainty").setitem(slice(None), sigma))
            self._commit(names)

    def add_snapshot(self, coverage: float, image: np.ndarray, metrics: Mapping[str, float] | None = None,
                     uncertainty: np.ndarray | None = None, time_s: float | None = None,
                     estimate: Mapping[str, float] | None = None) -> None:
        """Append a snapshot reconstruction at ``coverage`` (its metrics, if the store has them, its
        uncertainty map, where the method gives one, the acquisition seconds ``time_s``, by default the
        time of the last stored point, and the error estimate ``{"nrmse_estimate", "nrmse_upper"}``)."""
        self._check_writable()
        image = self._check_image(image)
        sigma = self._uncertainty_or_nan(uncertainty)
        k = self.n_snapshots
        columns: dict[str, tuple[int, np.ndarray]] = {
            "snapshots": (k, image[None]),
            "coverage": (k, np.array([coverage], dtype=np.float64)),
            "snapshot_points": (k, np.array([self.n_points])),
        }
        if "snapshot_time" in self._meta:
            columns["snapshot_time"] = (k, np.array([self.last_time() if time_s is None else time_s], dtype=np.float64))
        if sigma is not None:
            columns["snapshot_uncertainty"] = (k, sigma[None])
        for name in ESTIMATE_NAMES:
            if name in self._meta:             # stores written before the estimate existed lack the columns
                columns[name] = (k, np.array([(estimate or {}).get(name, np.nan)], dtype=np.float64))
        if self.has_metrics:
            metrics = metrics or {}
            for name in METRIC_NAMES:
                columns[name] = (k, np.array([metrics.get(name, np.nan)], dtype=np.float64))
        self._grow_and_write(columns, {})

    def update_attrs(self, **attrs: Any) -> None:
        """Merge JSON-ready attributes into the store's attributes and commit."""
        self._check_writable()
        with self._transaction():
            self._commit({}, {k: jsonable(v) for k, v in attrs.items()})

    def close(self, stop_reason: str | None = None, status: str = "complete") -> None:
        """Record how the scan ended and turn the store into a plain Zarr store (idempotent)."""
        if self.closed:
            return
        if self.mode == "a":
            attrs: dict[str, Any] = {"status": status, "stopped": now_iso()}
            if stop_reason is not None:
                attrs["stop_reason"] = stop_reason
            with self._transaction():
                self._commit({}, attrs)
                self._seal()
            self._unlock()
        self.closed = True

    def release(self) -> None:
        """Give up the write lock without sealing (what a crash does); the store stays resumable."""
        self._unlock()
        self.closed = True

    def __enter__(self) -> ScanStore:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.release()

    # -- internals: data ----------------------------------------------------------------------------
    def _array(self, name: str) -> AsyncArray:
        return AsyncArray(metadata=self._meta[name], store_path=zarr.storage.StorePath(self._root, name))

    def _grow_and_write(self, columns: Mapping[str, tuple[int, np.ndarray]], attrs: dict[str, Any]) -> None:
        """Grow arrays along their first axis, write the new rows into chunks, then commit."""
        with self._transaction():
            jobs = []
            for name, (start, data) in columns.items():
                data = np.asarray(data)
                self._meta[name] = self._meta[name].update_shape((start + len(data), *self._meta[name].shape[1:]))
                jobs.append(self._array(name).setitem(slice(start, start + len(data)), data))

            async def write_all() -> None:
                await asyncio.gather(*jobs)

            sync(write_all())
            self._commit({}, attrs)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Undo in-memory changes if writing fails or is interrupted before the new state was published, and
        report a failure of the disk as a :class:`StoreError` (an interruption, Ctrl-C or SIGTERM, goes on as
        it is, so that the scan can still record it and close the store)."""
        saved_meta, saved_attrs = dict(self._meta), json.loads(json.dumps(self._attrs))
        saved_generation = self._generation
        try:
            yield
        except BaseException as exc:
            if self._generation == saved_generation:      # nothing was published: memory = what the disk holds
                self._meta, self._attrs = saved_meta, saved_attrs
            if not isinstance(exc, OSError):
                raise
            raise StoreError(
                f"writing to {self.path} failed ({exc.strerror or exc}); the {self.n_points} points committed "
                "before are safe: fix the cause (e.g. free disk space) and resume the scan"
            ) from exc

    def _uncertainty_or_nan(self, uncertainty: np.ndarray | None) -> np.ndarray | None:
        """The map to write (NaN where none is given), or None for a store without uncertainty arrays."""
        if not self.has_uncertainty:
            return None
        if uncertainty is None:
            return np.full(self.grid.shape, np.nan)
        return self._check_image(uncertainty)

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float64)
        if image.shape != self.grid.shape:
            raise StoreError(f"image must have the grid's shape {self.grid.shape}; got {image.shape}")
        return image

    def _check_writable(self) -> None:
        if self.mode != "a" or self.closed:
            raise StoreError(f"{self.path} is not open for writing")

    # -- internals: generations ---------------------------------------------------------------------
    def _documents(self) -> dict[str, bytes]:
        """The metadata documents of the current in-memory state, keyed by array name ('' = group)."""
        proto = default_buffer_prototype()
        docs = {name: meta.to_buffer_dict(proto)["zarr.json"].to_bytes() for name, meta in self._meta.items()}
        group = dataclasses.replace(self._group_meta, attributes=self._attrs)
        docs[""] = group.to_buffer_dict(proto)["zarr.json"].to_bytes()
        return docs

    def _commit(self, array_attrs: Mapping[str, dict] | None = None, attrs: Mapping[str, Any] | None = None) -> None:
        if attrs:
            self._attrs.update(attrs)
        for name, extra in (array_attrs or {}).items():
            merged = {**self._meta[name].attributes, **extra}
            self._meta[name] = self._meta[name].update_attributes(merged)
        self._attrs["updated"] = now_iso()
        cdir = commits_dir(self.path)
        gen = self._generation + 1
        gdir = cdir / f"g{gen:08d}"
        try:
            gdir.mkdir()
            for name, doc in self._documents().items():
                (gdir / _doc_name(name)).write_bytes(doc)
            tmp = cdir / "current.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(gdir.name)
            os.replace(tmp, cdir / "current")
        except BaseException:             # a failing disk, or an interruption part-way
            if _links_to(cdir / "current", gdir.name):
                self._generation = gen    # published just before the interruption: it is the state now
            else:
                with contextlib.suppress(OSError):
                    shutil.rmtree(gdir)   # half written: gone, so the next commit can use its name
            raise
        self._generation = gen
        for old in cdir.glob("g*"):
            if int(old.name[1:]) <= gen - _KEEP_GENERATIONS:
                shutil.rmtree(old, ignore_errors=True)

    def _start_generations(self) -> None:
        """Write generation 1 from the in-memory state and point every zarr.json at it."""
        cdir = commits_dir(self.path)
        cdir.mkdir(exist_ok=True)
        self._generation = 0
        self._commit()
        for name in self._documents():
            link = self._doc_path(name)
            tmp = link.with_name("zarr.json.link")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.path.relpath(cdir / "current" / _doc_name(name), link.parent))
            os.replace(tmp, link)  # atomic; the target holds the same bytes

    def _doc_path(self, name: str) -> Path:
        return self.path / name / "zarr.json" if name else self.path / "zarr.json"

    def _seal(self) -> None:
        """Replace each symlinked zarr.json by the file it points to, then drop the commit folder."""
        for name in self._meta.keys() | {""}:
            link = self._doc_path(name)
            if link.is_symlink():
                tmp = link.with_name("zarr.json.sealed")
                tmp.write_bytes(link.read_bytes())
                os.replace(tmp, link)
        shutil.rmtree(commits_dir(self.path), ignore_errors=True)

    def _load(self) -> None:
        """Read the metadata of the group and of every array, all from one committed state.

        While a writer commits, each ``zarr.json`` is a symlink through ``current``; reading them one by one
        could mix two generations (arrays of different lengths), so the generation is resolved once and its
        documents are read from there. A generation pruned meanwhile, or a store sealed meanwhile, is
        simply read again.
        """
        for _ in range(5):
            try:
                if self._load_generation():
                    return
            except FileNotFoundError:
                continue
            break
        group = zarr.open_group(store=self._root, mode="r")
        self._group_meta = group.metadata
        self._attrs = dict(group.attrs)
        self._meta = {name: arr.metadata for name, arr in group.arrays()}

    def _load_generation(self) -> bool:
        """Load the metadata from the current generation folder; False when the store has none (sealed)."""
        from zarr.core.group import GroupMetadata
        from zarr.core.metadata.v3 import ArrayV3Metadata

        cdir = commits_dir(self.path)
        try:
            gdir = cdir / os.readlink(cdir / "current")
        except OSError:
            return False
        group = json.loads((gdir / _doc_name("")).read_text())
        meta = {}
        for doc in sorted(gdir.glob("*.json")):
            if doc.name != _doc_name(""):
                meta[doc.name[: -len(".json")]] = ArrayV3Metadata.from_dict(json.loads(doc.read_text()))
        self._group_meta = GroupMetadata.from_dict(group)
        self._attrs = dict(group.get("attributes", {}))
        self._meta = meta
        return True

    def _recover(self) -> None:
        """Prepare a store for appending: recover from a killed writer, or unseal a closed store."""
        cdir = commits_dir(self.path)
        current = cdir / "current"
        for partial in self.path.rglob("*.partial"):
            with contextlib.suppress(OSError):
                partial.unlink()
        if current.is_symlink():
            gen = int(os.readlink(current)[1:])
            for other in cdir.glob("g*"):
                if int(other.name[1:]) > gen:  # written but never published: the batch in flight
                    shutil.rmtree(other, ignore_errors=True)
            self._generation = gen
            self._load()
        else:
            self._load()
            self._start_generations()
        self._attrs["status"] = "running"

    # -- internals: lock ----------------------------------------------------------------------------
    def _lock(self) -> None:
        lock_path = self.path.parent / f".{self.path.name}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another process is writing {self.path}; wait for it to stop") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _doc_name(name: str) -> str:
    return f"{name or '.group'}.json"


def now_iso() -> str:
    """The local time as recorded in stores and provenance: ``2026-12-03T21:30:05+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _links_to(link: Path, target: str) -> bool:
    """True if the symlink ``link`` exists and points to ``target``."""
    try:
        return os.readlink(link) == target
    except OSError:
        return False


def jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays (recursively) into JSON-ready values; NaN and inf become None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value

