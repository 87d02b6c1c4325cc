"""Acquisition time models: moves and rasters against hand-computed times, presets, fits, and the scan's saving."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.timing import (
    TimeModel,
    axis_move_time,
    fit_time_model,
    load_time_model,
    preset,
    presets,
)


def test_axis_moves_follow_the_trapezoid_by_hand():
    # no acceleration: distance / speed
    assert axis_move_time(3.0, 2.0, math.inf) == pytest.approx(1.5)
    # v = 2, a = 4: the ramp takes v/a = 0.5 s and covers v^2/2a = 0.5 units each way.
    # 3 units: 0.5 s up, (3 - 1) / 2 = 1 s cruising, 0.5 s down
    assert axis_move_time(3.0, 2.0, 4.0) == pytest.approx(2.0)
    # 0.25 units (< v^2/a = 1): a triangle, 2 * sqrt(0.25 / 4) = 0.5 s
    assert axis_move_time(0.25, 2.0, 4.0) == pytest.approx(0.5)
    # exactly v^2/a: both formulas agree (1/2 + 2/4 = 2 * sqrt(1/4) = 1 s)
    assert axis_move_time(1.0, 2.0, 4.0) == pytest.approx(1.0)
    assert axis_move_time(0.0, 2.0, 4.0) == 0.0
    assert axis_move_time(-3.0, 2.0, 4.0) == pytest.approx(2.0)          # direction does not matter


def test_the_slower_axis_sets_a_diagonal_move_and_settle_counts_only_when_moving():
    model = TimeModel(dwell=0.1, speed=(1.0, 4.0), settle=0.05)
    # (dy, dx) = (2, 4): y takes 2 s, x 1 s -> 2 s, + settle + dwell
    steps = [[2.0, 4.0], [0.0, 4.0], [0.0, 0.0]]
    np.testing.assert_allclose(model.durations(steps), [2.15, 1.15, 0.1])
    assert model.route_time([[2, 4], [2, 8], [2, 8]], start=[0, 0]) == pytest.approx(3.4)


def test_step_raster_of_the_demo_instrument_is_the_issue_figure():
    """600 x 400 x (10 ms dwell + 5 ms settle + 10 ms travel) = 6,000 s (the first pixel does not move)."""
    model = preset("demo").for_grid(ScanGrid((400, 600)))
    expected = 400 * (600 * 0.01 + 599 * 0.015) + 399 * 0.015
    assert model.raster_time(ScanGrid((400, 600))) == pytest.approx(expected)
    assert round(expected) == 6000


@pytest.mark.parametrize("accel", [math.inf, 50.0])
def test_a_step_raster_equals_the_simulated_instrument_measuring_it_point_by_point(accel):
    grid = ScanGrid((7, 9), pixel_size=(0.5, 0.5), units="um")
    model = TimeModel(dwell=0.02, speed=(3.0, 6.0), acceleration=accel, settle=0.01, units="um")
    rows = [[(iy, ix) for ix in (range(9) if iy % 2 == 0 else range(8, -1, -1))] for iy in range(7)]
    serpentine = np.array([p for row in rows for p in row])
    inst = SimulatedInstrument(np.zeros(grid.shape), grid, timing=model)
    inst.measure(serpentine)
    assert inst.elapsed == pytest.approx(model.raster_time(grid))


def test_line_overhead_and_a_fly_raster_by_hand():
    grid = ScanGrid((2, 3))
    step = TimeModel(dwell=1.0, speed=10.0, settle=0.5, line_overhead=2.0)
    # per line: 3 dwells + 2 steps of (0.1 + 0.5) + 2 overhead; one line change of 0.1 + 0.5
    assert step.raster_time(grid) == pytest.approx(2 * (3 + 2 * 0.6 + 2) + 0.6)
    fly = TimeModel(dwell=1.0, speed=10.0, settle=0.5, line_overhead=2.0, raster="fly", flyback=True)
    # per line: 3 pixels of 1 s dwell + 2 s overhead; between lines: back 2 px and down 1 (0.2 s) + settle
    assert fly.raster_time(grid) == pytest.approx(2 * 5.0 + 0.7)
    ramps = TimeModel(dwell=1.0, speed=10.0, acceleration=0.5, settle=0.5, raster="fly")
    # the line runs at 1 px/s (a pixel per dwell): ramps 2 * 1/0.5 = 4 s; serpentine: down 1 px
    down = float(axis_move_time(1.0, 10.0, 0.5))
    assert ramps.raster_time(grid) == pytest.approx(2 * (3.0 + 4.0) + down + 0.5)


def test_models_are_expressed_in_the_grid_units():
    model = TimeModel(dwell=0.01, speed=20.0, acceleration=200.0, units="um", pixel=0.05)
    on_px = model.for_grid(ScanGrid((4, 4)))
    assert on_px.speed == pytest.approx((400.0, 400.0)) and on_px.acceleration == pytest.approx((4000.0, 4000.0))
    on_nm = model.for_grid(ScanGrid((4, 4), pixel_size=50.0, units="nm"))
    assert on_nm.units == "nm" and on_nm.speed == pytest.approx((20000.0, 20000.0))
    # the same physical scan costs the same in either units
    assert on_px.raster_time(ScanGrid((4, 4))) == pytest.approx(on_nm.raster_time(ScanGrid((4, 4), pixel_size=50.0, units="nm")))
    assert TimeModel(units=None).for_grid(ScanGrid((4, 4), units="mm")).units == "mm"
    with pytest.raises(InputError, match="typical pixel"):
        TimeModel(units="um").for_grid(ScanGrid((4, 4)))
    with pytest.raises(InputError, match="steps"):
        model.for_grid(ScanGrid((4, 4), units="steps"))


def test_every_preset_loads_round_trips_and_names_its_source():
    grid = ScanGrid((64, 64))
    assert {"demo", "xray-nanoprobe-step", "xray-nanoprobe-fly", "sem-stem-beam", "afm"} <= set(presets())
    for name, doc in presets().items():
        model = preset(name)
        assert doc["source"] and doc["description"]
        assert TimeModel.from_attrs(json.loads(json.dumps(model.to_attrs()))) == model
        costs = model.for_grid(grid).costs(grid)
        assert costs["regime"] in ("travel-bound", "dwell-bound") and 0 < costs["break_even_coverage"] <= 1
    assert preset("demo").for_grid(grid).costs(grid)["regime"] == "travel-bound"
    assert preset("sem-stem-beam").for_grid(grid).costs(grid)["regime"] == "dwell-bound"


@pytest.mark.parametrize(("doc", "message"), [
    ({"dwell": -1, "speed": 1}, "dwell must be"),
    ({"dwell": 0.1, "speed": [1, 0]}, "speed"),
    ({"dwell": 0.1, "speed": 1, "acceleration": "fast"}, "acceleration"),
    ({"dwell": 0.1, "speed": 1, "raster": "zigzag"}, "raster must be"),
    ({"dwell": 0.1, "speed": 1, "speeed": 2}, "unknown time-model field"),
    ({"speed": 1}, "lacks dwell"),
    ([1, 2], "JSON object"),
])
def test_a_malformed_model_file_is_refused_naming_the_problem(tmp_path, doc, message):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message):
        load_time_model(path)


def test_unknown_presets_missing_and_broken_files_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="known: demo"):
        load_time_model("nanoprobe")
    with pytest.raises(InputError, match="does not exist"):
        load_time_model(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_time_model(tmp_path / "broken.json")
    good = tmp_path / "fitted.json"
    good.write_text(json.dumps({"time_model": {"dwell": 0.2, "speed": 5.0}, "rms_s": 0.0}))
    assert load_time_model(good).dwell == 0.2 and load_time_model(good).name == "fitted"


@pytest.mark.parametrize("accel", [math.inf, 400.0])
def test_a_fit_recovers_the_model_that_timed_the_points(accel):
    truth = TimeModel(dwell=0.01, speed=100.0, acceleration=accel, settle=0.005)
    grid = ScanGrid((200, 200))
    inst = SimulatedInstrument(np.zeros(grid.shape), grid, timing=truth)
    idx = np.random.default_rng(3).integers(0, 200, (400, 2))
    m = inst.measure(idx)
    batch = np.repeat(np.arange(8), 50)
    times = m.times + batch * 7.0            # the sampler thinks between batches: those gaps are left out
    fit = fit_time_model(m.positions, times, batch, dwell=0.01)
    assert fit.n_moves == 8 * 49 - int((np.abs(np.diff(idx, axis=0)).max(axis=1) == 0).sum())
    assert fit.model.speed[0] == pytest.approx(100.0, rel=0.02)
    assert fit.model.settle == pytest.approx(0.005, abs=5e-4) and fit.rms_s < 1e-3
    assert math.isinf(fit.model.acceleration[0]) == math.isinf(accel)
    if not math.isinf(accel):
        assert fit.model.acceleration[0] == pytest.approx(accel, rel=0.05)
    assert fit.model.raster_time(grid) == pytest.approx(truth.raster_time(grid), rel=0.02)


def test_a_fit_needs_enough_timed_moves():
    with pytest.raises(InputError, match="at least 10"):
        fit_time_model(np.zeros((5, 2)) + np.arange(5)[:, None], np.arange(5.0))
    with pytest.raises(InputError, match=r"\(n, 2\) positions"):
        fit_time_model(np.zeros((5, 3)), np.arange(5.0))


def test_a_scan_records_the_raster_time_and_the_saving_at_every_snapshot(tmp_path):
    from fastflow.runs import ScanConfig, acquire, create_run, time_model
    from fastflow.store import ScanStore

    config = ScanConfig(sample="coins", sampler="raster", coverage=0.1, snapshots=[0.05], timing="xray-nanoprobe-step",
                        dwell=0.02)
    model = time_model(config)
    assert model.name == "xray-nanoprobe-step" and model.dwell == 0.02 and model.settle == 0.25
    run_dir = create_run(config, tmp_path / "run")
    report = acquire(run_dir, figure=False)
    store = ScanStore.open(run_dir / "scan.zarr")
    grid = store.grid
    raster = model.for_grid(grid).raster_time(grid)
    assert store.attrs["raster_time_s"] == pytest.approx(raster)
    assert store.attrs["time_model"]["name"] == "xray-nanoprobe-step" and store.attrs["time_costs"]["regime"]
    times = store.measurements()["time"]
    for row in store.snapshot_table():
        assert row["time_s"] == pytest.approx(times[row["n_points"] - 1])
        assert row["saving"] == pytest.approx(1 - row["time_s"] / raster)
    assert report["raster_time_s"] == pytest.approx(raster)
    assert report["saving"] == pytest.approx(1 - report["acquisition_time_s"] / raster)
    assert 0 < report["saving"] < 1          # a 10 % sub-raster on a dwell-bound stage saves time


def test_timing_is_checked_and_on_epics_is_the_beamlines_model_for_fast(tmp_path):
    from fastflow.grid import ScanGrid
    from fastflow.instruments.ioc import pv_map_for
    from fastflow.runs import ScanConfig, fast_cost

    pv_map = pv_map_for("SIM:", ScanGrid((303, 384)), mode="list").save(tmp_path / "map.toml")
    epics = dict(sample="coins", instrument="epics", pv_map=str(pv_map))
    config = ScanConfig(**epics, timing="xray-nanoprobe-fly")
    config.check()
    assert fast_cost(config).name == "xray-nanoprobe-fly"       # 'auto' weighs the beamline's model
    assert fast_cost(ScanConfig(**epics)) is None                # none given: point-wise FAST on EPICS
    for bad in (dict(**epics, timing="warp-drive"), dict(sample="coins", timing="warp-drive")):
        with pytest.raises(InputError, match="unknown time-model preset"):
            ScanConfig(**bad).check()
    with pytest.raises(InputError, match="does not exist"):
        ScanConfig(**epics, timing=str(tmp_path / "missing.json")).check()


def test_the_timing_commands_list_show_and_fit(tmp_path):
    import subprocess
    import sys

    from fastflow.runs import ScanConfig, acquire, create_run

    def fastflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fastflow.cli", "timing", *args], capture_output=True, text=True,
                              timeout=120)

    listed = fastflow("presets", "--shape", "400,600")
    assert listed.returncode == 0, listed.stderr
    assert "6,000.0 s" in listed.stdout and all(name in listed.stdout for name in ("demo", "afm", "sem-stem-beam"))
    shown = fastflow("show", "demo", "--shape", "400,600")
    assert shown.returncode == 0 and json.loads(shown.stdout)["raster_time_s"] == pytest.approx(6000.0, rel=1e-5)
    bad = fastflow("show", "warp-drive")
    assert bad.returncode == 2 and "unknown time-model preset" in bad.stderr
    run_dir = create_run(ScanConfig(sample="coins", sampler="halton", coverage=0.01, snapshots=[], dwell=0.02),
                         tmp_path / "run")
    acquire(run_dir, figure=False)
    out = tmp_path / "fitted.json"
    fitted = fastflow("fit", str(run_dir), "--dwell", "0.02", "--out", str(out))
    assert fitted.returncode == 0, fitted.stderr
    model = load_time_model(out)                    # what --timing and --cost read back
    assert model.dwell == pytest.approx(0.02) and model.settle == pytest.approx(0.005, abs=1e-3)
    assert model.speed[1] == pytest.approx(100.0, rel=0.05)
    assert fastflow("fit", str(run_dir), "--out", str(out)).returncode == 2      # never overwritten
