"""Publishing scan runs to a Tiled catalog, serving that catalog, and reading runs back.

A *data dir* holds one folder per scan run, ``DATA_DIR/RUN_ID/`` with ``scan.zarr`` (the
:class:`~fastflow.store.ScanStore`), ``scan.png`` and ``report.json``. Its Tiled catalog lives beside the runs::

    DATA_DIR/.tiled/catalog.db    SQLite catalog: one xarray_dataset container per run, key = run id
    DATA_DIR/.tiled/data/         Zarr copies of the published arrays, written by Tiled

Each run is published as an ``xarray_dataset`` (see :func:`run_dataset`) whose container metadata holds flat,
searchable fields (:func:`run_metadata`) and, under ``"attrs"``, the full provenance attributes of the store
(nested dicts survive the round trip as they are). Re-publishing a run replaces its entry.
:func:`publish_dataset` publishes any other dataset (e.g. benchmark results) the same way.

Where to publish
----------------
:func:`publish_run` writes either to a running Tiled server (``uri`` and ``api_key``) or, without a server,
straight into the local catalog of a data dir (in-process, no network). With neither given it reads the
environment: ``FASTFLOW_TILED_URI`` (e.g. ``http://127.0.0.1:8000``) and ``FASTFLOW_TILED_API_KEY`` select a
server; otherwise the run is published into the catalog of its own data dir (the folder holding the run folder).

Serving and reading
-------------------
:func:`serve` publishes what is new in a data dir and then serves its catalog (blocking); :func:`serving` does
the same on a background thread for tests and notebooks. The server always requires an API key, sent as the
``Authorization: Apikey KEY`` header (or ``?api_key=KEY``). Reading a run back::

    >>> from fastflow.catalog import open_run, connect              # doctest: +SKIP
    >>> ds = open_run("http://127.0.0.1:8000", "20261123-130956-54d7d1", api_key=KEY)  # doctest: +SKIP

Searching runs by metadata (any field of :func:`run_metadata`; nested attrs with dotted keys)::

    >>> from tiled.queries import Key                                 # doctest: +SKIP
    >>> c = connect("http://127.0.0.1:8000", api_key=KEY)            # doctest: +SKIP
    >>> list(c.search(Key("sample") == "flakes").search(Key("sampler") == "fast"))  # doctest: +SKIP
    >>> c.search(Key("coverage_reached") >= 0.1)                      # doctest: +SKIP
    >>> c.search(Key("attrs.sampler.seed") == 0)                      # doctest: +SKIP

Writing into the local catalog needs the server parts of Tiled (``pip install 'fastflow[server]'``); reading
from a server needs only the client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from fastflow.errors import CatalogError, InputError, StoreError
from fastflow.evaluate import EVALUATION_NAME
from fastflow.grid import ScanGrid
from fastflow.runs import STORE_NAME, find_store, runs_root
from fastflow.store import ScanStore, is_scan_store, jsonable

logger = logging.getLogger(__name__)

ENV_URI = "FASTFLOW_TILED_URI"
ENV_API_KEY = "FASTFLOW_TILED_API_KEY"
CATALOG_DIRNAME = ".tiled"
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_API_KEY_RE = re.compile(r"[A-Za-z0-9]+")  # what Tiled's single-user key setting accepts
_STARTUP_TIMEOUT = 60.0

# Tiled keeps ONE settings object per process: every app built with a single-user key writes its key into it when
# it starts, so the last app started decides the key of all apps in the process. In-process catalogs therefore
# reuse the key of a server this process is running, and two servers with different keys cannot run together.
_KEY_LOCK = threading.Lock()
_SERVED_KEYS: list[str] = []


def _app_key() -> str:
    with _KEY_LOCK:
        return _SERVED_KEYS[-1] if _SERVED_KEYS else secrets.token_hex(16)


@contextlib.contextmanager
def _claim_key(api_key: str) -> Iterator[None]:
    with _KEY_LOCK:
        if _SERVED_KEYS and _SERVED_KEYS[-1] != api_key:
            raise CatalogError(
                "this process already runs a Tiled server with another API key, and Tiled keeps one key per "
                "process; reuse that key, or serve from another process"
            )
        _SERVED_KEYS.append(api_key)
    try:
        yield
    finally:
        with _KEY_LOCK:
            _SERVED_KEYS.remove(api_key)


# -- locations and environment -----------------------------------------------------------------------
def catalog_dir(data_dir: str | os.PathLike) -> Path:
    """Folder of the local Tiled catalog of a data dir: ``DATA_DIR/.tiled``."""
    return Path(data_dir) / CATALOG_DIRNAME


def default_target() -> dict[str, Any]:
    """Where runs are published by default, as keyword arguments of :func:`publish_run`.

    ``{"uri": ..., "api_key": ...}`` when ``FASTFLOW_TILED_URI`` is set (the key from
    ``FASTFLOW_TILED_API_KEY``), else ``{"catalog": runs_root()}``.
    """
    uri = os.environ.get(ENV_URI)
    if uri:
        return {"uri": uri, "api_key": os.environ.get(ENV_API_KEY) or None}
    return {"catalog": runs_root()}


def find_runs(data_dir: str | os.PathLike) -> list[Path]:
    """Scan stores of all run folders directly under ``data_dir``, sorted by folder name."""
    data_dir = _check_data_dir(data_dir)
    return [p / STORE_NAME for p in sorted(data_dir.iterdir())
            if p.is_dir() and not p.name.startswith(".") and is_scan_store(p / STORE_NAME)]


def store_fingerprint(store_path: str | os.PathLike) -> str:
    """A digest of the names, sizes and modification times of every file of a store.

    It changes whenever the store or the run's evaluation is written (a resumed run, a new snapshot, a new
    evaluation), so that :func:`publish_runs` re-publishes exactly the runs that changed.
    """
    store = find_store(store_path)
    h = hashlib.sha256()
    for root in (store, store.parent / EVALUATION_NAME):   # the evaluation is published with the run
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                st = os.stat(full)  # follows the zarr.json symlinks of a store being written
                h.update(f"{os.path.relpath(full, store.parent)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# -- what is published -------------------------------------------------------------------------------
def run_key(attrs: Mapping[str, Any], store_path: str | os.PathLike) -> str:
    """The catalog key of a run: its ``run_id`` attribute, else the name of its run folder.

    Raises
    ------
    InputError
        If that name is not usable as a key (letters, digits, ``.``, ``_``, ``-``; no leading punctuation).
    """
    store_path = Path(store_path)
    key = str(attrs.get("run_id") or (store_path.parent.name if store_path.name == STORE_NAME else store_path.name))
    if not _KEY_RE.fullmatch(key):
        raise InputError(
            f"run id {key!r} of {store_path} cannot be a catalog key; use letters, digits, '.', '_' and '-' only"
        )
    return key


def run_dataset(store_path: str | os.PathLike) -> xr.Dataset:
    """The dataset published for a run: measurements, reconstruction, snapshots, metrics and provenance,
    and the uncertainty maps of a learned reconstruction (``uncertainty``, ``snapshot_uncertainty``).

    Arrays stay lazy (dask, chunked as in the store). Compared with :meth:`ScanStore.to_dataset`:

    * the measured positions along ``point`` are renamed ``pos_y``/``pos_x`` (the names ``y``/``x`` belong
      to the image dimensions), keeping their units;
    * the image dimensions ``y``/``x`` get the physical coordinates of the pixel centres from the grid;
    * ``channel`` holds plain fixed-width strings (Tiled cannot store numpy's variable-width StringDType);
    * attrs are the store's provenance attributes (nested JSON, unchanged).

    Parameters
    ----------
    store_path : path-like
        A run folder or its ``scan.zarr``.

    Raises
    ------
    InputError
        If ``store_path`` is not a run.
    StoreError
        If the store cannot be read.
    """
    store = ScanStore.open(find_store(store_path))
    return _dataset(store)


def _dataset(store: ScanStore) -> xr.Dataset:
    attrs = store.attrs
    grid = ScanGrid.from_attrs(attrs["grid"])
    try:
        ds = store.to_dataset()
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"cannot read the scan store {store.path}: {exc}") from exc
    ds = ds.rename_vars({"y": "pos_y", "x": "pos_x"})
    for name, axis in (("pos_y", "y"), ("pos_x", "x")):
        ds[name].attrs = {**ds[name].attrs, "long_name": f"measured stage position along {axis}"}
    gy, gx = grid.coords()
    ds = ds.assign_coords(
        y=("y", gy, {"units": grid.units, "long_name": "pixel centre along y"}),
        x=("x", gx, {"units": grid.units, "long_name": "pixel centre along x"}),
        channel=("channel", np.array([str(c) for c in store.channels], dtype=str)),
    )
    ds.attrs = attrs
    if store.has_uncertainty and store.uncertainty() is None:  # the method estimates none: nothing to serve
        ds = ds.drop_vars(["uncertainty", "snapshot_uncertainty"])
    evaluation = store.path.parent / EVALUATION_NAME
    if evaluation.exists():
        ds = ds.merge(_evaluation_variables(evaluation, ds))
    return ds


def _evaluation_variables(path: Path, run: xr.Dataset) -> xr.Dataset:
    """The run's ``evaluation.zarr`` as ``eval_*`` variables along ``eval_coverage``."""
    try:
        ev = xr.open_zarr(path, consolidated=False)
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"cannot read the evaluation {path}: {exc}") from exc
    ev = ev.rename({"coverage": "eval_coverage", "n_points": "eval_n_points",
                    **{name: f"eval_{name}" for name in ev.data_vars if name not in ("n_points",)}})
    ev = ev.assign_coords(y=run["y"], x=run["x"])
    ev.attrs = {}
    return ev


