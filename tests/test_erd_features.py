"""SLADS features against hand computation, exact incremental updates, and RD targets on toy images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastflow.erd.features import FeatureField, gradient_features, knn_features, normalise, value_range
from fastflow.erd.training import rd_targets, training_chunk
from fastflow.phantoms import flakes


def test_features_by_hand_on_a_tiny_grid():
    # 1 x 5 grid, measured at x=0 (value 0) and x=4 (value 8); k=2, density radius 1.5
    field = FeatureField((1, 5), k=2, density_radius=1.5)
    field.add(np.array([0, 4]), np.array([0.0, 8.0]))
    # pixel x=1: distances 1 and 3, weights (1, 1/9)/(10/9) = (0.9, 0.1) -> estimate 0.8
    assert field.recon[0, 1] == pytest.approx(0.8, rel=1e-5)          # tie-break offsets are < 1e-6 px
    assert field.recon[0, 2] == pytest.approx(4.0, rel=1e-5)             # midway: equal weights
    f = field.features[1].astype(np.float64)
    dev = np.array([0.8, 7.2])                                    # |v - x̂|
    assert f[0] == pytest.approx(0.9 * 0.8 + 0.1 * 7.2, rel=1e-5)  # weighted deviation
    assert f[1] == pytest.approx(math.sqrt((dev**2).sum()), rel=1e-5)
    assert f[2] == pytest.approx(1.0, rel=1e-5)                   # nearest distance
    assert f[3] == pytest.approx((1 + math.pi * 1.5**2) / (1 + 1), rel=1e-5)  # one neighbour within 1.5
    recon = field.recon.ravel()
    assert f[4] == pytest.approx(abs(recon[2] - recon[0]) / 2, rel=1e-5)       # central difference in x
    assert f[5] == 0.0                                                           # a single row: no y gradient


def test_knn_feature_doc_values():
    d = np.array([[1.0, 2.0]])
    v = np.array([[0.0, 3.0]])
    out = knn_features(d, v, np.array([0.6]), density_radius=1.5)
    np.testing.assert_allclose(out[0], [0.8 * 0.6 + 0.2 * 2.4, math.hypot(0.6, 2.4), 1.0,
                                        (1 + math.pi * 2.25) / 2])


def test_gradients_match_numpy():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(7, 9))
    gy, gx = np.gradient(image)
    got = gradient_features(image, np.arange(image.size))
    np.testing.assert_allclose(got[:, 0], np.abs(gx).ravel())
    np.testing.assert_allclose(got[:, 1], np.abs(gy).ravel())


@pytest.mark.parametrize("batch", [1, 17, 60])
def test_local_updates_equal_full_recomputation(batch):
    image = flakes((90, 70), seed=4) * 100
    rng = np.random.default_rng(batch)
    local = FeatureField(image.shape)
    start = rng.choice(image.size, 80, replace=False)
    local.add(start, image.ravel()[start])
    for _ in range(25):
        new = rng.choice(local.unmeasured(), batch, replace=False)
        changed = local.add(new, image.ravel()[new])
        assert not local.measured.ravel()[changed].any()
    full = FeatureField(image.shape)
    measured = np.flatnonzero(local.measured.ravel())
    full.add(measured, image.ravel()[measured], full=True)
    free = full.unmeasured()
    np.testing.assert_array_equal(local.recon, full.recon)          # bit for bit, ties included
    np.testing.assert_array_equal(local.dk, full.dk)
    np.testing.assert_array_equal(local.features[free], full.features[free])


def test_update_touches_only_the_neighbourhood():
    image = flakes((120, 120), seed=1) * 100
    field = FeatureField(image.shape)
    start = np.random.default_rng(0).choice(image.size, 1440, replace=False)   # 10 %
    field.add(start, image.ravel()[start])
    free = field.unmeasured()
    new = free[[len(free) // 2]]
    changed = field.add(new, image.ravel()[new])
    ys, xs = np.divmod(changed, 120)
    y0, x0 = divmod(int(new[0]), 120)
    assert 0 < len(changed) < 200                                     # a handful, not the whole grid
    assert np.hypot(ys - y0, xs - x0).max() <= field.dk.max() + 2


def test_value_scale():
    values = np.r_[np.zeros(500), np.full(500, 10.0), [1e6]]           # one hot pixel does not set the scale
    lo, hi = value_range(values)
    assert lo == 0.0 and hi == 10.0
    np.testing.assert_allclose(normalise([0.0, 5.0, 10.0], lo, hi), [0.0, 50.0, 100.0])
    assert value_range(np.ones(10))[1] > value_range(np.ones(10))[0]    # a constant image still has a scale


def test_rd_target_equals_a_window_sum():
    distortion = np.zeros((25, 25))
    distortion[12, 14] = 5.0
    distortion[2, 3] = 7.0         # far outside the 3-sigma window of the query pixel
    distortion[12, 9] = 1.0
    flat = np.array([12 * 25 + 12])
    for c, nearest in ((2.0, 4.0), (4.0, 6.0)):
        sigma = nearest / c
        yy, xx = np.mgrid[0:25, 0:25]
        window = np.exp(-((yy - 12) ** 2 + (xx - 12) ** 2) / (2 * sigma**2))
        r = int(3 * sigma + 0.5)
        window[(np.abs(yy - 12) > r) | (np.abs(xx - 12) > r)] = 0.0
        expected = (window * distortion).sum()
        assert rd_targets(distortion, np.array([nearest]), flat, c)[0] == pytest.approx(expected, rel=1e-9)


def test_rd_is_zero_on_a_flat_image_and_larger_near_edges():
    image = np.zeros((64, 64))
    image[:, 32:] = 1.0
    chunk = training_chunk(image, coverage=0.1, seed=3, c_values=(2.0,), rows=2000)
    x = chunk.features
    near_edge = x[:, 1] > 10        # large deviation among neighbours: the edge
    assert chunk.targets[~near_edge, 0].mean() < 0.2 * chunk.targets[near_edge, 0].mean()
    flat = training_chunk(np.full((32, 32), 3.0), coverage=0.1, seed=0, c_values=(2.0, 8.0), rows=500)
    assert np.all(flat.targets == 0)


def test_training_chunks_are_deterministic_and_share_masks_across_c():
    image = flakes((64, 48), seed=2)
    a = training_chunk(image, coverage=0.05, seed=9, c_values=(2.0, 8.0), rows=300)
    b = training_chunk(image, coverage=0.05, seed=9, c_values=(2.0, 8.0), rows=300)
    c = training_chunk(image, coverage=0.05, seed=10, c_values=(2.0, 8.0), rows=300)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.array_equal(a.features, c.features)
    assert np.all(a.targets[:, 0] >= a.targets[:, 1])   # the same masks: a wider window (smaller c) sums more
