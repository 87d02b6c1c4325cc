"""Tests of fastflow.recon: IDW, biharmonic inpainting, the reconstruct() front end and its validation."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.metrics import nrmse
from fastflow.recon.base import prepare_measurements
from fastflow.recon.biharmonic_cg import biharmonic_from_measurements
from fastflow.recon import (
    RECONSTRUCTORS,
    available_methods,
    biharmonic,
    build_tree,
    cubic,
    idw,
    idw_at,
    linear,
    reconstruct,
)

SHAPE = (64, 64)
GRID = ScanGrid(SHAPE)
YY, XX = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
# A smooth bump (sigma 12 px, range [~0, 1]) and a plane with range ~47.
GAUSSIAN = np.exp(-((YY - 30) ** 2 + (XX - 36) ** 2) / (2 * 12.0**2))
RAMP = 0.5 * YY + 0.25 * XX + 3.0


def random_indices(grid: ScanGrid, coverage: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return grid.unravel(rng.choice(grid.size, round(coverage * grid.size), replace=False))


def sample(image: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return image[indices[:, 0], indices[:, 1]]


@pytest.fixture(scope="module")
def scan20() -> np.ndarray:
    return random_indices(GRID, 0.2, seed=0)


MODULES = ["fastflow.recon", "fastflow.recon.base", "fastflow.recon.idw", "fastflow.recon.inpaint",
           "fastflow.recon.biharmonic_cg"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    # import_module: the attribute fastflow.recon.idw is the function, which shadows the submodule
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


# --- IDW --------------------------------------------------------------------------------------------------


def test_idw_exact_at_measured_pixels(scan20: np.ndarray) -> None:
    values = np.random.default_rng(1).normal(size=len(scan20)) * 1e3 + np.pi  # arbitrary, not round, floats
    image = idw(GRID, scan20, values)
    assert image.shape == SHAPE and image.dtype == np.float64
    np.testing.assert_array_equal(sample(image, scan20), values)  # bit for bit


def test_idw_single_point_is_constant() -> None:
    image = idw(GRID, [[10, 20]], [2.5])
    np.testing.assert_array_equal(image, np.full(SHAPE, 2.5))


def test_idw_k1_is_nearest_neighbour(scan20: np.ndarray) -> None:
    values = np.random.default_rng(2).random(len(scan20))
    image = idw(GRID, scan20, values, k=1)
    # brute force: every pixel must hold the value of one of its nearest measured pixels (ties allowed)
    pixels = np.stack([YY.ravel(), XX.ravel()], axis=1)
    d2 = ((pixels[:, None, :] - scan20[None, :, :]) ** 2).sum(axis=2)
    nearest = d2 == d2.min(axis=1, keepdims=True)
    matches = nearest & (values[None, :] == image.ravel()[:, None])
    assert matches.any(axis=1).all()


def test_idw_is_weighted_mean_of_k_nearest() -> None:
    # 1-D grid, points at 0 and 4 (values 0, 8), a third far away at 20 (value 100) excluded by k=2
    grid = ScanGrid((1, 21))
    image = idw(grid, [[0, 0], [0, 4], [0, 20]], [0.0, 8.0, 100.0], k=2, power=2.0)
    w = np.array([1 / 1**2, 1 / 3**2])  # pixel 1: distances 1 and 3
    assert image[0, 1] == pytest.approx((w @ [0.0, 8.0]) / w.sum())
    assert image[0, 2] == pytest.approx(4.0)
    power1 = idw(grid, [[0, 0], [0, 4]], [0.0, 8.0], power=1.0)
    assert power1[0, 1] == pytest.approx((8.0 / 3) / (1 + 1 / 3))


def test_idw_power_zero_is_plain_mean_of_neighbours() -> None:
    image = idw(ScanGrid((1, 9)), [[0, 0], [0, 1], [0, 8]], [1.0, 2.0, 6.0], k=2, power=0.0)
    assert image[0, 2] == pytest.approx(1.5)  # neighbours at 0 and 1
    assert image[0, 6] == pytest.approx(4.0)  # neighbours at 8 and 1


def test_idw_k_larger_than_points_is_clipped() -> None:
    image = idw(GRID, [[0, 0], [63, 63]], [0.0, 1.0], k=50)
    assert image[0, 63] == pytest.approx(0.5)  # equidistant from both points
    assert np.all((image >= 0) & (image <= 1))


def test_idw_ignores_pixel_size(scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    stretched = ScanGrid(SHAPE, pixel_size=(3.0, 0.5), units="um")
    np.testing.assert_array_equal(idw(stretched, scan20, values), idw(GRID, scan20, values))


def test_idw_smooth_image_error(scan20: np.ndarray) -> None:
    # IDW is a first-order interpolant: its error scales with the gradient times the gap between points.
    # On this bump at 20 % coverage NRMSE is 0.034-0.042 over 30 seeds (0.037 median); 0.05 leaves margin
    # while still failing for a broken weighting (nearest-neighbour gives ~0.06, a constant ~0.8).
    image = idw(GRID, scan20, sample(GAUSSIAN, scan20))
    assert nrmse(GAUSSIAN, image) < 0.05


def test_idw_at_neighbours_match_reconstruction(scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    tree = build_tree(scan20)
    query = np.array([[0, 0], [31, 31], [63, 5]])
    estimates, distances, ids = idw_at(tree, values, query, k=4)
    assert distances.shape == ids.shape == (3, 4)
    assert np.all(np.diff(distances, axis=1) >= 0)
    np.testing.assert_allclose(distances, np.linalg.norm(scan20[ids] - query[:, None, :], axis=2))
    # they are the 4 nearest (ties at the 4th may be broken either way)
    all_distances = np.linalg.norm(scan20[None, :, :] - query[:, None, :], axis=2)
    np.testing.assert_allclose(distances, np.sort(all_distances, axis=1)[:, :4])
    weights = 1 / distances**2
    np.testing.assert_allclose(estimates, (weights * values[ids]).sum(axis=1) / weights.sum(axis=1))
    # idw() uses the distinct measured pixels in row-major order: the same tree gives the same image
    order = np.argsort(GRID.ravel(scan20))
    row_major_tree = build_tree(scan20[order])
    image = idw(GRID, scan20, values, k=4)
    np.testing.assert_array_equal(idw_at(row_major_tree, values[order], query, k=4)[0], sample(image, query))
    # points instead of a tree give the same answer
    np.testing.assert_array_equal(idw_at(scan20, values, query, k=4)[0], estimates)


def test_idw_at_query_on_measured_pixel_returns_its_value() -> None:
    estimates, distances, _ = idw_at([[0, 0], [0, 4]], [3.0, 8.0], [[0, 0], [0, 4]], k=2)
    np.testing.assert_array_equal(estimates, [3.0, 8.0])
    assert np.all(distances[:, 0] == 0)


def test_idw_at_k1_shapes_are_2d() -> None:
    estimates, distances, ids = idw_at([[0, 0], [5, 5]], [1.0, 2.0], [[1, 1]], k=1)
    assert estimates.shape == (1,) and distances.shape == (1, 1) and ids.shape == (1, 1)
    assert ids[0, 0] == 0 and estimates[0] == 1.0


@pytest.mark.parametrize(
    "k, power", [(0, 2.0), (2.5, 2.0), (True, 2.0), (3, -1.0), (3, float("nan")), (3, "x")]
)
def test_idw_bad_options(k, power) -> None:
    with pytest.raises(InputError):
        idw(GRID, [[0, 0]], [1.0], k=k, power=power)


def test_idw_at_bad_values_length() -> None:
    with pytest.raises(InputError, match="one per tree point"):
        idw_at([[0, 0], [1, 1]], [1.0], [[0, 1]])


# --- biharmonic -------------------------------------------------------------------------------------------


def test_biharmonic_exact_at_measured_pixels(scan20: np.ndarray) -> None:
    values = np.random.default_rng(3).normal(size=len(scan20)) * 1e3 + np.e
    image = biharmonic(GRID, scan20, values)
    assert image.shape == SHAPE and image.dtype == np.float64
    np.testing.assert_array_equal(sample(image, scan20), values)


def test_biharmonic_reproduces_linear_ramp(scan20: np.ndarray) -> None:
    # Biharmonic interpolation is exact for linear functions; scikit-image's free image border bends the
    # solution near the edges only (max error ~0.16 within 4 px of the border, < 1e-4 beyond 16 px here).
    image = biharmonic(GRID, scan20, sample(RAMP, scan20))
    interior = (slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(image[interior], RAMP[interior], atol=1e-3)
    assert nrmse(RAMP, image) < 5e-3  # 0.0022, almost all of it within a few pixels of the border


def test_biharmonic_smooth_image_error(scan20: np.ndarray) -> None:
    # 0.0015-0.0029 over 30 seeds: far better than IDW on the same smooth bump
    image = biharmonic(GRID, scan20, sample(GAUSSIAN, scan20))
    assert nrmse(GAUSSIAN, image) < 0.005


def test_biharmonic_full_coverage_is_identity() -> None:
    grid = ScanGrid((5, 6))
    image = np.arange(30.0).reshape(5, 6)
    all_pixels = grid.unravel(np.arange(30))
    np.testing.assert_array_equal(biharmonic(grid, all_pixels, image.ravel()), image)


# --- biharmonic by conjugate gradients (the self-check's candidate) ------------------------------------------


def _cg(indices: np.ndarray, values: np.ndarray, grid: ScanGrid = GRID, **options) -> np.ndarray:
    return biharmonic_from_measurements(prepare_measurements(grid, indices, values), **options)


def test_biharmonic_cg_agrees_with_scikit_image(scan20: np.ndarray) -> None:
    # the same functional away from the border (scikit-image frees the border differently): on the smooth
    # bump both are within 0.005 NRMSE of the truth and within 2 % of the range of each other inside
    values = sample(GAUSSIAN, scan20)
    fast, reference = _cg(scan20, values), biharmonic(GRID, scan20, values)
    assert fast.dtype == np.float64 and fast.shape == SHAPE
    np.testing.assert_array_equal(sample(fast, scan20), values)
    assert nrmse(GAUSSIAN, fast) < 0.005
    interior = (slice(8, -8), slice(8, -8))
    assert np.abs(fast[interior] - reference[interior]).max() < 0.02
    # a ramp is reproduced inside; a large offset does not cost float32 its digits
    # (to the stopping rule's rtol 1e-4 of a range of 47: a few thousandths)
    ramp = _cg(scan20, sample(RAMP, scan20))
    np.testing.assert_allclose(ramp[16:-16, 16:-16], RAMP[16:-16, 16:-16], atol=0.01)
    np.testing.assert_allclose(_cg(scan20, sample(RAMP, scan20) + 1e6) - 1e6, ramp, atol=1e-4)


def test_biharmonic_cg_solves_the_biharmonic_equation(scan20: np.ndarray) -> None:
    from fastflow.recon.biharmonic_cg import _Laplacian

    values = np.random.default_rng(4).normal(size=len(scan20))
    m = prepare_measurements(GRID, scan20, values)
    image = biharmonic_from_measurements(m, dtype=np.float64, rtol=1e-10, maxiter=10_000)
    lap = _Laplacian(SHAPE, np.float64)
    residual = lap(lap(image, np.empty(SHAPE)), np.empty(SHAPE))[~m.measured]
    scale = np.abs(lap(lap(m.filled(), np.empty(SHAPE)), np.empty(SHAPE))).max()
    assert np.abs(residual).max() < 1e-8 * scale
    # the start only changes how fast it gets there
    started = biharmonic_from_measurements(m, start=cubic(GRID, scan20, values), dtype=np.float64, rtol=1e-10,
                                           maxiter=10_000)
    np.testing.assert_allclose(started, image, atol=1e-7)


def test_biharmonic_cg_edge_cases() -> None:
    grid = ScanGrid((5, 6))
    image = np.arange(30.0).reshape(5, 6)
    np.testing.assert_array_equal(_cg(grid.unravel(np.arange(30)), image.ravel(), grid), image)
    np.testing.assert_allclose(_cg(np.array([[2, 3]]), np.array([7.5]), grid), np.full((5, 6), 7.5))
    line = _cg(np.array([[0, 0], [0, 1], [0, 5], [0, 6]]), np.array([0.0, 1.0, 5.0, 6.0]), ScanGrid((1, 7)))
    np.testing.assert_allclose(line, [np.arange(7.0)], atol=1e-5)


@pytest.mark.parametrize("method", [linear, cubic])
def test_delaunay_methods_reproduce_a_ramp(method, scan20: np.ndarray) -> None:
    # both are exact for planes inside the hull (linear by construction, Clough-Tocher's gradients of a
    # plane are exact); the hull's edge gets the linear value, only pixels outside it get IDW
    image = method(GRID, scan20, sample(RAMP, scan20))
    interior = (slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(image[interior], RAMP[interior], atol=1e-6)


def test_cubic_follows_curvature_better_than_linear(scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    lin, cub = linear(GRID, scan20, values), cubic(GRID, scan20, values)
    assert nrmse(GAUSSIAN, cub) < 0.5 * nrmse(GAUSSIAN, lin)


@pytest.mark.parametrize("method", [linear, cubic])
def test_delaunay_methods_without_triangles_fall_back_to_idw(method) -> None:
    grid = ScanGrid((6, 7))
    two = np.array([[0, 0], [4, 5]])  # fewer than three measurements: no triangle, IDW everywhere
    values = np.array([1.0, 3.0])
    np.testing.assert_allclose(method(grid, two, values), idw(grid, two, values))


@pytest.mark.parametrize("family", ["raster", "lines", "random", "spiral"])
@pytest.mark.parametrize("method", [linear, cubic])
def test_delaunay_methods_are_exact_on_the_hull_edges(family: str, method) -> None:
    # pixels on a straight edge of the hull (a raster's outer rows, the image border) lie just outside the
    # offset triangulation or in slivers of collinear pixels; they are interpolated along the edge, so a
    # plane is reproduced at every pixel of the exact hull, edges included
    from scipy.spatial import Delaunay

    from fastflow.recon.masks import scan_mask

    shape = (48, 56)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    plane = 0.3 * yy + 0.7 * xx
    for coverage in (0.05, 0.15):
        mask = scan_mask(family, shape, coverage, seed=3)
        idx = np.argwhere(mask)
        image = method(ScanGrid(shape), idx, plane[mask])
        pixels = np.column_stack([yy.ravel(), xx.ravel()]).astype(float)
        inside = (Delaunay(idx.astype(float)).find_simplex(pixels, tol=1e-9) >= 0).reshape(shape)
        assert inside.sum() > 0.5 * mask.size
        np.testing.assert_allclose(image[inside], plane[inside], atol=1e-4)


@pytest.mark.parametrize("method", [linear, cubic])
def test_delaunay_methods_on_collinear_measurements(method) -> None:
    # one scan line: no triangle; the line itself is interpolated along it, the rest is IDW
    grid = ScanGrid((9, 12))
    line = np.array([[4, 1], [4, 5], [4, 11]])
    values = np.array([1.0, 3.0, 0.0])
    image = method(grid, line, values)
    np.testing.assert_allclose(image[4, 1:12], np.interp(np.arange(1, 12), [1, 5, 11], values))
    off_line = np.ones(grid.shape, dtype=bool)
    off_line[4, 1:12] = False
    np.testing.assert_allclose(image[off_line], idw(grid, line, values)[off_line])


def test_delaunay_barycentric_transforms_match_scipys() -> None:
    # fastflow computes the per-triangle transforms itself (scipy's lazy computation is slow); the result
    # must be scipy's own, degenerate triangles included (NaN there)
    from scipy.spatial import Delaunay

    from fastflow.recon.base import prepare_measurements
    from fastflow.recon.delaunay import _triangulation

    rng = np.random.default_rng(4)
    pixels = np.unique(rng.integers(0, 40, (300, 2)), axis=0)
    ours, _ = _triangulation(prepare_measurements(ScanGrid((40, 40)), pixels, np.zeros(len(pixels))))
    reference = Delaunay(ours.points)  # a fresh copy: scipy computes its transforms on first use
    np.testing.assert_array_equal(ours.simplices, reference.simplices)
    np.testing.assert_allclose(ours.transform, reference.transform, rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(ours.find_simplex(reference.points[:50] + 0.01),
                                  reference.find_simplex(reference.points[:50] + 0.01))


# --- reconstruct() and shared behaviour -------------------------------------------------------------------


def test_available_methods() -> None:
    methods = available_methods()
    assert set(methods) == set(RECONSTRUCTORS) == {"idw", "linear", "cubic", "biharmonic", "learned"}
    assert all(isinstance(text, str) and text and "\n" not in text for text in methods.values())


@pytest.mark.parametrize("method", sorted(RECONSTRUCTORS))
def test_reconstruct_dispatches(method: str, scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    np.testing.assert_array_equal(
        reconstruct(GRID, scan20, values, method=method), RECONSTRUCTORS[method](GRID, scan20, values)
    )


def test_reconstruct_passes_options(scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    np.testing.assert_array_equal(reconstruct(GRID, scan20, values, k=1), idw(GRID, scan20, values, k=1))


@pytest.mark.parametrize("method", sorted(RECONSTRUCTORS))
def test_duplicates_are_averaged(method: str) -> None:
    grid = ScanGrid((9, 9))
    indices = np.array([[0, 0], [4, 4], [8, 8], [4, 4], [4, 4], [0, 8]])
    values = np.array([1.0, 2.0, 3.0, 4.0, 9.0, 5.0])
    image = reconstruct(grid, indices, values, method=method)
    assert image[4, 4] == 5.0  # (2 + 4 + 9) / 3
    assert (image[0, 0], image[8, 8], image[0, 8]) == (1.0, 3.0, 5.0)
    single = reconstruct(grid, [[0, 0], [4, 4], [8, 8], [0, 8]], [1.0, 5.0, 3.0, 5.0], method=method)
    np.testing.assert_allclose(image, single)


def test_single_channel_column_is_accepted(scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    column = reconstruct(GRID, scan20, values[:, None])
    np.testing.assert_array_equal(column, reconstruct(GRID, scan20, values))


@pytest.mark.parametrize(
    "indices, values, message",
    [
        ([[0, 0, 0]], [1.0], r"\(n, 2\)"),  # three columns
        ([[0, 64]], [1.0], "outside"),  # out of the grid
        ([[-1, 0]], [1.0], "outside"),
        ([[0.5, 0]], [1.0], "integers"),
        ([[0, 0], [1, 1]], [1.0, np.nan], "NaN"),
        ([[0, 0], [1, 1]], [1.0, np.inf], "NaN or infinite"),
        ([[0, 0], [1, 1]], [1.0], "2 indices"),  # mismatched lengths
        ([[0, 0]], [1.0, 2.0], "1 indices"),
        (np.empty((0, 2), int), [], "at least one"),  # zero points
        ([[0, 0], [1, 1]], [[1.0, 2.0], [3.0, 4.0]], "one channel at a time"),
        ([[0, 0]], [["a"]], "real numbers"),
        ([[0, 0]], 1.0, "1-D"),
    ],
)
@pytest.mark.parametrize("method", sorted(RECONSTRUCTORS))
def test_bad_inputs_raise(method: str, indices, values, message: str) -> None:
    with pytest.raises(InputError, match=message):
        reconstruct(GRID, indices, values, method=method)


def test_unknown_method_lists_available() -> None:
    with pytest.raises(InputError, match="available: biharmonic, cubic, idw, learned, linear"):
        reconstruct(GRID, [[0, 0]], [1.0], method="kriging")


def test_unknown_option_raises() -> None:
    with pytest.raises(InputError, match="does not take option"):
        reconstruct(GRID, [[0, 0]], [1.0], method="biharmonic", k=3)


def test_grid_must_be_scan_grid() -> None:
    with pytest.raises(InputError, match="ScanGrid"):
        reconstruct((64, 64), [[0, 0]], [1.0])


def test_idw_in_chunks_matches_one_pass(scan20: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    values = sample(GAUSSIAN, scan20)
    whole = idw(GRID, scan20, values)
    monkeypatch.setattr(importlib.import_module("fastflow.recon.idw"), "QUERY_CHUNK", 1000)
    np.testing.assert_array_equal(idw(GRID, scan20, values), whole)


@pytest.mark.parametrize("method", sorted(RECONSTRUCTORS))
def test_result_does_not_depend_on_measurement_order(method: str, scan20: np.ndarray) -> None:
    # ties at the k-th neighbour are common on a lattice: the answer must still be deterministic
    values = sample(GAUSSIAN, scan20)
    order = np.random.default_rng(5).permutation(len(scan20))
    shuffled = reconstruct(GRID, scan20[order], values[order], method=method)
    np.testing.assert_array_equal(shuffled, reconstruct(GRID, scan20, values, method=method))


def test_idw_does_not_depend_on_workers(scan20: np.ndarray) -> None:
    values = sample(GAUSSIAN, scan20)
    np.testing.assert_array_equal(idw(GRID, scan20, values, workers=1), idw(GRID, scan20, values, workers=-1))
