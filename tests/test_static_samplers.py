"""Static scan patterns, StaticSampler and the sampler registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from scipy.stats import spearmanr

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.sampling import registry
from fastflow.sampling.registry import available_samplers, make_sampler, register_sampler
from fastflow.sampling.static import (
    STATIC_PATTERNS,
    StaticSampler,
    halton_pattern,
    line_skip_pattern,
    lissajous_pattern,
    raster_grid_pattern,
    sobol_pattern,
    spiral_pattern,
    uniform_random_pattern,
)

SHAPES = [(40, 56), (64, 64), (33, 70)]
COVERAGES = [0.01, 0.05, 0.2, 0.5, 1.0]
NAMES = list(STATIC_PATTERNS)
SEEDED = [name for name, (_, _, uses_seed) in STATIC_PATTERNS.items() if uses_seed]


def pattern(name: str, shape: tuple[int, int], n: int, seed: int | None = 0) -> np.ndarray:
    function, _, uses_seed = STATIC_PATTERNS[name]
    return function(shape, n, seed=seed) if uses_seed else function(shape, n)


def flat(indices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return indices[:, 0] * shape[1] + indices[:, 1]


def row_runs(indices: np.ndarray) -> list[np.ndarray]:
    """Split a sequence into runs of consecutive points on the same row."""
    breaks = np.flatnonzero(np.diff(indices[:, 0]) != 0) + 1
    return np.split(indices, breaks)


# -- every pattern -----------------------------------------------------------------------------------


def test_registry_of_patterns_is_complete():
    assert set(NAMES) == {"raster", "random", "halton", "sobol", "spiral", "lissajous", "lines"}
    assert set(SEEDED) == {"random", "halton", "sobol"}
    for function, description, _ in STATIC_PATTERNS.values():
        assert callable(function) and isinstance(description, str) and description


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", COVERAGES)
@pytest.mark.parametrize("name", NAMES)
def test_exact_distinct_in_grid(name, shape, coverage):
    n = max(1, round(coverage * shape[0] * shape[1]))
    idx = pattern(name, shape, n)
    assert idx.shape == (n, 2) and idx.dtype == np.int64
    assert idx.min() >= 0 and (idx[:, 0] < shape[0]).all() and (idx[:, 1] < shape[1]).all()
    assert len(np.unique(flat(idx, shape))) == n


@pytest.mark.parametrize("name", NAMES)
def test_single_point_and_full_grid(name):
    shape = (9, 13)
    assert pattern(name, shape, 1).shape == (1, 2)
    full = pattern(name, shape, 9 * 13)
    assert np.array_equal(np.sort(flat(full, shape)), np.arange(9 * 13))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, -3, 64 * 64 + 1, 2.5, True])
def test_invalid_count_raises(name, n):
    with pytest.raises(InputError):
        pattern(name, (64, 64), n)


@pytest.mark.parametrize("shape", [(0, 5), (5,), "ab", (3, -1)])
def test_invalid_shape_raises(shape):
    with pytest.raises(InputError):
        raster_grid_pattern(shape, 1)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    assert np.array_equal(pattern(name, (33, 70), 300, seed=7), pattern(name, (33, 70), 300, seed=7))


@pytest.mark.parametrize("name", SEEDED)
def test_seed_changes_sequence(name):
    a, b = pattern(name, (40, 56), 200, seed=1), pattern(name, (40, 56), 200, seed=2)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", SEEDED)
def test_generator_seed_matches_int_seed(name):
    a = pattern(name, (40, 56), 150, seed=np.random.default_rng(11))
    assert np.array_equal(a, pattern(name, (40, 56), 150, seed=11))


def test_bad_seed_raises():
    with pytest.raises(InputError):
        uniform_random_pattern((10, 10), 5, seed=-1)
    with pytest.raises(InputError):
        halton_pattern((10, 10), 5, seed="abc")


@pytest.mark.parametrize("name", ["random", "halton", "sobol", "spiral", "lissajous"])
def test_spread_over_the_field(name):
    """At 5% every quadrant gets about a quarter of the points (spiral/Lissajous: uniform density)."""
    shape, n = (64, 64), 205
    idx = pattern(name, shape, n, seed=3)
    quadrant = (idx[:, 0] >= 32) * 2 + (idx[:, 1] >= 32)
    counts = np.bincount(quadrant, minlength=4)
    assert counts.min() >= 0.75 * n / 4 and counts.max() <= 1.25 * n / 4


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", [0.01, 0.05, 0.2])
@pytest.mark.parametrize(("name", "bound"), [("raster", 0.9), ("spiral", 1.5), ("lissajous", 1.6)])
def test_no_large_holes(name, bound, shape, coverage):
    """No pixel is farther than ``bound / sqrt(coverage)`` from a sample (a retracing Lissajous gets ~2)."""
    idx = pattern(name, shape, round(coverage * shape[0] * shape[1]))
    unsampled = np.ones(shape, dtype=bool)
    unsampled[idx[:, 0], idx[:, 1]] = False
    assert distance_transform_edt(unsampled).max() <= bound / math.sqrt(coverage)


# -- order and structure of each pattern -------------------------------------------------------------


def assert_serpentine(idx: np.ndarray, nx: int) -> list[np.ndarray]:
    runs = row_runs(idx)
    rows = [int(run[0, 0]) for run in runs]
    assert rows == sorted(set(rows)), "each row is visited once, top to bottom"
    for i, run in enumerate(runs):
        steps = np.diff(run[:, 1])
        if len(steps):
            assert (steps > 0).all() if i % 2 == 0 else (steps < 0).all(), f"row {i} runs the wrong way"
    return runs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", [0.01, 0.05, 0.2, 0.5])
def test_raster_is_a_serpentine_sub_grid(shape, coverage):
    ny, nx = shape
    n = round(coverage * ny * nx)
    idx = raster_grid_pattern(shape, n)
    runs = assert_serpentine(idx, nx)
    counts = [len(run) for run in runs]
    assert max(counts) - min(counts) <= 1
    rows = np.array([run[0, 0] for run in runs])
    if len(rows) > 1:
        gaps = np.diff(rows)
        assert gaps.max() - gaps.min() <= 1, "rows evenly spaced"
        # about the same spacing along y and x
        assert 0.5 < (ny / len(rows)) / (nx / np.mean(counts)) < 2
    for run in runs:
        gaps = np.diff(np.sort(run[:, 1]))
        if len(gaps):
            assert gaps.max() - gaps.min() <= 1, "columns evenly spaced"


def test_raster_small_example():
    assert raster_grid_pattern((4, 4), 4).tolist() == [[1, 1], [1, 3], [3, 3], [3, 1]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", [0.01, 0.2, 0.5])
def test_lines_are_full_evenly_spaced_rows(shape, coverage):
    ny, nx = shape
    n = round(coverage * ny * nx)
    idx = line_skip_pattern(shape, n)
    runs = assert_serpentine(idx, nx)
    assert len(runs) == math.ceil(n / nx)
    assert all(len(run) == nx for run in runs[:-1])
    rows = np.array([run[0, 0] for run in runs])
    if len(rows) > 1:
        gaps = np.diff(rows)
        assert gaps.max() - gaps.min() <= 1
        assert rows[0] + (ny - 1 - rows[-1]) <= gaps.max() + 1, "rows centred in the field"


def test_lines_example():
    assert line_skip_pattern((4, 3), 5).tolist() == [[1, 0], [1, 1], [1, 2], [3, 2], [3, 1]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", [0.01, 0.05, 0.2, 0.5])
def test_spiral_runs_outward_from_the_centre(shape, coverage):
    n = round(coverage * shape[0] * shape[1])
    idx = spiral_pattern(shape, n)
    centre = (np.array(shape) - 1) / 2
    radius = np.hypot(*(idx - centre).T)
    assert spearmanr(np.arange(n), radius).statistic > 0.9
    quarter = max(1, n // 4)
    assert radius[:quarter].mean() < radius[-quarter:].mean()
    if coverage >= 0.05:
        assert radius[0] <= 1.0, "starts at the centre"


def test_spiral_spacing_follows_coverage():
    """Consecutive points are about 1/sqrt(coverage) apart, as are the arms."""
    shape = (64, 64)
    for coverage in (0.05, 0.2):
        idx = spiral_pattern(shape, round(coverage * 64 * 64))
        steps = np.hypot(*np.diff(idx, axis=0).T)
        assert abs(np.median(steps) - 1 / math.sqrt(coverage)) < 0.35 / math.sqrt(coverage)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("coverage", [0.05, 0.2])
def test_lissajous_moves_in_small_steps(shape, coverage):
    n = round(coverage * shape[0] * shape[1])
    idx = lissajous_pattern(shape, n)
    steps = np.hypot(*np.diff(idx, axis=0).T)
    shuffled = np.random.default_rng(0).permutation(idx)
    random_steps = np.hypot(*np.diff(shuffled, axis=0).T)
    assert np.mean(steps) < 0.3 * np.mean(random_steps)
    assert np.median(steps) < 2 / math.sqrt(coverage)


def test_lissajous_reaches_all_edges():
    idx = lissajous_pattern((40, 56), 112)
    assert idx[:, 0].min() == 0 and idx[:, 0].max() == 39
    assert idx[:, 1].min() == 0 and idx[:, 1].max() == 55


@pytest.mark.parametrize("name", ["halton", "sobol"])
def test_low_discrepancy_prefix_covers_quadrants(name):
    shape = (40, 56)
    idx = pattern(name, shape, 448, seed=5)
    first = idx[: len(idx) // 4]
    quadrants = set((first[:, 0] >= 20) * 2 + (first[:, 1] >= 28))
    assert quadrants == {0, 1, 2, 3}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sobol_and_halton_prefixes_are_stratified(seed):
    """Scrambled nets: the first b1^k1 * b2^k2 points fill every elementary box exactly once."""
    sobol = sobol_pattern((64, 64), 500, seed=seed)[:16]
    assert len(set((sobol[:, 0] // 16) * 4 + sobol[:, 1] // 16)) == 16
    halton = halton_pattern((64, 63), 500, seed=seed)[:36]  # 4 bands in y (base 2) x 9 in x (base 3)
    assert len(set((halton[:, 0] // 16) * 9 + halton[:, 1] // 7)) == 36


@pytest.mark.parametrize("name", ["halton", "sobol"])
def test_low_discrepancy_sequences_are_progressive(name):
    """A shorter scan is a prefix of a longer one: the order does not depend on where the scan stops."""
    assert np.array_equal(pattern(name, (33, 70), 100, seed=4), pattern(name, (33, 70), 900, seed=4)[:100])


def test_random_prefix_is_uniform():
    shape = (64, 64)
    idx = uniform_random_pattern(shape, 2000, seed=9)[:400]
    counts = np.bincount((idx[:, 0] >= 32) * 2 + (idx[:, 1] >= 32), minlength=4)
    assert counts.min() > 70 and counts.max() < 130


# -- StaticSampler -----------------------------------------------------------------------------------


def drain(sampler: StaticSampler, batch: int) -> list[np.ndarray]:
    batches = []
    while not sampler.done:
        idx = sampler.ask(batch)
        assert len(idx) > 0
        sampler.tell(idx, np.zeros(len(idx)))
        batches.append(idx)
    return batches


@pytest.mark.parametrize("name", NAMES)
def test_sampler_batches_concatenate_to_the_pattern(name):
    grid = ScanGrid((33, 70))
    sampler = StaticSampler(grid, name, coverage=0.05, seed=3)
    expected = pattern(name, grid.shape, round(0.05 * grid.size), seed=3)
    batches = drain(sampler, 17)
    assert np.array_equal(np.concatenate(batches), expected)
    assert all(len(b) == 17 for b in batches[:-1])
    assert sampler.done and len(sampler.ask(5)) == 0
    assert sampler.n_measured == len(expected)
    assert sampler.last_record["sampler"] == name


@pytest.mark.parametrize("coverage", COVERAGES)
def test_every_sampler_has_the_same_number_of_points(coverage):
    grid = ScanGrid((40, 56))
    n = max(1, round(coverage * grid.size))
    for name in NAMES:
        sampler = StaticSampler(grid, name, coverage=coverage, seed=0)
        assert sampler.n_points == n and len(sampler.sequence) == n


def test_ask_skips_pending_and_measured_points():
    grid = ScanGrid((40, 56))
    sampler = StaticSampler(grid, "halton", coverage=0.1, seed=1)
    seq = grid.unravel(sampler.sequence)
    first = sampler.ask(10)
    second = sampler.ask(10)  # first batch still pending
    assert np.array_equal(first, seq[:10]) and np.array_equal(second, seq[10:20])
    sampler.tell(seq[25:30], np.ones(5))  # measured out of order (e.g. a stage landing elsewhere)
    third = sampler.ask(10)
    assert np.array_equal(third, np.concatenate([seq[20:25], seq[30:35]]))
    assert sampler.last_record["pattern"] == "halton" and sampler.last_record["cursor"] == 35


def test_resume_continues_the_same_sequence():
    grid = ScanGrid((64, 64))
    first = StaticSampler(grid, "spiral", coverage=0.2)
    done_part = np.concatenate([first.ask(50) for _ in range(3)])
    resumed = StaticSampler(grid, "spiral", coverage=0.2)
    resumed.tell(done_part, np.zeros(len(done_part)))
    rest = np.concatenate(drain(resumed, 64))
    assert np.array_equal(np.concatenate([done_part, rest]), grid.unravel(first.sequence))
    assert resumed.done


def test_done_when_the_sequence_was_measured_elsewhere():
    grid = ScanGrid((20, 20))
    sampler = StaticSampler(grid, "random", coverage=0.25, seed=2)
    sampler.tell(grid.unravel(sampler.sequence), np.zeros(100))
    assert sampler.done and len(sampler.ask(3)) == 0


def test_done_at_full_coverage():
    grid = ScanGrid((12, 9))
    sampler = StaticSampler(grid, "lissajous", coverage=1.0)
    batches = drain(sampler, 25)
    assert sum(map(len, batches)) == grid.size and sampler.remaining == 0


@pytest.mark.parametrize("coverage", [0, -0.1, 1.5, float("nan"), float("inf"), "half", "1.5", None, True])
def test_invalid_coverage_raises(coverage):
    with pytest.raises(InputError, match="coverage"):
        StaticSampler(ScanGrid((10, 10)), "raster", coverage=coverage)


def test_invalid_coverage_message_names_the_value():
    with pytest.raises(InputError, match="1.5"):
        StaticSampler(ScanGrid((10, 10)), "raster", coverage=1.5)


@pytest.mark.parametrize("batch", [0, -1, 2.5, True, "3"])
def test_bad_batch_size_raises(batch):
    sampler = StaticSampler(ScanGrid((10, 10)), "raster", coverage=0.5)
    with pytest.raises(InputError):
        sampler.ask(batch)


def test_unknown_pattern_and_bad_grid_raise():
    with pytest.raises(InputError, match="raster"):
        StaticSampler(ScanGrid((10, 10)), "zigzag", coverage=0.5)
    with pytest.raises(InputError):
        StaticSampler((10, 10), "raster", coverage=0.5)
    with pytest.raises(InputError):
        StaticSampler(ScanGrid((10, 10)), "spiral", coverage=0.5, seed=-5)


def test_params():
    grid = ScanGrid((40, 56))
    params = StaticSampler(grid, "sobol", coverage=0.2, seed=np.int64(5)).params()
    assert params == {"name": "sobol", "coverage": 0.2, "seed": 5, "n_points": 448}
    assert type(params["seed"]) is int
    assert StaticSampler(grid, "random", coverage=0.2, seed=np.random.default_rng(1)).params()["seed"] is None
    assert StaticSampler(grid, "raster", coverage=0.2).params()["seed"] is None


# -- registry ----------------------------------------------------------------------------------------


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_available_samplers_lists_the_static_patterns():
    available = available_samplers()
    assert set(NAMES) <= set(available)
    assert all(isinstance(d, str) and d for d in available.values())


@pytest.mark.parametrize("name", NAMES)
def test_make_sampler_builds_the_pattern(name):
    grid = ScanGrid((33, 70))
    sampler = make_sampler(name, grid, coverage=0.1, seed=4)
    assert isinstance(sampler, StaticSampler) and sampler.name == name
    assert np.array_equal(sampler.ask(1000), pattern(name, grid.shape, 231, seed=4))


def test_make_sampler_is_case_insensitive():
    assert make_sampler(" Sobol ", ScanGrid((8, 8)), coverage=0.5).name == "sobol"


@pytest.mark.parametrize("name", ["xyz", "", 3, None])
def test_unknown_sampler_lists_the_available_ones(name):
    with pytest.raises(InputError, match="unknown sampler") as err:
        make_sampler(name, ScanGrid((8, 8)), coverage=0.5)
    assert all(n in str(err.value) for n in NAMES)


def test_static_samplers_reject_options():
    with pytest.raises(InputError, match="options"):
        make_sampler("raster", ScanGrid((8, 8)), coverage=0.5, batch_route="tsp")


def test_make_sampler_validates_coverage():
    with pytest.raises(InputError):
        make_sampler("random", ScanGrid((8, 8)), coverage=0.0)


def test_register_a_new_sampler(clean_registry):
    made = {}

    def factory(grid, *, coverage, seed=None, **options):
        made.update(coverage=coverage, seed=seed, **options)
        return StaticSampler(grid, "raster", coverage=coverage)

    register_sampler("experimental", factory, "adaptive sampler")
    assert available_samplers()["experimental"] == "adaptive sampler"
    sampler = make_sampler("experimental", ScanGrid((8, 8)), coverage=0.25, seed=3, model="erd.npz")
    assert sampler.n_points == 16 and made == {"coverage": 0.25, "seed": 3, "model": "erd.npz"}
    with pytest.raises(InputError, match="already registered"):
        register_sampler("experimental", factory, "again")
    register_sampler("experimental", factory, "replaced", replace=True)
    assert available_samplers()["experimental"] == "replaced"


def test_register_a_lazy_sampler(clean_registry):
    register_sampler("lazy", "fastflow.sampling.static:StaticSampler", "imported on use")
    sampler = make_sampler("lazy", ScanGrid((8, 8)), coverage=0.5, pattern="lines")
    assert isinstance(sampler, StaticSampler) and sampler.name == "lines"


@pytest.mark.parametrize(
    ("name", "factory"), [("Bad Name", lambda g, **k: None), ("ok", 42), ("ok", "no_colon_here")]
)
def test_register_rejects_bad_entries(clean_registry, name, factory):
    with pytest.raises(InputError):
        register_sampler(name, factory, "x")
