"""Tests of fastflow.metrics against hand-computed values and scikit-image with explicit settings."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from skimage.metrics import structural_similarity

import fastflow.metrics
from fastflow.errors import InputError
from fastflow.metrics import default_data_range, evaluate, nrmse, psnr, ssim

RNG = np.random.default_rng(0)
YY, XX = np.mgrid[0:32, 0:40] / 31
TRUTH = XX * YY  # range [0, 40/31]
ESTIMATE = TRUTH + 0.05 * RNG.standard_normal(TRUTH.shape)


def test_docstring_examples() -> None:
    result = doctest.testmod(fastflow.metrics)
    assert result.attempted > 0 and result.failed == 0


def test_nrmse_by_hand() -> None:
    truth = np.array([[1.0, 2.0], [3.0, 4.0]])
    estimate = np.array([[1.0, 2.5], [2.0, 4.0]])
    expected = np.sqrt(0.5**2 + 1.0**2) / np.sqrt(1 + 4 + 9 + 16)
    assert nrmse(truth, estimate) == pytest.approx(expected, rel=1e-12)
    assert nrmse(TRUTH, ESTIMATE) == pytest.approx(
        np.sqrt(np.sum((TRUTH - ESTIMATE) ** 2)) / np.sqrt(np.sum(TRUTH**2)), rel=1e-12
    )


def test_nrmse_scale_invariant_and_zero_for_perfect() -> None:
    assert nrmse(TRUTH, TRUTH) == 0.0
    assert nrmse(7 * TRUTH, 7 * ESTIMATE) == pytest.approx(nrmse(TRUTH, ESTIMATE), rel=1e-12)


def test_nrmse_all_zero_truth_raises() -> None:
    with pytest.raises(InputError, match="all-zero"):
        nrmse(np.zeros((8, 8)), np.ones((8, 8)))


def test_psnr_by_hand() -> None:
    dr = TRUTH.max() - TRUTH.min()
    mse = np.mean((TRUTH - ESTIMATE) ** 2)
    assert psnr(TRUTH, ESTIMATE) == pytest.approx(10 * np.log10(dr**2 / mse), rel=1e-12)
    assert psnr(TRUTH, ESTIMATE, data_range=2.0) == pytest.approx(10 * np.log10(4.0 / mse), rel=1e-12)


def test_psnr_perfect_is_inf() -> None:
    assert psnr(TRUTH, TRUTH) == np.inf


def test_ssim_identical_is_one() -> None:
    assert ssim(TRUTH, TRUTH) == pytest.approx(1.0)


def test_ssim_default_data_range_is_truth_range() -> None:
    dr = TRUTH.max() - TRUTH.min()
    assert default_data_range(TRUTH) == pytest.approx(dr)
    assert ssim(TRUTH, ESTIMATE) == structural_similarity(TRUTH, ESTIMATE, data_range=dr)
    # the estimate's range does not matter, only the truth's
    assert ssim(TRUTH, 3 * ESTIMATE) == structural_similarity(TRUTH, 3 * ESTIMATE, data_range=dr)


def test_ssim_data_range_two_inflates() -> None:
    truth = TRUTH / TRUTH.max()  # [0, 1], as in the FAST paper
    estimate = truth + 0.05 * RNG.standard_normal(truth.shape)
    at1 = ssim(truth, estimate, data_range=1.0)
    at2 = ssim(truth, estimate, data_range=2.0)
    assert at1 == pytest.approx(ssim(truth, estimate))  # default range of a [0, 1] truth is 1
    assert at1 < at2 < 1.0
    assert at2 == structural_similarity(truth, estimate, data_range=2.0)


def test_constant_truth_uses_range_one() -> None:
    truth = np.full((10, 10), 5.0)
    estimate = truth + 0.1 * np.eye(10)
    assert default_data_range(truth) == 1.0
    assert ssim(truth, estimate) == structural_similarity(truth, estimate, data_range=1.0)
    assert psnr(truth, estimate) == pytest.approx(10 * np.log10(1.0 / np.mean((truth - estimate) ** 2)))


def test_evaluate_keys_and_values() -> None:
    scores = evaluate(TRUTH, ESTIMATE)
    assert list(scores) == ["nrmse", "ssim", "psnr"]
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["nrmse"] == nrmse(TRUTH, ESTIMATE)
    assert scores["ssim"] == ssim(TRUTH, ESTIMATE)
    assert scores["psnr"] == psnr(TRUTH, ESTIMATE)


def test_accepts_lists_and_ints() -> None:
    truth = np.arange(64).reshape(8, 8)
    assert ssim(truth.tolist(), truth.tolist()) == pytest.approx(1.0)
    assert nrmse(truth, truth + 1) == pytest.approx(8 / np.sqrt(np.sum(truth.astype(float) ** 2)))


@pytest.mark.parametrize("func", [nrmse, ssim, psnr, evaluate])
@pytest.mark.parametrize(
    "truth, estimate, message",
    [
        (np.ones((8, 8)), np.ones((8, 9)), "differ in shape"),
        (np.ones(8), np.ones(8), "2-D"),
        (np.ones((2, 8, 8)), np.ones((2, 8, 8)), "2-D"),
        (np.ones((8, 8)), np.full((8, 8), np.nan), "NaN"),
        (np.full((8, 8), np.inf), np.ones((8, 8)), "NaN or infinite"),
        (np.ones((0, 8)), np.ones((0, 8)), "empty"),
    ],
)
def test_bad_images_raise(func, truth, estimate, message: str) -> None:
    with pytest.raises(InputError, match=message):
        func(truth, estimate)


@pytest.mark.parametrize("data_range", [0.0, -1.0, np.nan, "wide"])
@pytest.mark.parametrize("func", [ssim, psnr])
def test_bad_data_range_raises(func, data_range) -> None:
    with pytest.raises(InputError, match="data_range"):
        func(TRUTH, ESTIMATE, data_range=data_range)


def test_ssim_too_small_raises() -> None:
    with pytest.raises(InputError, match="at least 7x7"):
        ssim(np.ones((5, 40)), np.ones((5, 40)))
