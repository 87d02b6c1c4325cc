"""The order in which a batch of scan points is visited: a short open path from the stage position.

The path is found by the routing solver of Google OR-Tools (Apache-2.0): a cheapest-arc first solution
improved by local search to a local optimum, with no time limit, so the same points, start and metric give
the same order in every process and on every machine. Two other maintained solvers were measured here for
50-point batches (see the README): elkai/LKH (12 ms, 3 % shorter paths, but its licence forbids commercial
use) and fast-tsp (MIT, 5 ms, but time-bounded: the order it returns depends on machine load).

The open path is a one-vehicle route from a start node to an end node: the start node is the stage
position (or, without one, a free node at zero cost from everywhere), and the end node is reached at zero
cost from every point, so the route's cost is exactly the length of the open path. Distances are scaled to
integers (the largest to ``1e6``) for the solver.

Metrics
-------
``"chebyshev"``: ``max(|dy|, |dx|)``, the travel time (times the speed) of an XY stage whose axes move at
the same time at the same speed, as in :class:`fastflow.instruments.simulated.SimulatedInstrument`.
``"euclidean"``: ``hypot(dy, dx)``, the distance travelled.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np
from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from fastflow.errors import InputError

METRICS = ("chebyshev", "euclidean")
"""Names of the supported distance metrics."""

_SCALE_TO = 1_000_000
"""Largest distance of a batch after scaling to the solver's integer costs."""

_BRUTE_FORCE_MAX = 7
"""Batches of at most this many points are ordered exactly by enumeration (7! = 5040 orders, ~2 ms)."""


# ----------------------------------------------------------------------------------------- public API


def order_route(points: Any, start: Any = None, *, metric: str = "chebyshev") -> np.ndarray:
    """Order points into a short open path beginning at ``start``.

    Parameters
    ----------
    points : array_like
        ``(n, 2)`` positions ``(y, x)``, grid indices or physical units; ``n`` may be 0.
    start : array_like, optional
        ``(2,)`` position ``(y, x)`` of the stage before the first point, in the units of ``points``.
        ``None``: the path may begin at any point.
    metric : {"chebyshev", "euclidean"}, optional
        Cost of a move: ``max(|dy|, |dx|)`` (travel time of a stage whose axes move together at equal
        speed) or ``hypot(dy, dx)``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 permutation: ``points[order]`` is the visiting order. Without ``start`` the path is
        oriented to begin at the end point that comes first in ``(y, x)`` order.

    Raises
    ------
    InputError
        If ``points`` is not an ``(n, 2)`` array of finite numbers, ``start`` is not a finite ``(2,)``
        position, or ``metric`` is unknown.

    Notes
    -----
    Paths of up to seven points are found by enumeration; longer ones by OR-Tools' local search, a
    heuristic: about 14 ms for 50 points here, within a few per cent of the best known tour.

    Examples
    --------
    >>> order_route([[0, 5], [0, 1], [0, 3]], start=(0, 0))
    array([1, 2, 0])
    >>> order_route([[0, 5], [0, 1], [0, 3]])
    array([1, 2, 0])
    """
    pts = _check_points(points)
    origin = _check_start(start)
    metric = _check_metric(metric)
    n = len(pts)
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    if n <= _BRUTE_FORCE_MAX:
        order = _brute_force(pts, origin, metric)
    else:
        order = _solve_routing(pts, origin, metric)
    if origin is None:
        order = _orient_free_path(order, pts)
    return order


def path_length(points: Any, start: Any = None, metric: str = "euclidean") -> float:
    """Length of the path that visits ``points`` in the given order, beginning at ``start``.

    Parameters
    ----------
    points : array_like
        ``(n, 2)`` positions ``(y, x)`` in visiting order; ``n`` may be 0.
    start : array_like, optional
        ``(2,)`` position before the first point; ``None``: the path begins at the first point.
    metric : {"chebyshev", "euclidean"}, optional
        Cost of a move; see :func:`order_route`.

    Returns
    -------
    float
        Sum of the moves' lengths (0 for an empty path).

    Raises
    ------
    InputError
        For the same invalid inputs as :func:`order_route`.

    Examples
    --------
    >>> path_length([[3, 4], [3, 0]], start=(0, 0))
    9.0
    >>> path_length([[3, 4], [3, 0]], start=(0, 0), metric="chebyshev")
    8.0
    """
    pts = _check_points(points)
    origin = _check_start(start)
    metric = _check_metric(metric)
    if origin is not None:
        pts = np.vstack([origin, pts])
    if len(pts) < 2:
        return 0.0
    return float(_step_lengths(np.diff(pts, axis=0), metric).sum())


