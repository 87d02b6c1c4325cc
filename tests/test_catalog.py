"""Publishing runs to Tiled and reading them back through a real server on 127.0.0.1 (one per module)."""

from __future__ import annotations

import datetime

import httpx
import numpy as np
import pytest
import xarray as xr
from tiled.queries import Key

from fastflow.catalog import (
    catalog_dir,
    connect,
    open_run,
    publish_dataset,
    publish_run,
    publish_runs,
    run_dataset,
    run_metadata,
    served_folder,
    serving,
)
from fastflow.errors import CatalogError, InputError
from fastflow.grid import ScanGrid
from fastflow.instruments import SimulatedInstrument
from fastflow.phantoms import flakes, particles
from fastflow.sampling.registry import make_sampler
from fastflow.scan import StopRules, run_scan
from fastflow.store import ScanStore

KEY = "testkey0123456789"
GRID = ScanGrid((32, 32), pixel_size=(0.5, 0.5), origin=(10.0, 20.0), units="um")


def make_run(data_dir, run_id, sample, image, sampler="halton", coverage=0.2, seed=0):
    """A small finished run folder, laid out as `fastflow scan` writes it."""
    the_sampler = make_sampler(sampler, GRID, coverage=coverage, seed=seed)
    instrument = SimulatedInstrument(image, GRID, seed=seed)
    store = ScanStore.create(
        data_dir / run_id / "scan.zarr", GRID, channels=instrument.channels, with_metrics=True,
        attrs={"run_id": run_id, "sample": {"sample": sample, "source": "phantom"}, "sampler": the_sampler.params(),
               "instrument": instrument.describe(), "seed": seed, "stop_rules": {"coverage": coverage}},
    )
    result = run_scan(the_sampler, instrument, store, stop=StopRules(coverage=coverage), batch_size=40,
                      snapshots=[0.1], truth=image)
    store.close(stop_reason=result.stop_reason)
    return store.path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "run-a", "particles", particles(GRID.shape, seed=1), sampler="halton")
    make_run(root, "run-b", "flakes", flakes(GRID.shape, seed=2), sampler="random", seed=3)
    return root


@pytest.fixture(scope="module")
def server(data_dir):
    with serving(data_dir, api_key=KEY) as srv:  # publishes the two runs first
        yield srv


