"""Tests of fastflow.route: batch ordering with OR-Tools and path lengths."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from fastflow.errors import InputError
from fastflow.route import METRICS, order_route, path_length

FIELD = np.array([600.0, 400.0])  # (y, x) extent of the FAST test grid
CENTRE = FIELD / 2


def _lengths(seq: np.ndarray, metric: str) -> np.ndarray:
    """Path lengths of sequences ``(..., m, 2)`` along their second-to-last axis."""
    steps = np.abs(np.diff(seq, axis=-2))
    per_step = steps.max(axis=-1) if metric == "chebyshev" else np.hypot(steps[..., 0], steps[..., 1])
    return per_step.sum(axis=-1)


def _brute_force_length(points: np.ndarray, start: np.ndarray | None, metric: str) -> float:
    """Length of the shortest order of ``points`` (from ``start``), by enumeration."""
    perms = np.array(list(itertools.permutations(range(len(points)))))
    seq = points[perms]
    if start is not None:
        seq = np.concatenate([np.broadcast_to(start, (len(perms), 1, 2)), seq], axis=1)
    return float(_lengths(seq, metric).min())


def _greedy_order(points: np.ndarray, start: np.ndarray, metric: str) -> np.ndarray:
    """Nearest-neighbour order from ``start`` (first index on ties)."""
    left = list(range(len(points)))
    here, order = start, []
    while left:
        d = _lengths(np.stack([np.broadcast_to(here, (len(left), 2)), points[left]], axis=1), metric)
        here_idx = left.pop(int(np.argmin(d)))
        order.append(here_idx)
        here = points[here_idx]
    return np.array(order)


def _random_points(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 2)) * FIELD


# ----------------------------------------------------------------------------------------- validity


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 50, 200])
@pytest.mark.parametrize("with_start", [False, True])
def test_order_is_a_permutation(n: int, with_start: bool) -> None:
    points = _random_points(n, seed=n)
    order = order_route(points, CENTRE if with_start else None)
    assert order.dtype == np.int64
    assert order.shape == (n,)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_integer_grid_indices_with_duplicates_and_ties() -> None:
    points = np.random.default_rng(3).integers(0, 4, (40, 2))  # many duplicates and equal distances
    for metric in METRICS:
        order = order_route(points, (0, 0), metric=metric)
        np.testing.assert_array_equal(np.sort(order), np.arange(40))


def test_all_points_at_the_start() -> None:
    points = np.full((6, 2), 5.0)
    order = order_route(points, (5.0, 5.0))
    np.testing.assert_array_equal(np.sort(order), np.arange(6))
    assert path_length(points[order], (5.0, 5.0)) == 0.0


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("with_start", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_optimal_on_small_batches(metric: str, with_start: bool, n: int) -> None:
    for seed in range(4):
        rng = np.random.default_rng(100 * n + seed)
        points = rng.uniform(0, 100, (n, 2))
        start = rng.uniform(-20, 120, 2) if with_start else None
        order = order_route(points, start, metric=metric)
        best = _brute_force_length(points, start, metric)
        assert path_length(points[order], start, metric) <= best * (1 + 1e-5) + 1e-9


def test_optimal_on_a_small_grid_with_ties() -> None:
    rng = np.random.default_rng(11)
    for _ in range(10):
        points = rng.integers(0, 5, (7, 2)).astype(float)
        for metric in METRICS:
            order = order_route(points, (0, 0), metric=metric)
            best = _brute_force_length(points, np.zeros(2), metric)
            assert path_length(points[order], (0, 0), metric) == pytest.approx(best, rel=1e-6, abs=1e-9)


def test_collinear_points_are_visited_monotonically_from_the_start() -> None:
    x = np.random.default_rng(5).permutation(np.arange(1.0, 21.0))
    points = np.column_stack([np.full(20, 7.0), x])
    for metric in METRICS:
        order = order_route(points, (7.0, 0.0), metric=metric)
        np.testing.assert_array_equal(x[order], np.arange(1.0, 21.0))


def test_collinear_points_without_start_are_monotone() -> None:
    y = np.random.default_rng(6).permutation(np.arange(10.0))
    points = np.column_stack([y, 2 * y + 1])
    order = order_route(points)
    np.testing.assert_array_equal(y[order], np.arange(10.0))  # begins at the end first in (y, x) order


def test_start_inside_the_batch_begins_at_the_start() -> None:
    # The best free path -1, 0, 1, 2, 3 passes through the start; the path must instead begin there
    # and take the short side first: 0 -> -1 -> 1 -> 2 -> 3 (length 5, not 7).
    points = np.array([[0.0, 3.0], [0.0, -1.0], [0.0, 2.0], [0.0, 1.0], [0.0, 2.5]])
    order = order_route(points, (0.0, 0.0))
    np.testing.assert_array_equal(points[order, 1], [-1.0, 1.0, 2.0, 2.5, 3.0])
    assert path_length(points[order], (0.0, 0.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("metric", METRICS)
def test_much_shorter_than_random_and_not_longer_than_greedy(metric: str) -> None:
    points = _random_points(200, seed=42)
    order = order_route(points, CENTRE, metric=metric)
    routed = path_length(points[order], CENTRE, metric)
    shuffled = path_length(points[np.random.default_rng(0).permutation(200)], CENTRE, metric)
    greedy = path_length(points[_greedy_order(points, CENTRE, metric)], CENTRE, metric)
    assert routed < 0.3 * shuffled
    assert routed <= greedy


def test_deterministic_in_one_process() -> None:
    points = _random_points(120, seed=9)
    for start in (None, CENTRE):
        np.testing.assert_array_equal(order_route(points, start), order_route(points, start))


def test_deterministic_across_processes() -> None:
    script = (
        "import numpy as np; from fastflow.route import order_route; "
        "p = np.random.default_rng(9).uniform(0, 1, (120, 2)) * [600, 400]; "
        "print(order_route(p, (300, 200)).tolist())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    points = _random_points(120, seed=9)
    here = str(order_route(points, CENTRE).tolist())
    assert runs[0].stdout.strip() == runs[1].stdout.strip() == here


# ----------------------------------------------------------------------------------------- path_length


def test_path_length_values() -> None:
    points = [[3, 4], [3, 0]]
    assert path_length(points, (0, 0)) == pytest.approx(9.0)
    assert path_length(points, (0, 0), metric="chebyshev") == pytest.approx(8.0)
    assert path_length(points) == pytest.approx(4.0)
    assert path_length(np.empty((0, 2))) == 0.0
    assert path_length(np.empty((0, 2)), (1, 1)) == 0.0
    assert path_length([[1, 1]]) == 0.0


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "points",
    [
        [[0.0, np.nan], [1.0, 2.0]],
        [[0.0, np.inf], [1.0, 2.0]],
        [1.0, 2.0, 3.0],
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        np.zeros((2, 2, 2)),
        [["a", "b"]],
        [[1 + 1j, 2.0]],
    ],
)
def test_bad_points_raise(points: object) -> None:
    with pytest.raises(InputError):
        order_route(points)
    with pytest.raises(InputError):
        path_length(points)


@pytest.mark.parametrize("start", [(np.nan, 0.0), (1.0,), (1.0, 2.0, 3.0), "here"])
def test_bad_start_raises(start: object) -> None:
    with pytest.raises(InputError, match="start"):
        order_route([[0, 0], [1, 1]], start)


@pytest.mark.parametrize("metric", ["manhattan", "Euclidean", None])
def test_unknown_metric_raises(metric: object) -> None:
    with pytest.raises(InputError, match="metric"):
        order_route([[0, 0], [1, 1]], metric=metric)
    with pytest.raises(InputError, match="metric"):
        path_length([[0, 0], [1, 1]], metric=metric)