# ----------------------------------------------------------------------------------------- validation


def _check_points(points: Any) -> np.ndarray:
    """Return ``points`` as an ``(n, 2)`` float64 array of finite numbers."""
    arr = _numeric_array(points, "points")
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"points must be an (n, 2) array of (y, x) positions; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"points must be finite numbers; {bad} of {len(arr)} hold NaN or inf")
    return arr


def _check_start(start: Any) -> np.ndarray | None:
    """Return ``start`` as a finite ``(2,)`` float64 array, or ``None``."""
    if start is None:
        return None
    arr = _numeric_array(start, "start")
    if arr.shape != (2,) or not np.all(np.isfinite(arr)):
        raise InputError(f"start must be None or a finite (y, x) position; got {start!r}")
    return arr


def _numeric_array(value: Any, name: str) -> np.ndarray:
    """Convert ``value`` to a float64 array, refusing strings, objects and complex numbers."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric array; got {type(value).__name__}") from None
    if raw.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold real numbers; got dtype {raw.dtype}")
    return raw.astype(np.float64)


def _check_metric(metric: Any) -> str:
    """Return ``metric`` if it names a supported metric."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    return metric


# ----------------------------------------------------------------------------------------- distances


def _step_lengths(steps: np.ndarray, metric: str) -> np.ndarray:
    """Lengths of moves ``(..., 2)`` under ``metric``."""
    steps = np.abs(steps)
    if metric == "chebyshev":
        return steps.max(axis=-1)
    return np.hypot(steps[..., 0], steps[..., 1])


def _distance_matrix(nodes: np.ndarray, metric: str) -> np.ndarray:
    """Symmetric ``(m, m)`` matrix of distances between ``nodes`` ``(m, 2)``."""
    return _step_lengths(nodes[:, None, :] - nodes[None, :, :], metric)


# ----------------------------------------------------------------------------------------- solvers


def _brute_force(points: np.ndarray, start: np.ndarray | None, metric: str) -> np.ndarray:
    """The shortest order by enumeration of all permutations (first in lexicographic order on ties)."""
    perms = np.array(list(permutations(range(len(points)))), dtype=np.int64)
    path = points[perms]                                        # (orders, n, 2)
    lengths = _step_lengths(np.diff(path, axis=1), metric).sum(axis=1)
    if start is not None:
        lengths += _step_lengths(path[:, 0] - start, metric)
    return perms[int(np.argmin(lengths))]


def _solve_routing(points: np.ndarray, start: np.ndarray | None, metric: str) -> np.ndarray:
    """Order ``points`` as a one-vehicle OR-Tools route from a start node to a free end node."""
    n = len(points)
    costs = np.zeros((n + 2, n + 2), dtype=np.int64)   # node n: start, node n + 1: end
    distances = _distance_matrix(points, metric)
    largest = float(distances.max())
    if start is not None:
        from_start = _step_lengths(points - start, metric)
        largest = max(largest, float(from_start.max()))
    scale = _SCALE_TO / largest if largest > 0 else 0.0
    costs[:n, :n] = np.rint(distances * scale)
    if start is not None:
        costs[n, :n] = np.rint(from_start * scale)
    costs[n + 1, :] = costs[:, n] = 0                  # nothing returns to the start or leaves the end
    manager = pywrapcp.RoutingIndexManager(n + 2, 1, [n], [n + 1])
    routing = pywrapcp.RoutingModel(manager)
    routing.SetArcCostEvaluatorOfAllVehicles(routing.RegisterTransitMatrix(costs.tolist()))
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    solution = routing.SolveWithParameters(params)
    if solution is None:
        raise RuntimeError("OR-Tools found no route (a bug: every order is feasible)")
    order, node = [], solution.Value(routing.NextVar(routing.Start(0)))
    while not routing.IsEnd(node):
        order.append(manager.IndexToNode(node))
        node = solution.Value(routing.NextVar(node))
    return np.asarray(order, dtype=np.int64)


def _orient_free_path(order: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Reverse a free-ended path if its last point comes before its first in ``(y, x)`` order.

    Ties (equal positions) keep the end with the smaller index first.
    """
    first, last = points[order[0]], points[order[-1]]
    key_first = (first[0], first[1], order[0])
    key_last = (last[0], last[1], order[-1])
    return order[::-1].copy() if key_last < key_first else order
