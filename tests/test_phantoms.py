"""Tests of fastflow.phantoms: determinism, value ranges and the property each phantom is meant to have."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fastflow import phantoms
from fastflow.errors import InputError

ALL = [phantoms.flakes, phantoms.grains, phantoms.particles, phantoms.lattice]
IDS = [f.__name__ for f in ALL]


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_deterministic_per_seed(make):
    np.testing.assert_array_equal(make(seed=5), make(seed=5))


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_different_across_seeds(make):
    a, b = make(seed=0), make(seed=1)
    assert np.abs(a - b).mean() > 0.01


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_generator_seed_is_accepted(make):
    a = make(seed=np.random.default_rng(3))
    b = make(seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_float64_in_unit_range(make):
    image = make()
    assert image.dtype == np.float64 and image.ndim == 2
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.max() - image.min() > 0.5


@pytest.mark.parametrize("make", ALL, ids=IDS)
@pytest.mark.parametrize("shape", [(64, 96), (33, 17), (2, 2)])
def test_custom_shape(make, shape):
    image = make(shape=shape, seed=2)
    assert image.shape == shape
    assert np.isfinite(image).all()


@pytest.mark.parametrize("make", ALL, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 10), (10,), (3, 4, 5), "ab", None])
def test_bad_shape_raises(make, shape):
    with pytest.raises(InputError, match="shape"):
        make(shape=shape)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_fast_at_default_size(make):
    make(seed=11)  # warm-up (imports, caches)
    start = time.perf_counter()
    make(seed=12)
    assert time.perf_counter() - start < 1.0  # target 0.5 s; slack for loaded machines


# --------------------------------------------------------------------------------------------- flakes


def test_flakes_default_shape_is_fast_test_image():
    assert phantoms.flakes().shape == (600, 400)


@pytest.mark.parametrize("seed", range(6))
def test_flakes_are_sparse_on_a_dark_background(seed):
    image = phantoms.flakes(seed=seed)
    flake_fraction = (image > 0.25).mean()
    assert 0.10 <= flake_fraction <= 0.25
    assert np.median(image) < 0.08  # most of the field is dark substrate


@pytest.mark.parametrize("seed", range(6))
def test_flakes_are_bimodal_with_sharp_edges(seed):
    image = phantoms.flakes(seed=seed)
    in_between = ((image > 0.15) & (image < 0.35)).mean()  # only blurred edge pixels fall here
    assert in_between < 0.02


@pytest.mark.parametrize("seed", range(6))
def test_flakes_have_discrete_thickness_levels(seed):
    image = phantoms.flakes(seed=seed)
    levels = 0.95 * (1 - np.exp(-np.arange(1, 4) / 1.5))
    populated = [np.mean(np.abs(image - level) < 0.06) > 0.005 for level in levels]
    assert sum(populated) >= 2


# --------------------------------------------------------------------------------------------- others


def test_grains_fill_the_field_with_dark_boundaries():
    image = phantoms.grains(seed=0)
    assert (image > 0.2).mean() > 0.9  # space-filling, no background
    grain_levels = np.percentile(image, 50)
    assert np.percentile(image, 1) < 0.5 * grain_levels  # thin dark boundaries exist


def test_grain_size_sets_number_of_grains():
    coarse = phantoms.grains(seed=0, grain_size=64)
    fine = phantoms.grains(seed=0, grain_size=16)
    edges = [np.mean(np.abs(np.diff(im, axis=1)) > 0.1) for im in (coarse, fine)]
    assert edges[1] > 2 * edges[0]


def test_particles_are_sparse():
    for seed in range(3):
        image = phantoms.particles(seed=seed)
        assert 0.01 < (image > 0.2).mean() < 0.3
        assert np.median(image) < 0.1


@pytest.mark.parametrize("spacing", [5.0, 6.0, 8.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_lattice_power_spectrum_peaks_at_one_over_spacing(spacing, seed):
    image = phantoms.lattice(spacing=spacing, seed=seed)
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    peak = np.hypot(ky, kx).ravel()[np.argmax(power)]
    assert peak == pytest.approx(1 / spacing, rel=0.05)


def test_lattice_is_dense():
    image = phantoms.lattice(seed=0)
    blocks = image.reshape(16, 16, 16, 16).std(axis=(1, 3))  # 16x16 px tiles
    assert (blocks > 0.1).mean() > 0.95  # detail everywhere, unlike flakes


def test_lattice_noise():
    clean = phantoms.lattice(seed=4)
    noisy = phantoms.lattice(seed=4, noise=0.02)
    diff = (noisy - clean)[(clean > 0.1) & (clean < 0.9)]  # away from the clipping limits
    assert diff.std() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"spacing": 1.0}, "spacing"), ({"spacing": np.nan}, "spacing"), ({"noise": -0.1}, "noise"),
     ({"spacing": "x"}, "spacing")],
)
def test_lattice_bad_parameters(kwargs, fragment):
    with pytest.raises(InputError, match=fragment):
        phantoms.lattice(**kwargs)