def run_metadata(attrs: Mapping[str, Any], snapshot_table: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Flat, searchable metadata of a run, from its store attributes.

    Parameters
    ----------
    attrs : mapping
        The store attributes (:attr:`ScanStore.attrs`).
    snapshot_table : list of mapping, optional
        :meth:`ScanStore.snapshot_table`; the metrics of its last row become ``nrmse``, ``ssim``, ``psnr``.

    Returns
    -------
    dict
        ``run_id``, ``sample``, ``sampler``, ``instrument``, ``date`` (ISO 8601 creation time), ``stopped``,
        ``status``, ``stop_reason``, ``seed``, ``coverage_target``, ``coverage_reached``, ``n_points``,
        ``n_batches``, ``grid_shape``, ``pixel_size``, ``units``, ``channels``, ``reconstruction_method``,
        ``acquisition_time_s``, ``raster_time_s`` (a full raster on the same instrument), ``saving`` (one minus
        their ratio), ``time_model`` (its name), ``time_regime`` (travel- or dwell-bound), ``fastflow_version``,
        ``flow_run_id``, the final metrics, ``nrmse_estimate`` and ``nrmse_upper`` (the error estimate of
        :mod:`fastflow.errorest`) and ``target_nrmse`` (the stop rule's); fields the run does not have are left out.

    Examples
    --------
    >>> run_metadata({"run_id": "r1", "sample": {"sample": "flakes"}, "sampler": {"name": "halton"},
    ...               "created": "2026-11-23T13:09:56+0000", "status": "complete"})
    {'run_id': 'r1', 'sample': 'flakes', 'sampler': 'halton', 'date': '2026-11-23T13:09:56+00:00', 'status': 'complete'}
    """

    def part(name: str, key: str, plain: bool = False) -> Any:
        """``attrs[name][key]`` if ``attrs[name]`` is a dict, else ``attrs[name]`` itself when ``plain``."""
        value = attrs.get(name)
        if isinstance(value, Mapping):
            return value.get(key)
        return value if plain else None

    meta: dict[str, Any] = {
        "run_id": attrs.get("run_id"),
        "sample": part("sample", "sample", plain=True),
        "sample_source": part("sample", "source"),
        "sampler": part("sampler", "name", plain=True),
        "instrument": part("instrument", "name") or part("instrument", "kind", plain=True),
        "date": _iso(attrs.get("created")),
        "stopped": _iso(attrs.get("stopped")),
        "status": attrs.get("status"),
        "stop_reason": attrs.get("stop_reason"),
        "seed": attrs.get("seed"),
        "coverage_target": part("stop_rules", "coverage"),
        "target_nrmse": part("stop_rules", "target_nrmse"),
        "nrmse_estimate": part("error_estimate", "nrmse"),
        "nrmse_upper": part("error_estimate", "upper"),
        "coverage_reached": attrs.get("coverage_reached"),
        "n_points": attrs.get("n_points"),
        "n_batches": attrs.get("n_batches"),
        "grid_shape": part("grid", "shape"),
        "pixel_size": part("grid", "pixel_size"),
        "units": part("grid", "units"),
        "channels": attrs.get("channels"),
        "reconstruction_method": attrs.get("reconstruction_method"),
        "acquisition_time_s": attrs.get("acquisition_time_s"),
        "raster_time_s": attrs.get("raster_time_s"),
        "saving": _saving(attrs.get("acquisition_time_s"), attrs.get("raster_time_s")),
        "time_model": part("time_model", "name"),
        "time_regime": part("time_costs", "regime"),
        "fastflow_version": part("software", "fastflow"),
        "flow_run_id": attrs.get("flow_run_id"),
    }
    if snapshot_table:
        last = snapshot_table[-1]
        meta.update({k: last.get(k) for k in ("nrmse", "ssim", "psnr")})
    return {k: v for k, v in meta.items() if v is not None}


def _saving(seconds: Any, raster: Any) -> float | None:
    """``1 - seconds / raster`` when both are known numbers and the raster takes time, else None."""
    if not isinstance(seconds, (int, float)) or not isinstance(raster, (int, float)) or raster <= 0:
        return None
    return 1.0 - float(seconds) / float(raster)


def _iso(stamp: Any) -> Any:
    """``2026-11-23T13:09:56+0000`` -> ``2026-11-23T13:09:56+00:00`` (other values unchanged)."""
    if not isinstance(stamp, str):
        return stamp
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").isoformat()
    except ValueError:
        return stamp


# -- clients -----------------------------------------------------------------------------------------
def _check_data_dir(data_dir: str | os.PathLike) -> Path:
    path = Path(data_dir)
    if not path.is_dir():
        raise InputError(f"data dir {path} is not a folder; pass the folder that holds the run folders")
    return path


def _check_api_key(api_key: str | None) -> str:
    if api_key is None or not _API_KEY_RE.fullmatch(api_key):
        raise InputError(
            "the Tiled API key must be a non-empty string of letters and digits "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(24))'`)"
        )
    return api_key


@contextlib.contextmanager
def _errors(where: str) -> Iterator[None]:
    """Turn Tiled and HTTP failures into :class:`CatalogError` messages that say what to do."""
    import httpx
    from tiled.client.utils import ClientError

    try:
        yield
    except ClientError as exc:
        status = exc.response.status_code
        if status == 401:
            raise CatalogError(
                f"{where} refused the API key (401); pass the server's key (api_key= or ${ENV_API_KEY})"
            ) from None
        if status == 403:
            raise CatalogError(f"{where} does not allow this (403); use a key with write access") from None
        raise CatalogError(f"{where} answered {status}: {exc}") from None
    except httpx.TransportError as exc:
        raise CatalogError(
            f"cannot reach {where} ({exc}); check the address and that the server runs (`fastflow serve`)"
        ) from None
    except RuntimeError as exc:
        if "API key" in str(exc) or "authentication" in str(exc).lower():
            raise CatalogError(
                f"{where} requires an API key; pass it (api_key= or ${ENV_API_KEY})"
            ) from None
        raise


def connect(uri: str | None = None, api_key: str | None = None) -> Any:
    """Connect to a Tiled server: the root container of its catalog (a ``tiled.client`` Container).

    Parameters
    ----------
    uri : str, optional
        Server address such as ``http://127.0.0.1:8000``; default ``$FASTFLOW_TILED_URI``.
    api_key : str, optional
        The server's API key; default ``$FASTFLOW_TILED_API_KEY``.

    Raises
    ------
    InputError
        If no address is given and ``FASTFLOW_TILED_URI`` is not set.
    CatalogError
        If the server cannot be reached or refuses the key.
    """
    from tiled.client import from_uri

    uri = uri or os.environ.get(ENV_URI)
    if not uri:
        raise InputError(f"no Tiled server given: pass its address (e.g. http://127.0.0.1:8000) or set ${ENV_URI}")
    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    with _errors(f"the Tiled server at {uri}"):
        return from_uri(uri, api_key=api_key)


def _build_app(data_dir: Path, api_key: str) -> Any:
    """A Tiled FastAPI app on the local catalog of ``data_dir`` (created on first use), requiring ``api_key``."""
    try:
        from tiled.catalog import from_uri as catalog_from_uri
        from tiled.config import Authentication
        from tiled.server.app import build_app
    except ImportError as exc:
        raise CatalogError(
            f"serving or writing a local Tiled catalog needs Tiled's server parts ({exc}); "
            "install them with `pip install 'fastflow[server]'`"
        ) from None
    root = catalog_dir(data_dir)
    db = root / "catalog.db"
    try:
        (root / "data").mkdir(parents=True, exist_ok=True)
        new = not db.exists() or db.stat().st_size == 0  # (an empty file is what a killed `catalog init` leaves)
        catalog = catalog_from_uri(str(db), writable_storage=[str(root / "data")], init_if_not_exists=new)
    except OSError as exc:
        raise CatalogError(f"cannot create the Tiled catalog in {root}: {exc.strerror or exc}") from None
    except Exception as exc:  # tiled raises DatabaseInitializationError and SQLAlchemy errors
        raise _unusable_catalog(data_dir, exc) from None
    return build_app(catalog, authentication=Authentication(single_user_api_key=api_key))


def _served_app(data_dir: Path, api_key: str) -> Any:
    """What ``fastflow serve`` serves: the Tiled app, with the live view mounted at ``/view`` (same key)."""
    from fastflow.view import build_view_app

    app = _build_app(data_dir, api_key)
    app.mount("/view", build_view_app(data_dir, api_key))
    return app


def _unusable_catalog(data_dir: Path, exc: BaseException) -> CatalogError:
    root = catalog_dir(data_dir)
    detail = " ".join(str(exc).split())[:300]
    return CatalogError(
        f"cannot open the Tiled catalog {root / 'catalog.db'} ({type(exc).__name__}: {detail}); "
        f"if it is damaged, move {root} aside and publish the runs again"
    )


@contextlib.contextmanager
def local_catalog(data_dir: str | os.PathLike) -> Iterator[Any]:
    """The local catalog of ``data_dir``, opened in-process (no server), as a ``tiled.client`` Container.

    The catalog is created at first use (``DATA_DIR/.tiled``, a few seconds). It may be open in a running
    server at the same time: both use the same SQLite file.
    """
    from tiled.client import Context, from_context

    data_dir = _check_data_dir(data_dir)
    app = _build_app(data_dir, _app_key())
    app_logger = logging.getLogger("tiled.server.app")  # it has its own handler: "Tiled version ..." each time
    level = app_logger.level
    app_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
            try:
                context = Context.from_app(app)  # starts the app: checks the database
            except Exception as exc:
                raise _unusable_catalog(data_dir, exc) from None
        with context:
            with _errors(f"the local Tiled catalog of {data_dir}"):
                yield from_context(context)
    finally:
        app_logger.setLevel(level)


@contextlib.contextmanager
def _target(uri: str | None, api_key: str | None, catalog: str | os.PathLike | None,
            store_path: Path | None = None) -> Iterator[tuple[Any, str]]:
    """The client to publish into and a description of it, following :func:`publish_run`'s rules."""
    if uri is not None and catalog is not None:
        raise InputError("give either uri (a Tiled server) or catalog (a data dir), not both")
    if uri is None and catalog is None:
        uri = os.environ.get(ENV_URI) or None
        if uri is None:
            if store_path is None:
                raise InputError(f"say where to publish: uri=, catalog= or ${ENV_URI}")
            run_dir = store_path.parent if store_path.name == STORE_NAME else store_path
            catalog = run_dir.parent
    if uri is not None:
        yield connect(uri, api_key), f"the Tiled server at {uri}"
    else:
        with local_catalog(catalog) as client:
            yield client, f"the local Tiled catalog of {catalog}"


# -- publishing --------------------------------------------------------------------------------------
def publish_run(
    store_path: str | os.PathLike,
    *,
    uri: str | None = None,
    api_key: str | None = None,
    catalog: str | os.PathLike | None = None,
) -> str:
    """Publish a scan run into a Tiled catalog, replacing an earlier entry of the same run.

    Parameters
    ----------
    store_path : path-like
        A run folder (``DATA_DIR/RUN_ID``) or its ``scan.zarr``.
    uri : str, optional
        Address of a running Tiled server (with ``api_key``, default ``$FASTFLOW_TILED_API_KEY``).
    api_key : str, optional
        The server's API key.
    catalog : path-like, optional
        A data dir whose local catalog (``DATA_DIR/.tiled``) is written in-process, without a server.
        With neither ``uri`` nor ``catalog``: ``$FASTFLOW_TILED_URI`` if set, else the run's own data dir.

    Returns
    -------
    str
        The key of the run in the catalog (its run id).

    Raises
    ------
    InputError
        If ``store_path`` is not a run, or both ``uri`` and ``catalog`` are given.
    CatalogError
        If the catalog cannot be reached or refuses the write.
    """
    store = find_store(store_path)
    with _target(uri, api_key, catalog, store) as (client, where):
        return _publish(client, store, where)


def publish_runs(
    data_dir: str | os.PathLike,
    *,
    uri: str | None = None,
    api_key: str | None = None,
    catalog: str | os.PathLike | None = None,
    only_changed: bool = True,
) -> list[str]:
    """Publish every run folder of ``data_dir`` that is not in the catalog yet, or changed since.

    Parameters
    ----------
    data_dir : path-like
        Folder holding the run folders.
    uri, api_key, catalog
        As in :func:`publish_run`; with none of them, ``$FASTFLOW_TILED_URI`` or the local catalog of
        ``data_dir``.
    only_changed : bool
        Skip runs whose published copy was made from the same store contents (see :func:`store_fingerprint`).

    Returns
    -------
    list of str
        Keys of the runs published now.
    """
    data_dir = _check_data_dir(data_dir)
    if uri is None and catalog is None and not os.environ.get(ENV_URI):
        catalog = data_dir
    stores = find_runs(data_dir)
    published: list[str] = []
    if not stores:
        return published
    with _target(uri, api_key, catalog) as (client, where):
        for store in stores:
            if only_changed:
                try:
                    key = run_key(ScanStore.open(store).attrs, store)
                except (InputError, StoreError) as exc:
                    logger.warning("skipping %s: %s", store, exc)
                    continue
                with _errors(where):
                    entry = client.get(key) if key in client else None
                if entry is not None and entry.metadata.get("store_fingerprint") == store_fingerprint(store):
                    continue
            published.append(_publish(client, store, where))
    return published


def publish_dataset(
    ds: xr.Dataset,
    key: str,
    *,
    uri: str | None = None,
    api_key: str | None = None,
    catalog: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Publish any :class:`xarray.Dataset` (e.g. benchmark results) under ``key``, replacing an earlier entry.

    Parameters
    ----------
    ds : xarray.Dataset
        Its attrs must be JSON-ready (numpy scalars and NaN are converted); string variables may use any
        numpy string dtype.
    key : str
        Catalog key (letters, digits, ``.``, ``_``, ``-``).
    uri, api_key, catalog
        As in :func:`publish_run`; with none of them, ``$FASTFLOW_TILED_URI`` or the local catalog of
        :func:`fastflow.runs.runs_root`.
    metadata : mapping, optional
        Flat searchable metadata stored beside the dataset's attrs.

    Returns
    -------
    str
        ``key``.
    """
    if not isinstance(ds, xr.Dataset):
        raise InputError(f"publish_dataset needs an xarray.Dataset; got {type(ds).__name__}")
    if not _KEY_RE.fullmatch(str(key)):
        raise InputError(f"{key!r} cannot be a catalog key; use letters, digits, '.', '_' and '-' only")
    if uri is None and catalog is None and not os.environ.get(ENV_URI):
        catalog = runs_root()
    with _target(uri, api_key, catalog) as (client, where):
        _write_dataset(client, str(key), ds, dict(metadata or {}), where)
    return str(key)


def _publish(client: Any, store_path: Path, where: str) -> str:
    t0 = time.perf_counter()
    fingerprint = store_fingerprint(store_path)
    store = ScanStore.open(store_path)
    attrs = store.attrs
    key = run_key(attrs, store_path)
    metadata = {
        **run_metadata(attrs, store.snapshot_table()),
        "format": attrs.get("format"),
        "store_fingerprint": fingerprint,
    }
    _write_dataset(client, key, _dataset(store), metadata, where)
    logger.info("published run %s to %s in %.1f s", key, where, time.perf_counter() - t0)
    return key


def _plain_strings(var: xr.DataArray) -> Any:
    """The data of ``var``, with variable-width (StringDType) or object strings as fixed-width numpy strings."""
    if var.dtype.kind in "TO":
        return np.array(np.asarray(var.values).tolist(), dtype=str)
    return var.data


def _write_dataset(client: Any, key: str, ds: xr.Dataset, metadata: dict[str, Any], where: str) -> None:
    """Write ``ds`` as an ``xarray_dataset`` container under ``key`` (replacing it); attrs go in ``"attrs"``."""
    from tiled.structures.core import Spec

    metadata = {**jsonable(metadata), "attrs": jsonable(dict(ds.attrs))}
    with _errors(where):
        if key in client:
            client.delete_contents(key, recursive=True, external_only=False)
        node = client.create_container(key=key, specs=[Spec("xarray_dataset")], metadata=metadata)
        try:
            with warnings.catch_warnings():  # zarr: fixed-width strings have no stable v3 spec yet
                warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
                for names, spec in ((ds.data_vars, "xarray_data_var"), (ds.coords, "xarray_coord")):
                    for name in names:
                        var = ds[name]
                        node.write_array(_plain_strings(var), key=str(name), metadata={"attrs": jsonable(var.attrs)},
                                         dims=var.dims, specs=[Spec(spec)])
        except BaseException:
            with contextlib.suppress(Exception):  # leave no half-written entry behind
                client.delete_contents(key, recursive=True, external_only=False)
            raise


# -- reading -----------------------------------------------------------------------------------------
def open_run(uri: str | None, run_id: str, api_key: str | None = None) -> xr.Dataset:
    """Read one published run back as an :class:`xarray.Dataset` (loaded in memory).

    Parameters
    ----------
    uri : str or None
        Server address; ``None`` means ``$FASTFLOW_TILED_URI``.
    run_id : str
        The run's key.
    api_key : str, optional
        The server's API key; default ``$FASTFLOW_TILED_API_KEY``.

    Raises
    ------
    CatalogError
        If the server cannot be reached, refuses the key, or has no such run.
    """
    client = connect(uri, api_key)
    where = f"the Tiled server at {uri or os.environ.get(ENV_URI)}"
    with _errors(where):
        if run_id not in client:
            raise CatalogError(f"{where} has no run {run_id!r}; list the runs with `list(connect(uri, key))`")
        return client[run_id].read()


# -- serving -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Serving:
    """A running server of :func:`serving`: its address (without the key), key and data dir."""

    uri: str
    api_key: str
    data_dir: Path


def served_folder(path: str | os.PathLike) -> tuple[Path, str | None]:
    """The data folder to serve for ``path``, and a note for the user when it is not ``path`` itself.

    Runs are published to the catalog of the folder that holds them, so serving a run folder (the
    ``--out`` of one scan) or its ``scan.zarr`` would show an empty catalog: the folder above is served
    instead, and the note says so. For a folder that holds no run and no catalog, the note says that
    the catalog is empty and which folder to pass.

    Raises
    ------
    InputError
        If ``path`` is not a folder.
    """
    path = _check_data_dir(path)
    run = path.parent if is_scan_store(path) else path if is_scan_store(path / STORE_NAME) else None
    if run is not None:
        return run.parent, (f"{path} is a run folder, not a data folder: serving {run.parent}, where run "
                            f"{run.name} is published (pass {run.parent} to serve it directly)")
    if not find_runs(path) and not catalog_dir(path).exists():
        return path, (f"{path} holds no run folders and no catalog yet: the catalog is empty; pass the folder "
                      f"that holds the run folders (the parent of each scan's --out)")
    return path, None


def _prepare(data_dir: str | os.PathLike, api_key: str | None, publish_existing: bool, host: str,
             port: int) -> tuple[Path, str, bool]:
    """Check the arguments and the port, then publish what is new: everything a server needs before starting."""
    data_dir, note = served_folder(data_dir)
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)   # as the banner of serve(): the user must see it
    generated = api_key is None
    api_key = secrets.token_hex(24) if generated else _check_api_key(api_key)
    _check_port_free(host, port)
    if publish_existing:
        t0 = time.perf_counter()
        keys = publish_runs(data_dir, catalog=data_dir)
        if keys:
            logger.info("published %d new or changed runs in %.1f s", len(keys), time.perf_counter() - t0)
    return data_dir, api_key, generated


def _http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CatalogError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port") from None


def serve(
    data_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    publish_existing: bool = True,
    log_level: str = "info",
) -> None:
    """Serve the local catalog of a data dir over HTTP until interrupted (blocking).

    Parameters
    ----------
    data_dir : path-like
        Folder holding the run folders; its catalog is ``DATA_DIR/.tiled``. A run folder (or its
        ``scan.zarr``) serves the folder above it, where the run is published (:func:`served_folder`).
    host : str
        Interface to listen on; loopback by default. Use ``0.0.0.0`` only behind a firewall you trust.
    port : int
        TCP port.
    api_key : str, optional
        Key every request must carry (letters and digits). If ``None``, a random one is generated and
        printed on stderr. The server never runs without a key.
    publish_existing : bool
        First publish the runs that are new or changed since they were published (:func:`publish_runs`).
    log_level : str
        uvicorn's log level.

    Raises
    ------
    InputError
        If ``data_dir`` is not a folder or the key is malformed.
    CatalogError
        If the port is taken or the catalog cannot be opened.
    """
    data_dir, api_key, generated = _prepare(data_dir, api_key, publish_existing, host, port)
    with _claim_key(api_key):
        _run_uvicorn(data_dir, api_key, host, port, generated, log_level)


def _run_uvicorn(data_dir: Path, api_key: str, host: str, port: int, generated: bool, log_level: str) -> None:
    import uvicorn

    app = _served_app(data_dir, api_key)
    shown_key = f"  (API key: {api_key})" if generated else ""
    print(f"serving the runs of {data_dir} at {_http_url(host, port)}{shown_key}", file=sys.stderr, flush=True)
    print(f"live view: {_http_url(host, port)}/view/?api_key={api_key if generated else 'KEY'}", file=sys.stderr,
          flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s: reachable from other machines (the API key is still required)", host)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextlib.contextmanager
def serving(
    data_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    publish_existing: bool = True,
) -> Iterator[Serving]:
    """Serve the local catalog of a data dir on a background thread while the block runs.

    Same rules as :func:`serve`; ``port=0`` picks a free port. Yields a :class:`Serving` with the address
    (``http://127.0.0.1:PORT``) and the key. The server answers once the block is entered.

    Examples
    --------
    >>> with serving(data_dir, api_key="secret123") as srv:            # doctest: +SKIP
    ...     ds = open_run(srv.uri, run_id, api_key=srv.api_key)
    """
    data_dir, api_key, _ = _prepare(data_dir, api_key, publish_existing, host, port)
    with _claim_key(api_key):
        yield from _serve_in_thread(data_dir, api_key, host, port)


def _serve_in_thread(data_dir: Path, api_key: str, host: str, port: int) -> Iterator[Serving]:
    import httpx
    import uvicorn

    app = _served_app(data_dir, api_key)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name=f"tiled-{data_dir.name}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise CatalogError(f"the Tiled server for {data_dir} stopped while starting (see the log above)")
            if time.monotonic() > deadline:
                raise CatalogError(f"the Tiled server for {data_dir} did not start in {_STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.05)
        bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
        uri = _http_url(bound_host, bound_port)
        with httpx.Client(trust_env=False) as http:  # the app answers once its startup tasks are done
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{uri}/healthz", timeout=1.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise CatalogError(f"the Tiled server at {uri} did not become ready in {_STARTUP_TIMEOUT:.0f} s")
                time.sleep(0.05)
        yield Serving(uri=uri, api_key=api_key, data_dir=data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
