"""FAST on a fly-scan instrument: batches of flown row segments chosen by selection score per second."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastflow import phantoms
from fastflow.errors import InputError
from fastflow.evaluate import simulate
from fastflow.grid import ScanGrid
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.sampling.costaware import CostAwareFastSampler
from fastflow.sampling.flying import FlyingFastSampler, _strided_cumsum
from fastflow.sampling.slads import make_fast_sampler
from fastflow.segments import split_runs
from fastflow.timing import preset

SHAPE = (96, 128)
FLY = preset("xray-nanoprobe-fly")


@pytest.fixture(scope="module")
def square() -> np.ndarray:
    """A bright square on a flat background: its edges hold all the information."""
    image = np.zeros(SHAPE)
    image[30:62, 40:80] = 1.0
    return image


def test_a_travel_bound_model_that_flies_makes_the_segment_sampler():
    grid = ScanGrid(SHAPE)
    sampler = make_fast_sampler(grid, coverage=0.2, cost=FLY)
    assert type(sampler) is FlyingFastSampler and sampler.ordered and sampler.min_batch == SHAPE[1]
    assert sampler.params()["segments"] == "rows" and sampler.params()["cost"]["raster"] == "fly"
    assert type(make_fast_sampler(grid, coverage=0.2, cost=FLY, segments="off")) is CostAwareFastSampler
    assert type(make_fast_sampler(grid, coverage=0.2, cost="demo")) is CostAwareFastSampler    # steps: points
    with pytest.raises(InputError, match="segments must be"):
        make_fast_sampler(grid, coverage=0.2, cost=FLY, segments="diagonal")
    with pytest.raises(InputError, match="flies"):
        FlyingFastSampler(grid, cost=preset("demo"))
    with pytest.raises(InputError, match="initial_every"):
        FlyingFastSampler(grid, cost=FLY, initial_every=0)


def test_strided_window_sums():
    a = np.random.default_rng(0).random((3, 17))
    for step in (1, 2, 3, 5):
        c = _strided_cumsum(a, step)
        for x0 in range(17):
            for n in range(1, 6):
                if x0 + (n - 1) * step < 17:
                    np.testing.assert_allclose(c[:, x0 + n * step] - c[:, x0], a[:, x0:x0 + (n - 1) * step + 1:step].sum(1))


def test_batches_are_flown_row_segments_and_the_planned_time_is_the_instruments(square):
    grid = ScanGrid(SHAPE)
    sampler = make_fast_sampler(grid, coverage=0.25, cost=FLY)
    instrument = SimulatedInstrument(square, grid, timing=FLY)
    lattice = sampler._on_lattice.reshape(SHAPE)
    rows = np.flatnonzero(lattice.any(axis=1))
    cols = np.flatnonzero(lattice.any(axis=0))
    assert len(np.unique(np.diff(cols))) == 1                 # a line of the lattice is one segment
    adaptive = np.zeros(grid.size, dtype=bool)
    while sampler.n_measured < 0.25 * grid.size:
        batch = sampler.ask(min(sampler.min_batch, round(0.25 * grid.size) - sampler.n_measured))
        record = sampler.last_record
        if record["phase"] == "initial":                  # every third line of the lattice
            assert set(batch[:, 0]) <= set(rows[1::3]) and set(batch[:, 1]) <= set(cols)
        else:
            assert record["n_fill"] + sum(n for n, _ in record["segments"]) == len(batch)
            for run in split_runs(batch):                 # every segment lies along one row
                assert run.n == 1 or run.step[0] == 0
            adaptive[grid.ravel(batch[record["n_fill"]:])] = True
        before = instrument.elapsed
        sampler.tell(batch, instrument.measure(batch).values)
        assert record["planned_s"] == pytest.approx(instrument.elapsed - before)
    assert adaptive.any()
    ys, xs = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    band = (((np.abs(ys - 30) <= 8) | (np.abs(ys - 61) <= 8) | (np.abs(xs - 40) <= 8) | (np.abs(xs - 79) <= 8))
            & (ys >= 22) & (ys <= 69) & (xs >= 32) & (xs <= 87)).ravel()       # within 8 px of an edge
    assert adaptive[band].sum() > 2 * band.mean() * adaptive.sum()   # the segments go where the edges are


def test_segments_measure_in_less_time_than_tours_of_points():
    image = phantoms.flakes(SHAPE, seed=4)
    grid = ScanGrid(SHAPE)
    times = {}
    for segments in ("auto", "off"):
        sampler = make_fast_sampler(grid, coverage=0.2, cost=FLY, segments=segments)
        row = simulate(sampler, image, [0.2], recon="biharmonic", seed=0, timing=FLY)[0]
        times[segments] = row["time_s"]
        assert row["nrmse"] < 0.2
    assert times["auto"] < 0.5 * times["off"]
    assert times["auto"] < FLY.for_grid(grid).raster_time(grid)


def test_the_scan_loop_asks_for_a_rows_worth(square, tmp_path):
    from fastflow.scan import StopRules, run_scan
    from fastflow.store import ScanStore

    grid = ScanGrid(SHAPE)
    sampler = make_fast_sampler(grid, coverage=0.2, cost=FLY)
    store = ScanStore.create(tmp_path / "scan.zarr", grid, with_metrics=True)
    run_scan(sampler, SimulatedInstrument(square, grid, timing=FLY), store, stop=StopRules(coverage=0.2),
             batch_size=10, truth=square)
    sizes = np.bincount(store.measurements()["batch"])
    assert len(sizes) > 3 and (sizes < SHAPE[1]).sum() <= 2   # a row's worth, but where the initial scan ends and last


def test_a_model_without_acceleration_or_overhead_still_flies(square):
    grid = ScanGrid(SHAPE)
    model = dataclasses.replace(FLY, acceleration=(float("inf"),) * 2, line_overhead=0.0)
    sampler = make_fast_sampler(grid, coverage=0.15, cost=model)
    row = simulate(sampler, square, [0.15], recon="idw", seed=0, timing=model)[0]
    assert row["coverage"] == pytest.approx(0.15, abs=1e-3)


def test_scan_configurations_take_the_segments_option():
    from fastflow.runs import ScanConfig

    common = dict(sample="coins", sampler="fast", timing="xray-nanoprobe-fly", coverage=0.1)
    assert type(ScanConfig(**common).check().sampler) is FlyingFastSampler        # the default on a fly model
    off = ScanConfig(**common, sampler_options={"segments": "off"}).check()
    assert type(off.sampler) is CostAwareFastSampler
    with pytest.raises(InputError, match="segments must be"):
        ScanConfig(**common, sampler_options={"segments": "diagonal"}).check()
