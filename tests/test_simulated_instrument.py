"""Tests of the simulated instrument: values, noise statistics, timing model, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.instruments import Instrument, Measurement, SimulatedInstrument, format_noise, parse_noise


def all_indices(shape: tuple[int, int]) -> np.ndarray:
    return np.argwhere(np.ones(shape, dtype=bool))


# --------------------------------------------------------------------------------------------- values


def test_implements_protocol():
    assert isinstance(SimulatedInstrument(np.ones((3, 3))), Instrument)


def test_exact_values_and_positions_without_noise():
    image = np.arange(12.0).reshape(3, 4)
    grid = ScanGrid((3, 4), pixel_size=(0.5, 2.0), origin=(10.0, 20.0), units="um")
    inst = SimulatedInstrument(image, grid, noise="none")
    idx = np.array([[2, 3], [0, 0], [1, 2], [1, 2]])
    m = inst.measure(idx)
    assert isinstance(m, Measurement) and len(m) == 4
    assert m.values.shape == (4, 1) and m.values.dtype == np.float64
    np.testing.assert_array_equal(m.values[:, 0], image[idx[:, 0], idx[:, 1]])
    np.testing.assert_allclose(m.positions, [[11.0, 26.0], [10.0, 20.0], [10.5, 24.0], [10.5, 24.0]])
    assert inst.channels == ("value",) and inst.n_points == 4


def test_channel_name_and_image_are_exposed():
    image = np.random.default_rng(0).random((4, 4))
    inst = SimulatedInstrument(image, channel="haadf")
    assert inst.channels == ("haadf",)
    np.testing.assert_array_equal(inst.image, image)
    with pytest.raises(ValueError):
        inst.image[0, 0] = 1.0  # the ground truth is read-only


def test_image_is_validated():
    with pytest.raises(InputError, match="sample image"):
        SimulatedInstrument(np.zeros((4, 4, 3)))


# --------------------------------------------------------------------------------------------- noise


def test_poisson_noise_statistics_on_constant_image():
    peak, level = 50.0, 0.5
    inst = SimulatedInstrument(np.full((200, 200), level), noise=f"poisson:{peak}", seed=1)
    values = inst.measure(all_indices((200, 200))).values[:, 0]
    counts = values * peak / level
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # values are rescaled integer counts
    n = values.size
    expected_var = level**2 / peak  # Var(counts) = peak, scaled by (level / peak)**2
    assert abs(values.mean() - level) < 5 * math.sqrt(expected_var / n)
    assert values.var(ddof=1) == pytest.approx(expected_var, rel=5 * math.sqrt(2 / n) + 0.01)


def test_poisson_noise_scales_to_image_maximum():
    image = np.linspace(0.0, 4.0, 400).reshape(20, 20)
    inst = SimulatedInstrument(image, noise="poisson:10", seed=2)
    values = inst.measure(all_indices(image.shape)).values[:, 0]
    counts = values * 10 / 4.0
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    assert values[0] == 0.0  # zero signal gives zero counts


def test_poisson_noise_on_all_zero_image_is_zero():
    inst = SimulatedInstrument(np.zeros((3, 3)), noise="poisson:100", seed=0)
    assert np.all(inst.measure(all_indices((3, 3))).values == 0)


def test_poisson_noise_rejects_negative_image():
    with pytest.raises(InputError, match="non-negative"):
        SimulatedInstrument(np.array([[0.0, -1.0], [1.0, 2.0]]), noise="poisson:100")


def test_gaussian_noise_std_is_relative_to_value_range():
    image = np.tile(np.linspace(-1.0, 1.0, 200), (200, 1))  # value range 2
    inst = SimulatedInstrument(image, noise="gaussian:0.05", seed=3)
    idx = all_indices(image.shape)
    residual = inst.measure(idx).values[:, 0] - image[idx[:, 0], idx[:, 1]]
    assert abs(residual.mean()) < 5 * 0.1 / math.sqrt(residual.size)
    assert residual.std() == pytest.approx(0.1, rel=0.03)


def test_gaussian_noise_on_constant_image_uses_sigma():
    inst = SimulatedInstrument(np.full((100, 100), 7.0), noise="gaussian:0.2", seed=4)
    values = inst.measure(all_indices((100, 100))).values[:, 0]
    assert values.std() == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("noise", ["poisson:20", "gaussian:0.1"])
def test_same_seed_same_noise(noise):
    image = np.random.default_rng(9).random((30, 30))
    idx = all_indices(image.shape)
    a = SimulatedInstrument(image, noise=noise, seed=7).measure(idx).values
    b = SimulatedInstrument(image, noise=noise, seed=7).measure(idx).values
    c = SimulatedInstrument(image, noise=noise, seed=8).measure(idx).values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unseeded_run_records_a_reproducible_seed():
    image = np.random.default_rng(9).random((10, 10))
    idx = all_indices(image.shape)
    first = SimulatedInstrument(image, noise="gaussian:0.1")
    seed = first.describe()["seed"]
    assert isinstance(seed, int)
    again = SimulatedInstrument(image, noise="gaussian:0.1", seed=seed)
    np.testing.assert_array_equal(first.measure(idx).values, again.measure(idx).values)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        ("none", None),
        ("  NONE ", None),
        ("", None),
        ("poisson:100", ("poisson", 100.0)),
        ("Poisson: 2.5", ("poisson", 2.5)),
        ("gaussian:0.05", ("gaussian", 0.05)),
        ("gaussian:0", ("gaussian", 0.0)),
        (("poisson", 30), ("poisson", 30.0)),
    ],
)
def test_parse_noise(spec, expected):
    assert parse_noise(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["poisson", "poisson:", "poisson:0", "poisson:-5", "poisson:abc", "poisson:inf", "poisson:nan",
     "gaussian:-0.1", "gaussian:inf", "uniform:1", "speckle", 5, ("poisson", "x"), ["poisson", 3]],
)
def test_parse_noise_rejects(spec):
    with pytest.raises(InputError, match="noise"):
        parse_noise(spec)


def test_format_noise_round_trip():
    for spec in ["poisson:100", "gaussian:0.05", "poisson:2.5"]:
        assert format_noise(parse_noise(spec)) == spec
    assert format_noise(None) is None


def test_bad_noise_in_constructor():
    with pytest.raises(InputError, match="unknown noise kind"):
        SimulatedInstrument(np.ones((3, 3)), noise="salt:0.1")


# --------------------------------------------------------------------------------------------- timing


def test_timing_matches_hand_computation():
    grid = ScanGrid((4, 5), pixel_size=(1.0, 2.0))
    inst = SimulatedInstrument(np.zeros((4, 5)), grid, dwell=0.1, speed=4.0, settle=0.5)
    m = inst.measure([[0, 0], [0, 3], [2, 3], [3, 0]])
    # start at (0, 0): no move -> dwell only
    # (0, 0) -> (0, 6): max(0, 6) / 4 = 1.5, + settle 0.5 + dwell 0.1 = 2.1
    # (0, 6) -> (2, 6): 2 / 4 = 0.5, + 0.6 = 1.1
    # (2, 6) -> (3, 0): max(1, 6) / 4 = 1.5, + 0.6 = 2.1
    np.testing.assert_allclose(m.times, [0.1, 2.2, 3.3, 5.4])
    assert inst.elapsed == pytest.approx(5.4)
    assert inst.path_length == pytest.approx(6 + 2 + math.sqrt(37))
    np.testing.assert_allclose(inst.position, [3.0, 0.0])
    # a second batch continues from where the stage stopped; staying put costs only the dwell
    m2 = inst.measure([[3, 0], [3, 1]])
    np.testing.assert_allclose(m2.times, [5.5, 5.5 + 0.5 + 0.5 + 0.1])
    assert inst.path_length == pytest.approx(6 + 2 + math.sqrt(37) + 2)


def test_explicit_start_position():
    inst = SimulatedInstrument(np.zeros((3, 3)), start=(2.0, -2.0), dwell=0.0, settle=0.0, speed=1.0)
    m = inst.measure([[0, 0]])
    np.testing.assert_allclose(m.times, [2.0])
    assert inst.path_length == pytest.approx(math.sqrt(8))
    assert inst.describe()["start"] == [2.0, -2.0]


def test_default_start_is_first_pixel_centre():
    grid = ScanGrid((3, 3), origin=(5.0, 7.0))
    inst = SimulatedInstrument(np.zeros((3, 3)), grid)
    np.testing.assert_allclose(inst.position, [5.0, 7.0])


@pytest.mark.parametrize("empty", [[], np.empty((0, 2), dtype=int), np.empty((0, 2))])
def test_empty_batch(empty):
    inst = SimulatedInstrument(np.ones((3, 3)))
    inst.measure([[1, 1]])
    before = (inst.elapsed, inst.path_length, inst.n_points)
    m = inst.measure(empty)
    assert len(m) == 0
    assert m.values.shape == (0, 1) and m.positions.shape == (0, 2) and m.times.shape == (0,)
    assert (inst.elapsed, inst.path_length, inst.n_points) == before


def test_out_of_grid_raises_and_changes_nothing():
    image = np.random.default_rng(0).random((4, 4))
    inst = SimulatedInstrument(image, noise="gaussian:0.1", seed=5)
    twin = SimulatedInstrument(image, noise="gaussian:0.1", seed=5)
    inst.measure([[1, 1]])
    twin.measure([[1, 1]])
    state = (inst.elapsed, inst.path_length, inst.n_points, tuple(inst.position))
    for bad in ([[0, 0], [4, 0]], [[-1, 2]], [[0.5, 1]], [[1, 2, 3]]):
        with pytest.raises(InputError):
            inst.measure(bad)
    assert (inst.elapsed, inst.path_length, inst.n_points, tuple(inst.position)) == state
    # the noise stream did not advance either
    np.testing.assert_array_equal(inst.measure([[2, 2]]).values, twin.measure([[2, 2]]).values)


# --------------------------------------------------------------------------------------------- validation


def test_mismatched_grid_raises():
    with pytest.raises(InputError, match="does not match"):
        SimulatedInstrument(np.zeros((4, 5)), ScanGrid((5, 4)))


def test_grid_must_be_scangrid():
    with pytest.raises(InputError, match="ScanGrid"):
        SimulatedInstrument(np.zeros((4, 5)), (4, 5))


@pytest.mark.parametrize(
    "kwargs",
    [{"dwell": -1}, {"dwell": np.nan}, {"speed": 0}, {"speed": -2}, {"speed": np.inf}, {"settle": -0.1},
     {"settle": "x"}, {"start": (1.0,)}, {"start": (np.nan, 0)}, {"start": "here"}, {"channel": ""},
     {"seed": -1}, {"seed": 1.5}],
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(InputError):
        SimulatedInstrument(np.zeros((3, 3)), **kwargs)


def test_describe_is_json_ready():
    grid = ScanGrid((3, 4), pixel_size=(1.5, 1.5), units="um")
    inst = SimulatedInstrument(np.ones((3, 4)), grid, noise="poisson:100", dwell=0.02, speed=50.0,
                               settle=0.001, seed=42)
    d = json.loads(json.dumps(inst.describe()))
    assert d["kind"] == "simulated"
    assert d["noise"] == "poisson:100"
    assert (d["dwell"], d["speed"], d["settle"], d["seed"]) == (0.02, 50.0, 0.001, 42)
    assert d["shape"] == [3, 4]
    assert d["channels"] == ["value"]
    assert ScanGrid.from_attrs(d["grid"]) == grid
    assert SimulatedInstrument(np.ones((3, 3))).describe()["noise"] is None


def test_measurement_validates_shapes():
    with pytest.raises(InputError):
        Measurement(np.zeros((3, 1)), np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(InputError):
        Measurement(np.zeros(3), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(InputError):
        Measurement(np.zeros((3, 1)), np.zeros((3, 2)), np.zeros(4))
    assert len(Measurement.empty(2)) == 0 and Measurement.empty(2).values.shape == (0, 2)
