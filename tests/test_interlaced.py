"""The interlaced lattice order (nested rasters) and its use by the FAST sampler's fill."""

import numpy as np
import pytest

from fastflow.errors import InputError
from fastflow.evaluate import simulate
from fastflow.grid import ScanGrid
from fastflow.sampling.interlaced import interlaced_levels, interlaced_pattern, lattice_axes
from fastflow.sampling.registry import make_sampler
from fastflow.sampling.slads import FastSampler


def _is_raster(flat: np.ndarray, nx: int) -> bool:
    """True if the pixels are all the crossings of some rows and columns, each evenly spaced (gaps differ by
    at most one pixel, as pixel rounding allows)."""
    y, x = np.divmod(flat, nx)
    rows, cols = np.unique(y), np.unique(x)
    even = all(len(a) < 3 or np.ptp(np.diff(a)) <= 1 for a in (rows, cols))
    return len(flat) == len(rows) * len(cols) and even


@pytest.mark.parametrize(("shape", "n"), [((256, 256), 13107), ((40, 60), 240), ((1, 100), 20), ((100, 1), 10),
                                          ((7, 3), 21), ((5, 5), 1), ((33, 17), 100)])
def test_levels_visit_the_finest_lattice_once(shape, n):
    levels = list(interlaced_levels(shape, n))
    flat = np.concatenate([pixels for pixels, _ in levels])
    rows, cols = lattice_axes(shape, n)
    assert len(flat) == len(np.unique(flat)) == len(rows) * len(cols)
    np.testing.assert_array_equal(np.sort(flat), np.sort((rows[:, None] * shape[1] + cols[None, :]).ravel()))
    spacing = [s for _, s in levels]
    assert spacing == sorted(spacing, reverse=True)           # coarse to fine
    assert abs(len(flat) - n) <= len(rows) + len(cols)        # about n pixels
    assert len(rows) <= shape[0] and len(cols) <= shape[1]


def test_completed_levels_are_rasters_at_each_quarter():
    shape, n = (256, 256), 13107
    seen: list[np.ndarray] = []
    sizes, rasters = [], []
    for pixels, _ in interlaced_levels(shape, n):
        seen.append(pixels)
        sizes.append(sum(len(p) for p in seen))
        rasters.append(_is_raster(np.concatenate(seen), shape[1]))
    # levels alternate: raster, quincunx (the raster plus its cells' centres), raster of twice the density...
    assert rasters == [i % 2 == 0 for i in range(len(sizes))]
    assert sizes[-1] == 13110                                 # 114 x 115, the raster of about n pixels
    for coarse, finer in zip(sizes[-5::2], sizes[-3::2]):
        assert 3.8 < finer / coarse < 4.2                    # ... at n / 4, n / 16, ...
    assert 1.9 < sizes[-1] / sizes[-2] < 2.1                 # and a quincunx at about n / 2


def test_within_a_level_pixels_are_spread_out():
    shape, n = (128, 128), 4096
    *_, (finest, spacing) = interlaced_levels(shape, n)
    first = finest[: len(finest) // 4]                       # a quarter of the last level
    y, x = np.divmod(first, shape[1])
    # it reaches every part of the field: each 32x32 tile holds a share of it
    counts = np.histogram2d(y, x, bins=4, range=[[0, 128], [0, 128]])[0]
    assert counts.min() >= 0.5 * counts.mean()
    assert spacing == pytest.approx(2.0)


def test_interlaced_pattern_prefix():
    full = interlaced_pattern((20, 30), 60)
    np.testing.assert_array_equal(interlaced_pattern((20, 30), 60, 7), full[:7])
    assert full.shape[1] == 2 and len(np.unique(full, axis=0)) == len(full)
    with pytest.raises(InputError):
        interlaced_pattern((20, 30), 0)


def test_fast_fill_follows_the_lattice_where_the_erd_has_nothing_to_say():
    """On pure noise the ERD ranks noise, the fill share goes to its maximum, and the scan ends close to the
    raster of its target coverage."""
    image = np.random.default_rng(1).random((64, 80))
    grid = ScanGrid(image.shape)
    sampler = make_sampler("fast", grid, coverage=0.15, seed=0)
    assert sampler.target_coverage == 0.15 and sampler.params()["target_coverage"] == 0.15
    simulate(sampler, image, [0.15], batch_size=25)
    rows, cols = lattice_axes(image.shape, round(0.15 * image.size))
    on = np.zeros(image.shape, dtype=bool)
    on[np.ix_(rows, cols)] = True
    assert sampler.fill_share > 0.8
    assert (sampler.measured & on).sum() > 0.9 * on.sum()


def test_erd_picks_move_onto_the_lattice_as_trust_in_the_erd_falls():
    grid = ScanGrid((40, 40))
    sampler = FastSampler(grid, seed=0, target_coverage=0.25)        # lattice rows and columns 1, 3, 5, ...
    rows, cols = lattice_axes(grid.shape, 400)
    assert rows.tolist() == cols.tolist() == list(range(1, 40, 2))
    picks = grid.ravel(np.array([[10, 10], [10, 11], [20, 20], [33, 8]]))
    sampler.fill_share = sampler.fill_floor                          # ERD trusted: picks stay put
    np.testing.assert_array_equal(sampler._snap(picks), picks)
    for share in (0.5, 1 - sampler.fill_floor):                     # not trusted: onto the nearest free site
        sampler.fill_share = share
        moved = grid.unravel(sampler._snap(picks))
        assert all(y % 2 == 1 and x % 2 == 1 for y, x in moved)
        assert len(np.unique(moved, axis=0)) == 4                   # no two picks on one site
        assert np.abs(moved - grid.unravel(picks)).max() <= 1
    sampler.fill_share = 0.4               # partly trusted: radius 7/9 of the half diagonal, 1.1 px
    partly = grid.unravel(sampler._snap(picks))
    np.testing.assert_array_equal(partly, [[10, 10], [9, 11], [20, 20], [33, 7]])   # only those 1 px away


def test_fast_initial_scan_choices():
    grid = ScanGrid((40, 50))
    lattice = FastSampler(grid, seed=0, target_coverage=0.2, initial_coverage=0.05)
    first = lattice.ask(grid.size)
    assert len(first) == 100
    np.testing.assert_array_equal(first, interlaced_pattern(grid.shape, 400, 100))
    halton = FastSampler(grid, seed=0, target_coverage=0.2, initial_coverage=0.05, initial="halton")
    assert len(halton.ask(grid.size)) == 100 and halton.params()["initial"] == "halton"
    for bad in ({"initial": "spiral"}, {"target_coverage": 0.0}, {"target_coverage": 1.5}):
        with pytest.raises(InputError):
            FastSampler(grid, **bad)
