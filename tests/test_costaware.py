"""Cost-aware FAST: batches chosen by ERD per second of the instrument's time model."""

from __future__ import annotations

import numpy as np
import pytest

from fastflow import phantoms
from fastflow.errors import InputError
from fastflow.evaluate import simulate
from fastflow.grid import ScanGrid
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.sampling.costaware import CostAwareFastSampler, serpentine
from fastflow.sampling.slads import FastSampler, make_fast_sampler
from fastflow.timing import preset

SHAPE = (160, 192)


@pytest.fixture(scope="module")
def flakes() -> np.ndarray:
    return phantoms.flakes(SHAPE, seed=3)


def test_serpentine_reverses_every_other_row_present():
    nx = 4
    flat = np.array([9, 1, 0, 3, 8, 11, 2])            # rows 0 (0 1 2 3) and 2 (8 9 11)
    assert serpentine(flat, nx).tolist() == [0, 1, 2, 3, 11, 9, 8]


def test_the_cost_option_picks_the_sampler_by_the_regime():
    grid = ScanGrid(SHAPE)
    assert type(make_fast_sampler(grid, coverage=0.2)) is FastSampler
    assert type(make_fast_sampler(grid, coverage=0.2, cost="off")) is FastSampler
    assert type(make_fast_sampler(grid, coverage=0.2, cost="sem-stem-beam")) is FastSampler   # dwell-bound
    sampler = make_fast_sampler(grid, coverage=0.2, cost="demo")                              # travel-bound
    assert isinstance(sampler, CostAwareFastSampler) and sampler.ordered
    assert sampler.params()["cost"]["name"] == "demo"
    with pytest.raises(InputError, match="unknown time-model preset"):
        make_fast_sampler(grid, coverage=0.2, cost="warp-drive")


def test_batches_are_new_pixels_and_the_planned_time_is_the_instruments(flakes):
    grid, model = ScanGrid(SHAPE), preset("demo")
    sampler = make_fast_sampler(grid, coverage=0.15, cost=model)
    instrument = SimulatedInstrument(flakes, grid, timing=model)
    seen = np.zeros(grid.size, dtype=bool)
    phases = set()
    while sampler.n_measured < 0.15 * grid.size:
        batch = sampler.ask(50)
        assert len(batch)
        flat = grid.ravel(batch)
        assert len(np.unique(flat)) == len(flat) and not seen[flat].any()
        seen[flat] = True
        before = instrument.elapsed
        sampler.tell(batch, instrument.measure(batch).values)
        phases.add(sampler.last_record["phase"])
        assert sampler.last_record["planned_s"] == pytest.approx(instrument.elapsed - before)
    assert phases == {"initial", "adaptive"}


def test_on_a_travel_bound_instrument_it_saves_most_of_point_wise_fasts_time(flakes):
    grid, model = ScanGrid(SHAPE), preset("demo")
    point = simulate(make_fast_sampler(grid, coverage=0.2), flakes, [0.2], recon="biharmonic", timing=model)[0]
    aware = simulate(make_fast_sampler(grid, coverage=0.2, cost=model), flakes, [0.2], recon="biharmonic",
                     timing=model)[0]
    raster = model.raster_time(grid)
    assert point["time_s"] > raster                          # the problem of the issue: points, not time, saved
    assert aware["time_s"] < 0.6 * raster and aware["time_s"] < 0.5 * point["time_s"], (aware, point, raster)
    assert aware["nrmse"] < 1.15 * point["nrmse"]            # at about point-wise FAST's error


def test_a_replayed_scan_continues_from_the_last_point(flakes):
    grid = ScanGrid(SHAPE)
    first = make_fast_sampler(grid, coverage=0.1, cost="demo")
    instrument = SimulatedInstrument(flakes, grid, timing=preset("demo"))
    done = []
    for _ in range(60):
        batch = first.ask(50)
        first.tell(batch, instrument.measure(batch).values)
        done.append(batch)
    again = make_fast_sampler(grid, coverage=0.1, cost="demo")
    for batch in done:                                        # a resume replays the store batch by batch
        again.tell(batch, flakes[batch[:, 0], batch[:, 1]])
    assert np.array_equal(again._stage, done[-1][-1])
    nxt = again.ask(50)
    assert not again.measured[nxt[:, 0], nxt[:, 1]].any()
    assert again.last_record["planned_s"] == pytest.approx(
        preset("demo").durations(np.diff(np.vstack([done[-1][-1:], nxt]), axis=0)).sum())


def test_scan_configurations_resolve_the_cost_option():
    from fastflow.runs import ScanConfig

    assert isinstance(ScanConfig(sample="coins").check().sampler, CostAwareFastSampler)      # auto: the demo's
    off = ScanConfig(sample="coins", sampler_options={"cost": "off"}).check()
    assert type(off.sampler) is FastSampler
    beam = ScanConfig(sample="coins", timing="sem-stem-beam").check()                         # dwell-bound
    assert type(beam.sampler) is FastSampler
    chosen = ScanConfig(sample="coins", timing="sem-stem-beam", sampler_options={"cost": "demo"}).check()
    assert isinstance(chosen.sampler, CostAwareFastSampler)
    with pytest.raises(InputError, match="cost option"):
        ScanConfig(sample="coins", sampler_options={"cost": 3}).check()
    with pytest.raises(InputError, match="does not exist"):
        ScanConfig(sample="coins", sampler_options={"cost": "nowhere.json"}).check()
