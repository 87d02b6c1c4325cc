"""Line segments flown with continuous motion: segment geometry, batch plans, fly times by hand, the
simulated instrument and cost-aware FAST planning with the same numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastflow import phantoms
from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.sampling.registry import make_sampler
from fastflow.sampling.slads import make_fast_sampler
from fastflow.segments import batch_durations, flown, make_segment, plan_segments, split_runs
from fastflow.timing import TimeModel, preset

FLY = TimeModel(dwell=0.01, speed=(50.0, 100.0), acceleration=(1000.0, 2000.0), settle=0.005, line_overhead=0.2,
                raster="fly", name="fly-test")
STEP = dataclasses.replace(FLY, raster="step", name="step-test")


def test_segments_from_their_ends():
    assert make_segment(np.array([2, 1]), np.array([2, 5])).pixels().tolist() == [[2, 1], [2, 2], [2, 3], [2, 4], [2, 5]]
    assert make_segment(np.array([0, 0]), np.array([6, 0]), n=3).pixels().tolist() == [[0, 0], [3, 0], [6, 0]]
    diagonal = make_segment(np.array([4, 4]), np.array([1, 1]))
    assert diagonal.step.tolist() == [-1, -1] and diagonal.n == 4
    assert make_segment(np.array([3, 3]), np.array([3, 3])).n == 1


@pytest.mark.parametrize("first, last, n, fragment", [
    ([0, 0], [5, 2], None, "equal steps"),
    ([0, 0], [0, 6], 5, "equal steps"),
    ([0, 0], [0, 6], 0, "at least one pixel"),
    ([0, 0], [0, 1], 1, "same pixel"),
    ([0.5, 0], [0, 1], None, "integer"),
])
def test_bad_segments_are_refused(first, last, n, fragment):
    with pytest.raises(InputError, match=fragment):
        make_segment(np.array(first), np.array(last), n)


def test_runs_partition_an_ordered_batch():
    batch = np.array([[0, 0], [0, 1], [0, 2], [1, 2], [1, 1], [1, 0], [5, 5], [7, 7], [9, 9], [9, 9]])
    runs = split_runs(batch)
    assert [(r.first.tolist(), r.step.tolist(), r.n, r.offset) for r in runs] == [
        ([0, 0], [0, 1], 3, 0), ([1, 2], [0, -1], 3, 3), ([5, 5], [2, 2], 3, 6), ([9, 9], [0, 0], 1, 9)]
    assert np.array_equal(np.concatenate([r.pixels() for r in runs]), batch)


def test_fly_durations_by_hand():
    along_x = FLY.fly_durations([0.0, 2.0], 11)          # 11 pixels 2 units apart: 20 units of line
    # 100 units/s would give 0.02 s/pixel > dwell, so the line takes (11-1) * 2 / 100 = 0.2 s; ramps 2 x 100/2000
    assert along_x.sum() == pytest.approx(0.2 + 2 * 0.05 + 0.2) == FLY.line_time(20.0, 11)
    assert along_x[0] == pytest.approx(0.2 / 11 + 0.05) and along_x[-1] == pytest.approx(0.2 / 11 + 0.05 + 0.2)
    # a diagonal is capped by the slower y axis: 50 / cos 45 = 70.7 units/s along the line, acceleration 1414
    diagonal = FLY.fly_durations([1.0, 1.0], 5)
    top = 50.0 / np.sqrt(0.5)
    sweep = max(5 * 0.01, 4 * np.sqrt(2) / top)
    ramp = min(top, np.sqrt(2) / 0.01) / (1000.0 / np.sqrt(0.5))
    assert diagonal.sum() == pytest.approx(sweep + 2 * ramp + 0.2)
    with pytest.raises(InputError, match="non-zero step"):
        FLY.fly_durations([0.0, 0.0], 3)


def test_a_fly_model_flies_long_runs_and_steps_scattered_points():
    grid = ScanGrid((20, 30))
    batch = np.vstack([np.column_stack([np.full(30, 4), np.arange(30)]), [[10, 3], [15, 20], [2, 7]]])
    plan = plan_segments(batch, FLY, grid)
    assert [s.n for s in plan] == [30, 1, 1, 1]
    assert [s.n for s in flown(batch, FLY, grid)] == [30] and flown(batch, STEP, grid) == []
    # a two-pixel run is not worth the ramps and the line overhead: stepped
    assert [s.n for s in plan_segments(np.array([[0, 0], [0, 1]]), FLY, grid)] == [1, 1]


def test_a_flown_serpentine_raster_takes_the_models_raster_time():
    grid = ScanGrid((12, 16), pixel_size=(0.5, 0.5), origin=(3.0, -2.0))
    model = dataclasses.replace(FLY, flyback=False)
    raster = make_sampler("raster", grid, coverage=1.0)
    batch = raster.ask(grid.size)
    inst = SimulatedInstrument(np.zeros(grid.shape), grid, timing=model)
    inst.measure(batch)
    assert inst.elapsed == pytest.approx(model.raster_time(grid))
    stepped = SimulatedInstrument(np.zeros(grid.shape), grid, timing=STEP)
    stepped.measure(batch)
    # points one by one pay no line overhead (a step raster of lines does)
    assert stepped.elapsed == pytest.approx(dataclasses.replace(STEP, line_overhead=0.0).raster_time(grid))
    assert stepped.elapsed > inst.elapsed


def test_segments_measure_the_values_along_them_and_the_clock_is_the_plan():
    image = phantoms.flakes((40, 48), seed=2)
    grid = ScanGrid(image.shape)
    segments = [(np.array([5, 2]), np.array([5, 40])), (np.array([30, 40]), np.array([10, 20])),
                (np.array([12, 7]), np.array([12, 7]))]
    inst = SimulatedInstrument(image, grid, timing=FLY)
    pixels, m = inst.measure_segments(segments)
    assert len(pixels) == 39 + 21 + 1
    np.testing.assert_array_equal(m.values[:, 0], image[pixels[:, 0], pixels[:, 1]])     # noise off: the image
    np.testing.assert_allclose(m.positions, grid.to_position(pixels))
    expected = np.cumsum(batch_durations(pixels, FLY, grid, grid.origin))
    np.testing.assert_allclose(m.times, expected)
    assert inst.elapsed == pytest.approx(expected[-1])
    points = SimulatedInstrument(image, grid, timing=STEP)     # the same pixels point by point: same values, slower
    m_points = points.measure(pixels)
    np.testing.assert_array_equal(m_points.values, m.values)
    assert points.elapsed > inst.elapsed
    assert inst.measure_segments([])[0].shape == (0, 2)


def test_cost_aware_fast_plans_with_the_instruments_fly_times():
    image = phantoms.flakes((96, 128), seed=3)
    grid, model = ScanGrid(image.shape), preset("xray-nanoprobe-fly")
    sampler = make_fast_sampler(grid, coverage=0.4, cost=model)
    instrument = SimulatedInstrument(image, grid, timing=model)
    while sampler.n_measured < 0.4 * grid.size:       # its batches hold some short runs, flown where faster
        batch = sampler.ask(50)
        before = instrument.elapsed
        sampler.tell(batch, instrument.measure(batch).values)
        assert sampler.last_record["planned_s"] == pytest.approx(instrument.elapsed - before)


def test_fly_flags_describe_segments_and_read_back_checked():
    from fastflow.segments import fly_flags, place, segments_from_flags

    parts = [make_segment(np.array([1, 1]), np.array([1, 5])), make_segment(np.array([4, 4]), np.array([4, 4])),
             make_segment(np.array([9, 0]), np.array([3, 6]))]
    pixels, placed = place(parts)
    assert [s.offset for s in placed] == [0, 5, 6] and len(pixels) == 5 + 1 + 7
    flags = fly_flags(placed, len(pixels))
    np.testing.assert_array_equal(flags, [0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1])
    back = segments_from_flags(pixels, flags)
    assert [(s.first.tolist(), s.step.tolist(), s.n, s.offset) for s in back] == [
        ([1, 1], [0, 1], 5, 0), ([9, 0], [-1, 1], 7, 6)]
    with pytest.raises(InputError, match="first point"):
        segments_from_flags(pixels, np.r_[1, flags[1:]])
    bent = pixels.copy()
    bent[3] = [2, 4]                                       # a flagged run that is not straight
    with pytest.raises(InputError, match="equal, non-zero steps"):
        segments_from_flags(bent, flags)
    with pytest.raises(InputError, match="fly flags for"):
        segments_from_flags(pixels, flags[:-1])


def test_lists_longer_than_the_waveforms_are_cut_before_a_segment_starts():
    from fastflow.instruments.epics import _chunks

    flags = np.array([0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0])
    assert _chunks(flags, 100) == [(0, 13)]
    assert _chunks(flags, 5) == [(0, 5), (5, 10), (10, 13)]     # 5: a new segment; 10: inside one, too long
    assert _chunks(flags, 3) == [(0, 3), (3, 5), (5, 8), (8, 11), (11, 13)]
    for cap in range(1, 14):
        cuts = _chunks(flags, cap)
        assert cuts[0][0] == 0 and cuts[-1][1] == len(flags)
        assert all(b - a <= cap and b > a for a, b in cuts) and all(x[1] == y[0] for x, y in zip(cuts, cuts[1:]))


def test_segments_are_given_as_pairs_or_segments():
    from fastflow.segments import as_segments

    one = make_segment(np.array([0, 0]), np.array([0, 3]))
    assert as_segments(one) == [one]
    assert as_segments([(np.array([0, 0]), np.array([0, 3]))])[0].n == 4
    with pytest.raises(InputError, match="pair of grid indices"):
        as_segments([np.array([1, 2, 3])])
    with pytest.raises(InputError, match="integer"):
        as_segments([(np.array([0.5, 0]), np.array([0, 3]))])
