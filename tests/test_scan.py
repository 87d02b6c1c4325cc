"""The scan loop: stop rules, exact snapshots, persistence before telling, and resume after a failure."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fastflow.errors import InputError, InstrumentError
from fastflow.grid import ScanGrid
from fastflow.instruments import SimulatedInstrument
from fastflow.metrics import nrmse
from fastflow.phantoms import particles
from fastflow.sampling.registry import make_sampler
from fastflow.scan import STOP_COVERAGE, STOP_TIME, StopRules, parse_fractions, run_scan
from fastflow.store import ScanStore

IMAGE = particles((48, 64), seed=3)
GRID = ScanGrid(IMAGE.shape)


class FailingInstrument(SimulatedInstrument):
    """The simulated instrument, made to fail on its n-th batch (fault injection, not a stand-in)."""

    def __init__(self, *args, fail_on: int, bad_value: float | None = None, partial: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.fail_on, self.bad_value, self.partial = 0, fail_on, bad_value, partial

    def measure(self, indices):
        self.calls += 1
        if self.calls == self.fail_on:
            if self.bad_value is None:
                exc = InstrumentError("detector stopped answering")
                if self.partial:        # like a real instrument failing part-way through a batch
                    exc.partial = super().measure(np.asarray(indices)[: self.partial])
                raise exc
            m = super().measure(indices)
            m.values[0, 0] = self.bad_value
            return m
        return super().measure(indices)


def new_store(tmp_path, name="scan.zarr"):
    return ScanStore.create(tmp_path / name, GRID, with_metrics=True)


def test_stops_at_coverage_with_exact_snapshots(tmp_path):
    store = new_store(tmp_path)
    result = run_scan(make_sampler("halton", GRID, coverage=0.3, seed=1), SimulatedInstrument(IMAGE, seed=1),
                      store, stop=StopRules(coverage=0.3), batch_size=64, snapshots=[0.05, 0.1, 0.2], truth=IMAGE)
    n_total = GRID.size
    assert result.stop_reason == STOP_COVERAGE
    assert result.n_points == round(0.3 * n_total)
    assert [row["n_points"] for row in result.snapshots] == [round(c * n_total) for c in (0.05, 0.1, 0.2, 0.3)]
    errors = [row["nrmse"] for row in result.snapshots]
    assert errors == sorted(errors, reverse=True)          # more points, better image
    m = store.measurements()
    np.testing.assert_array_equal(m["values"][:, 0], IMAGE[m["indices"][:, 0], m["indices"][:, 1]])  # no noise
    assert len(np.unique(GRID.ravel(m["indices"]))) == result.n_points   # nothing measured twice
    assert np.all(np.diff(m["time"]) > 0)
    assert result.acquisition_time == pytest.approx(m["time"][-1])
    np.testing.assert_allclose(result.reconstruction[m["indices"][:, 0], m["indices"][:, 1]], m["values"][:, 0])
    assert nrmse(IMAGE, result.reconstruction) == pytest.approx(result.snapshots[-1]["nrmse"])


def test_time_budget(tmp_path):
    instrument = SimulatedInstrument(IMAGE, dwell=0.1, settle=0.0, seed=0)
    result = run_scan(make_sampler("raster", GRID, coverage=1.0), instrument, new_store(tmp_path),
                      stop=StopRules(coverage=1.0, time_budget=5.0), batch_size=10)
    assert result.stop_reason == STOP_TIME
    assert 5.0 <= result.acquisition_time < 5.0 + 10 * 0.2   # no batch starts after the budget is spent
    assert result.n_points < GRID.size
    assert all(row["nrmse"] is None for row in result.snapshots)      # no ground truth given: no metrics


def test_failure_keeps_data_and_resume_completes_without_repeats(tmp_path):
    store = new_store(tmp_path)
    sampler = make_sampler("random", GRID, coverage=0.25, seed=7)
    failing = FailingInstrument(IMAGE, fail_on=4, seed=0)
    with pytest.raises(InstrumentError, match="stopped answering"):
        run_scan(sampler, failing, store, stop=StopRules(coverage=0.25), batch_size=50)
    store.release()
    before = ScanStore.open(store.path).measurements()
    assert len(before["indices"]) == 3 * 50                  # the three batches before the failure are on disk

    again = ScanStore.open(store.path, "a")
    last = GRID.to_position(before["indices"][-1:])[0]
    resumed = run_scan(make_sampler("random", GRID, coverage=0.25, seed=7),
                       SimulatedInstrument(IMAGE, seed=0, start=last), again,
                       stop=StopRules(coverage=0.25), batch_size=50)
    again.close(resumed.stop_reason)
    after = ScanStore.open(store.path).measurements()
    np.testing.assert_array_equal(after["indices"][:150], before["indices"])      # old points kept, in order
    flat = GRID.ravel(after["indices"])
    assert len(flat) == len(np.unique(flat)) == round(0.25 * GRID.size)          # none lost, none twice
    uninterrupted = make_sampler("random", GRID, coverage=0.25, seed=7).sequence  # the same points as one run
    np.testing.assert_array_equal(np.sort(flat), np.sort(uninterrupted))
    assert np.all(np.diff(after["time"]) > 0)                                      # the clock continues
    assert list(np.unique(after["batch"])) == list(range(int(after["batch"].max()) + 1))


def test_points_measured_before_a_failure_within_a_batch_are_kept(tmp_path):
    store = new_store(tmp_path)
    sampler = make_sampler("raster", GRID, coverage=0.25, seed=1)
    with pytest.raises(InstrumentError):
        run_scan(sampler, FailingInstrument(IMAGE, fail_on=3, partial=17, seed=0), store,
                 stop=StopRules(coverage=0.25), batch_size=50)
    store.release()
    m = ScanStore.open(store.path).measurements()
    assert len(m["indices"]) == 2 * 50 + 17
    np.testing.assert_array_equal(GRID.ravel(m["indices"]), make_sampler("raster", GRID, coverage=0.25,
                                                                          seed=1).sequence[:117])
    np.testing.assert_array_equal(m["values"][:, 0], IMAGE.ravel()[GRID.ravel(m["indices"])])


def test_nan_measurement_is_saved_then_reported(tmp_path):
    store = new_store(tmp_path)
    with pytest.raises(InputError, match="NaN"):
        run_scan(make_sampler("raster", GRID, coverage=0.5), FailingInstrument(IMAGE, fail_on=2, bad_value=np.nan),
                 store, stop=StopRules(coverage=0.5), batch_size=20)
    store.release()
    ds = xr.open_zarr(store.path, consolidated=False)
    assert ds.sizes["point"] == 40 and np.isnan(ds.value.values[20, 0])   # what the detector said is on disk


def test_bad_parameters():
    with pytest.raises(InputError, match="coverage"):
        StopRules(coverage=0)
    with pytest.raises(InputError, match="time budget"):
        StopRules(coverage=0.5, time_budget=-1)
    with pytest.raises(InputError, match="snapshot"):
        parse_fractions("0.1,x")
    assert parse_fractions("0.2, 0.1,0.2") == [0.1, 0.2]


@pytest.mark.parametrize("name", ["raster", "halton"])
def test_overlap_gives_a_static_sampler_the_same_scan(tmp_path, name):
    stores = []
    for overlap in (False, True):
        store = new_store(tmp_path, f"{name}-{overlap}.zarr")
        run_scan(make_sampler(name, GRID, coverage=0.3, seed=2), SimulatedInstrument(IMAGE, seed=0), store,
                 stop=StopRules(coverage=0.3), batch_size=40, snapshots=[0.1], overlap=overlap)
        store.close()
        stores.append(ScanStore.open(store.path).measurements())
    for key in ("indices", "values", "positions", "time"):
        np.testing.assert_array_equal(stores[0][key], stores[1][key])


def test_overlap_with_fast_measures_each_point_once_and_keeps_the_batch_in_flight(tmp_path):
    store = new_store(tmp_path)
    result = run_scan(make_sampler("fast", GRID, coverage=0.25, seed=0), SimulatedInstrument(IMAGE, seed=0),
                      store, stop=StopRules(coverage=0.25), batch_size=30, snapshots=[0.1], truth=IMAGE,
                      overlap=True)
    flat = GRID.ravel(ScanStore.open(store.path).measurements()["indices"])
    assert len(flat) == len(np.unique(flat)) == round(0.25 * GRID.size) == result.n_points
    assert result.snapshots[-1]["nrmse"] < result.snapshots[0]["nrmse"]

    failing = new_store(tmp_path, "failing.zarr")
    with pytest.raises(InstrumentError):
        run_scan(make_sampler("raster", GRID, coverage=0.25, seed=0),
                 FailingInstrument(IMAGE, fail_on=3, partial=9, seed=0), failing,
                 stop=StopRules(coverage=0.25), batch_size=50, overlap=True)
    failing.release()
    assert ScanStore.open(failing.path).n_points == 2 * 50 + 9