@pytest.fixture
def no_env(monkeypatch):
    for name in ("FASTFLOW_TILED_URI", "FASTFLOW_TILED_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_read_back_through_http(server, data_dir, no_env):
    store = ScanStore.open(data_dir / "run-a" / "scan.zarr")
    ds = open_run(server.uri, "run-a", api_key=KEY)
    m = store.measurements()
    np.testing.assert_array_equal(np.stack([ds["iy"], ds["ix"]], axis=1), m["indices"])
    np.testing.assert_array_equal(np.stack([ds["pos_y"], ds["pos_x"]], axis=1), m["positions"])
    np.testing.assert_array_equal(ds["value"].values, m["values"])
    np.testing.assert_array_equal(ds["batch"], m["batch"])
    np.testing.assert_array_equal(ds["time"], m["time"])
    assert ds["pos_y"].attrs["units"] == "um" and ds.sizes["point"] == store.n_points == 205
    gy, gx = GRID.coords()
    np.testing.assert_array_equal(ds["y"], gy)
    np.testing.assert_array_equal(ds["x"], gx)
    assert ds["y"].attrs["units"] == "um" and list(ds["channel"].values) == ["value"]
    np.testing.assert_array_equal(ds["reconstruction"], store._read("reconstruction"))
    coverages, snapshots = store.snapshots()
    np.testing.assert_array_equal(ds["coverage"], coverages)
    np.testing.assert_array_equal(ds["snapshots"], snapshots)
    table = store.snapshot_table()
    for name in ("nrmse", "ssim", "psnr"):
        np.testing.assert_allclose(ds[name], [row[name] for row in table])
    assert ds.attrs == store.attrs                                  # nested dicts survive as they are
    assert ds.attrs["sample"]["sample"] == "particles"
    # what is served is what run_dataset builds locally
    ds_local = run_dataset(data_dir / "run-a").load()
    assert ds.identical(ds_local)


def test_api_key_required(server, data_dir, no_env):
    url = f"{server.uri}/api/v1/metadata/run-a"
    with httpx.Client(trust_env=False) as http:
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Apikey wrongkey123"}).status_code == 401
        assert http.get(url, headers={"Authorization": f"Apikey {KEY}"}).status_code == 200
    with pytest.raises(CatalogError, match="requires an API key"):
        open_run(server.uri, "run-a")
    with pytest.raises(CatalogError, match="refused the API key"):
        open_run(server.uri, "run-a", api_key="wrongkey123")
    with pytest.raises(CatalogError, match="refused the API key"):
        publish_run(data_dir / "run-a", uri=server.uri, api_key="wrongkey123")
    with pytest.raises(CatalogError, match="has no run 'run-zzz'"):
        open_run(server.uri, "run-zzz", api_key=KEY)


def test_search_by_metadata(server, no_env):
    c = connect(server.uri, KEY)
    assert list(c.search(Key("sample") == "flakes")) == ["run-b"]
    assert list(c.search(Key("sampler") == "halton")) == ["run-a"]
    assert list(c.search(Key("sample") == "flakes").search(Key("sampler") == "halton")) == []
    assert {"run-a", "run-b"} <= set(c.search(Key("status") == "complete"))
    assert "run-a" in c.search(Key("coverage_reached") >= 0.2)
    assert {"run-a", "run-b"} <= set(c.search(Key("nrmse_estimate") > 0))     # the error estimate, searchable
    assert list(c.search(Key("attrs.sampler.name") == "random")) == ["run-b"]   # nested attrs: dotted keys
    meta = c["run-a"].metadata
    store = ScanStore.open(server.data_dir / "run-a" / "scan.zarr")
    created = datetime.datetime.strptime(store.attrs["created"], "%Y-%m-%dT%H:%M:%S%z")
    assert datetime.datetime.fromisoformat(meta["date"]) == created
    assert meta["instrument"] == "simulated" and meta["seed"] == 0 and meta["grid_shape"] == [32, 32]
    assert meta["nrmse"] == pytest.approx(store.snapshot_table()[-1]["nrmse"])


def test_republish_replaces_a_resumed_run(server, data_dir, no_env):
    image = particles(GRID.shape, seed=5)
    path = make_run(data_dir, "run-c", "resumed", image, sampler="random", coverage=0.1, seed=4)
    # no server given: published in-process into the run's data dir catalog, which the server is serving
    assert publish_run(path.parent) == "run-c"
    before = open_run(server.uri, "run-c", api_key=KEY)
    assert before.sizes["point"] == 102
    store = ScanStore.open(path, "a")                        # resume to a higher coverage
    run_scan(make_sampler("random", GRID, coverage=0.2, seed=4), SimulatedInstrument(image, GRID, seed=4), store,
             stop=StopRules(coverage=0.2), batch_size=40, snapshots=[0.15], truth=image)
    store.close(stop_reason="coverage reached")
    assert publish_runs(data_dir) == ["run-c"]               # only the changed run
    assert publish_runs(data_dir) == []
    after = open_run(server.uri, "run-c", api_key=KEY)
    assert after.sizes["point"] == 205 and after.sizes["coverage"] == 3
    np.testing.assert_array_equal(after["iy"][:102], before["iy"])
    c = connect(server.uri, KEY)
    assert list(c.search(Key("sample") == "resumed")) == ["run-c"]
    assert c["run-c"].metadata["n_points"] == 205


def test_bad_input(tmp_path, server):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a run")
    with pytest.raises(InputError, match="not a fastflow run"):
        publish_run(tmp_path / "notes", catalog=tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        publish_run(tmp_path / "missing", catalog=tmp_path)
    with pytest.raises(InputError, match="not both"):
        publish_run(server.data_dir / "run-a", uri=server.uri, catalog=server.data_dir)
    with pytest.raises(InputError, match="letters and digits"):
        with serving(tmp_path, api_key="has spaces"):
            pass
    assert not catalog_dir(tmp_path).exists()                # nothing was created for refused input
    with pytest.raises(CatalogError, match="another API key"):  # Tiled keeps one key per process
        with serving(server.data_dir, api_key="otherkey1", publish_existing=False):
            pass


def test_a_run_folder_serves_the_data_folder_where_it_is_published(data_dir, tmp_path):
    for given in (data_dir / "run-a", data_dir / "run-a" / "scan.zarr"):
        folder, note = served_folder(given)
        assert folder == data_dir
        assert f"{given} is a run folder" in note and f"serving {data_dir}, where run run-a is published" in note
    assert served_folder(data_dir) == (data_dir, None)
    folder, note = served_folder(tmp_path)                   # nothing to serve: say which folder to pass
    assert folder == tmp_path and "holds no run folders" in note and "parent of each scan's --out" in note
    with pytest.raises(InputError, match="not a folder"):
        served_folder(tmp_path / "missing")


def test_environment_selects_the_server(server, data_dir, monkeypatch):
    """FASTFLOW_TILED_URI/API_KEY route publishing through HTTP, where it replaces the entry too."""
    monkeypatch.setenv("FASTFLOW_TILED_URI", server.uri)
    monkeypatch.setenv("FASTFLOW_TILED_API_KEY", KEY)
    assert publish_run(data_dir / "run-b") == "run-b"
    assert open_run(None, "run-b").attrs["sample"]["sample"] == "flakes"


def test_run_metadata_is_flat_and_skips_missing_fields():
    meta = run_metadata({"run_id": "r", "sample": "plain", "sampler": {"name": "fast"}, "created": "not a date"},
                        [{"nrmse": 0.3, "ssim": 0.7, "psnr": 20.0}, {"nrmse": 0.1, "ssim": 0.9, "psnr": 30.0}])
    assert meta == {"run_id": "r", "sample": "plain", "sampler": "fast", "date": "not a date",
                    "nrmse": 0.1, "ssim": 0.9, "psnr": 30.0}


def test_run_metadata_carries_the_time_saving_for_searches():
    meta = run_metadata({"run_id": "r", "acquisition_time_s": 1500.0, "raster_time_s": 6000.0,
                         "time_model": {"name": "demo", "dwell": 0.01}, "time_costs": {"regime": "travel-bound"}})
    assert meta == {"run_id": "r", "acquisition_time_s": 1500.0, "raster_time_s": 6000.0, "saving": 0.75,
                    "time_model": "demo", "time_regime": "travel-bound"}
    assert "saving" not in run_metadata({"acquisition_time_s": 5.0, "raster_time_s": 0.0})


def test_run_metadata_carries_the_error_estimate_and_its_target():
    meta = run_metadata({"stop_rules": {"coverage": 0.5, "target_nrmse": 0.05},
                         "error_estimate": {"nrmse": 0.04, "upper": 0.049, "method": "idw"}})
    assert meta == {"coverage_target": 0.5, "target_nrmse": 0.05, "nrmse_estimate": 0.04, "nrmse_upper": 0.049}


def test_publish_any_dataset(server, no_env):
    ds = xr.Dataset(
        {"nrmse": (("sampler", "coverage"), np.arange(6.0).reshape(2, 3))},
        coords={"sampler": np.array(["halton", "fast"], dtype=np.dtypes.StringDType()), "coverage": [0.1, 0.2, 0.3]},
        attrs={"n_runs": np.int64(2), "best": {"sampler": "fast"}, "missing": float("nan")},
    )
    for _ in range(2):                                       # the second time replaces the first
        assert publish_dataset(ds, "bench-1", uri=server.uri, api_key=KEY, metadata={"kind": "benchmark"}) == "bench-1"
    c = connect(server.uri, KEY)
    assert list(c.search(Key("kind") == "benchmark")) == ["bench-1"]
    back = c["bench-1"].read()
    assert list(back["sampler"].values) == ["halton", "fast"]
    np.testing.assert_array_equal(back["nrmse"], ds["nrmse"])
    assert back.attrs == {"n_runs": 2, "best": {"sampler": "fast"}, "missing": None}
