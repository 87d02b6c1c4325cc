"""The scan store: layout, round trips, refusal to overwrite, locking, and survival of kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fastflow.errors import StoreError
from fastflow.grid import ScanGrid
from fastflow.store import ScanStore, commits_dir

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import GRID, value_of  # noqa: E402


@pytest.fixture
def store(tmp_path):
    s = ScanStore.create(tmp_path / "scan.zarr", ScanGrid((6, 8), pixel_size=(2.0, 0.5), origin=(10, 20), units="um"),
                         channels=("a", "b"), with_metrics=True, attrs={"sample": "toy"})
    yield s
    s.release()


def test_layout_and_round_trip(store, tmp_path):
    store.append([[0, 0], [1, 2]], [[1.0, 2.0], [3.0, 4.0]], times=[0.1, 0.2])
    store.append([[5, 7]], [[5.0, 6.0]], positions=[[20.1, 23.4]], times=[0.3])
    store.add_snapshot(0.0625, np.full((6, 8), 3.0), {"nrmse": 0.5, "ssim": 0.25, "psnr": 12.0})
    store.set_reconstruction(np.arange(48.0).reshape(6, 8), method="idw")
    ds = xr.open_zarr(tmp_path / "scan.zarr", consolidated=False)  # readable while still open
    assert ds.sizes["point"] == 3 and ds.sizes["channel"] == 2 and ds.sizes["coverage"] == 1
    np.testing.assert_array_equal(ds.iy.values, [0, 1, 5])
    np.testing.assert_array_equal(ds.ix.values, [0, 2, 7])
    np.testing.assert_allclose(ds.y.values, [10.0, 12.0, 20.1])   # physical: origin + index * pixel size
    np.testing.assert_allclose(ds.x.values, [20.0, 21.0, 23.4])   # ... or the position actually reached
    assert ds.y.attrs["units"] == "um" and ds.time.attrs["units"] == "s"
    np.testing.assert_array_equal(ds.value.values, [[1, 2], [3, 4], [5, 6]])
    assert list(ds.channel.values) == ["a", "b"]
    np.testing.assert_array_equal(ds.batch.values, [0, 0, 1])
    np.testing.assert_allclose(ds.time.values, [0.1, 0.2, 0.3])
    assert ds.reconstruction.dims == ("y", "x") and ds.reconstruction.attrs["method"] == "idw"
    np.testing.assert_array_equal(ds.reconstruction.values, np.arange(48.0).reshape(6, 8))
    assert ds.snapshots.dims == ("coverage", "y", "x")
    assert float(ds.nrmse[0]) == 0.5 and float(ds.ssim[0]) == 0.25 and int(ds.snapshot_points[0]) == 3
    assert ds.attrs["sample"] == "toy" and ds.attrs["n_points"] == 3 and ds.attrs["status"] == "running"
    assert store.snapshot_table() == [{"coverage": 0.0625, "n_points": 3, "nrmse": 0.5, "ssim": 0.25, "psnr": 12.0,
                                       "nrmse_estimate": None, "nrmse_upper": None,   # not estimated
                                       "time_s": 0.3}]          # the time of its last point

    store.close(stop_reason="coverage reached")
    assert not commits_dir(store.path).exists()
    assert not any(p.is_symlink() for p in store.path.rglob("zarr.json"))  # a plain zarr store again
    ds = xr.open_zarr(tmp_path / "scan.zarr", consolidated=False)
    assert ds.attrs["status"] == "complete" and ds.attrs["stop_reason"] == "coverage reached"
    assert ds.sizes["point"] == 3


def test_a_reader_sees_one_committed_state_while_the_writer_appends(tmp_path):
    """Every array of a store opened while batches are committed has the same length (one generation)."""
    import threading

    writer = ScanStore.create(tmp_path / "scan.zarr", ScanGrid((40, 50)))
    done = threading.Event()

    def write():
        for k in range(300):
            writer.append([[k // 50, k % 50]], [float(k)], times=[float(k)])
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = set()
    try:
        while not done.is_set():
            reader = ScanStore.open(tmp_path / "scan.zarr")
            m = reader.measurements()          # raises on arrays of different lengths
            n = reader.n_points
            assert all(len(v) == n for v in m.values())
            np.testing.assert_array_equal(m["values"][:, 0], np.arange(n))
            assert reader.last_time() == (n - 1 if n else 0.0)
            seen.add(n)
    finally:
        thread.join()
        writer.close()
    assert len(seen) > 5


def test_images_regions_and_the_erd_map(store):
    assert store.image("erd") is not None and np.isnan(store.image("erd")).all()
    assert store.image("value") is None and store.latest_snapshot() is None
    store.set_erd(np.ones((6, 8)))
    store.add_snapshot(0.1, np.full((6, 8), 2.0))
    np.testing.assert_array_equal(store.latest_snapshot(), np.full((6, 8), 2.0))
    codes = np.zeros((6, 8), dtype=np.uint8)
    codes[0] = 2
    store.set_region(codes)
    ds = xr.open_zarr(store.path, consolidated=False)
    assert int((ds.region == 2).sum()) == 8 and float(ds.erd.mean()) == 1.0
    assert ds.attrs["region_pixels"] == {"allowed": 40, "outside_roi": 0, "no_go": 8}
    with pytest.raises(StoreError, match="region codes"):
        store.set_region(np.full((6, 8), 7))


def test_reopen_appends_and_locks(store):
    store.append([[0, 0]], [[1.0, 1.0]])
    store.close("first part")
    again = ScanStore.open(store.path, "a")
    with pytest.raises(StoreError, match="another process is writing"):
        ScanStore.open(store.path, "a")
    again.append([[0, 1]], [[2.0, 2.0]])
    again.close("second part")
    m = ScanStore.open(store.path).measurements()
    np.testing.assert_array_equal(m["indices"], [[0, 0], [0, 1]])
    np.testing.assert_array_equal(m["batch"], [0, 1])


def test_refuses_to_overwrite(store, tmp_path):
    store.append([[0, 0]], [[1.0, 1.0]])
    with pytest.raises(StoreError, match="holds another scan"):
        ScanStore.create(store.path, ScanGrid((3, 3)))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="holds other files"):
        ScanStore.create(other, ScanGrid((3, 3)))
    assert (other / "notes.txt").read_text() == "keep me"
    assert ScanStore.open(store.path).n_points == 1


def test_bad_appends_are_refused(store):
    with pytest.raises(StoreError, match="values must be"):
        store.append([[0, 0]], [1.0])           # two channels expected
    with pytest.raises(ValueError, match="outside"):
        store.append([[6, 0]], [[1.0, 1.0]])    # row 6 of a 6-row grid
    with pytest.raises(StoreError, match="grid's shape"):
        store.set_reconstruction(np.zeros((5, 8)))
    with pytest.raises(StoreError, match="not a fastflow scan store"):
        ScanStore.open(store.path.parent / "nothing-here")
    assert store.n_points == 0
    ro = ScanStore.open(store.path)
    with pytest.raises(StoreError, match="not open for writing"):
        ro.append([[0, 0]], [[1.0, 1.0]])


def test_failed_write_keeps_committed_points(store, monkeypatch):
    store.append([[0, 0]], [[1.0, 1.0]])

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)  # the commit step cannot write its metadata
    with pytest.raises(StoreError, match="No space left on device.*1 points committed before are safe"):
        store.append([[0, 1]], [[2.0, 2.0]])
    monkeypatch.undo()
    assert store.n_points == 1
    store.append([[0, 2]], [[3.0, 3.0]])        # and the store carries on once space is back
    np.testing.assert_array_equal(store.measurements()["indices"], [[0, 0], [0, 2]])


@pytest.mark.parametrize("when", ["writing the metadata", "just after publishing"])
def test_an_interrupted_commit_leaves_a_store_that_closes_as_interrupted(store, monkeypatch, tmp_path, when):
    """Ctrl-C or SIGTERM part-way through a commit: the interruption goes on as it is (no StoreError), and
    the store then records it and closes (a half-written generation is removed; a published one is kept)."""
    store.append([[0, 0]], [[1.0, 1.0]])
    if when == "writing the metadata":
        real_write = Path.write_bytes

        def interrupted(self, data):             # only the commit's documents (zarr writes chunks in a thread)
            if ".commits" in str(self):
                raise KeyboardInterrupt
            return real_write(self, data)
        monkeypatch.setattr(Path, "write_bytes", interrupted)
    else:
        real = os.replace

        def interrupted(src, dst):
            real(src, dst)
            if str(dst).endswith("current"):
                raise KeyboardInterrupt
        monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.append([[0, 1]], [[2.0, 2.0]])
    monkeypatch.undo()
    store.close(stop_reason="interrupted", status="interrupted")
    ds = xr.open_zarr(tmp_path / "scan.zarr", consolidated=False)
    kept = [[0, 0]] if when == "writing the metadata" else [[0, 0], [0, 1]]
    assert ds.attrs["status"] == "interrupted" and ds.attrs["n_points"] == len(kept)
    np.testing.assert_array_equal(np.column_stack([ds.iy.values, ds.ix.values]), kept)


def test_kill_minus_nine_loses_at_most_the_batch_in_flight(tmp_path):
    """SIGKILL a writer at random moments, 12 times, resuming each time; nothing committed is lost."""
    rng = np.random.default_rng(20261123)
    path = tmp_path / "scan.zarr"
    batch, max_points = 37, 64 * 64
    writer = [sys.executable, str(Path(__file__).parent / "crash_writer.py"), str(path), str(batch), str(max_points)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    committed = 0
    kills = 0
    while kills < 12:
        proc = subprocess.Popen(writer, stdout=subprocess.PIPE, text=True, env=env)
        first = proc.stdout.readline()          # wait until it is appending
        assert first.strip().isdigit(), first
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        printed = [int(line) for line in (first + out).split() if line.isdigit()]
        committed = max([committed, *printed])
        kills += 1

        ds = xr.open_zarr(path, consolidated=False)      # raw xarray opens it, straight after the kill
        n = ds.sizes["point"]
        assert committed <= n <= committed + batch, (committed, n)   # at most the batch in flight is lost
        k = np.arange(n)
        expected = GRID.unravel(k)
        np.testing.assert_array_equal(ds.iy.values, expected[:, 0])   # every committed point intact ...
        np.testing.assert_array_equal(ds.ix.values, expected[:, 1])
        np.testing.assert_array_equal(ds.value.values, value_of(k))   # ... and nothing unmeasured appears
        np.testing.assert_allclose(ds.time.values, k * 0.01)
        committed = n
        if n >= max_points:
            break
    assert kills >= 10
    # a last, uninterrupted run finishes the scan from where the kills left it
    subprocess.run(writer, check=True, capture_output=True, env=env)
    ds = xr.open_zarr(path, consolidated=False)
    assert ds.sizes["point"] == max_points and ds.attrs["status"] == "complete"
    np.testing.assert_array_equal(ds.value.values, value_of(np.arange(max_points)))
