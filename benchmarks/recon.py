"""Time the reconstructions on uniform random scans of a smooth synthetic image.

Usage::

    python benchmarks/recon.py [--repeats N] [--seed S] [--biharmonic-budget SECONDS] [--no-biharmonic]

IDW runs on 600x400 (the FAST test image's shape) and 2048x2048 grids at 5, 20 and 50 % coverage; the table
gives the median and minimum wall time over ``--repeats`` runs. Biharmonic inpainting runs once per coverage
on 600x400 only (it solves a sparse system over every unmeasured pixel); once one run exceeds the budget
the remaining coverages are skipped. NRMSE against the synthetic truth is a sanity check, not a benchmark.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fastflow.grid import ScanGrid
from fastflow.metrics import nrmse
from fastflow.recon import reconstruct

IDW_SHAPES = ((600, 400), (2048, 2048))
BIHARMONIC_SHAPES = ((600, 400),)
COVERAGES = (0.05, 0.20, 0.50)


@dataclass
class Row:
    method: str
    shape: tuple[int, int]
    coverage: float
    points: int
    median: float | None = None
    best: float | None = None
    repeats: int = 0
    error: float | None = None
    note: str = ""


def smooth_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth test image: a few random Gaussian blobs on a gentle plane plus a slow sinusoid."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx] / max(shape)
    image = 0.3 * y + 0.2 * x + 0.1 * np.sin(6 * x) * np.cos(4 * y)
    for _ in range(8):
        cy, cx = rng.random(2) * (ny / max(shape), nx / max(shape))
        width = rng.uniform(0.03, 0.15)
        image += rng.uniform(0.2, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    return image


def random_scan(shape: tuple[int, int], coverage: float, seed: int) -> np.ndarray:
    """Grid indices of ``round(coverage * size)`` distinct pixels drawn uniformly at random."""
    rng = np.random.default_rng(seed)
    size = shape[0] * shape[1]
    flat = rng.choice(size, size=round(coverage * size), replace=False)
    return np.stack(np.divmod(flat, shape[1]), axis=1)


def time_call(func: Callable[[], np.ndarray], repeats: int) -> tuple[list[float], np.ndarray]:
    """Wall times of ``repeats`` calls and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return times, result


def bench(method: str, shape: tuple[int, int], coverage: float, repeats: int, seed: int) -> Row:
    truth = smooth_image(shape, seed)
    indices = random_scan(shape, coverage, seed + 1)
    values = truth[indices[:, 0], indices[:, 1]]
    grid = ScanGrid(shape)
    times, image = time_call(lambda: reconstruct(grid, indices, values, method=method), repeats)
    median, best = float(np.median(times)), min(times)
    return Row(method, shape, coverage, len(indices), median, best, repeats, nrmse(truth, image))


def run(repeats: int, seed: int, biharmonic_budget: float, with_biharmonic: bool) -> list[Row]:
    rows = []
    warm = random_scan((32, 32), 0.2, seed)
    reconstruct(ScanGrid((32, 32)), warm, np.ones(len(warm)))  # warm up imports and thread pools
    for shape in IDW_SHAPES:
        for coverage in COVERAGES:
            rows.append(bench("idw", shape, coverage, repeats, seed))
            print_row(rows[-1])
    over_budget = not with_biharmonic
    reason = "skipped (--no-biharmonic)"
    for shape in IDW_SHAPES:
        for coverage in COVERAGES:
            points = round(coverage * shape[0] * shape[1])
            if shape not in BIHARMONIC_SHAPES:
                rows.append(Row("biharmonic", shape, coverage, points, note="skipped: too slow at this size"))
            elif over_budget:
                rows.append(Row("biharmonic", shape, coverage, points, note=reason))
            else:
                rows.append(bench("biharmonic", shape, coverage, 1, seed))
                if rows[-1].median > biharmonic_budget:
                    over_budget = True
                    reason = f"skipped: previous run > {biharmonic_budget:g} s budget"
            print_row(rows[-1])
    return rows


HEADER = (
    f"{'method':<11} {'grid':>9} {'cover':>6} {'points':>9} {'median s':>9} {'min s':>8} {'reps':>4} "
    f"{'nrmse':>7}  note"
)


def format_row(row: Row) -> str:
    grid = f"{row.shape[0]}x{row.shape[1]}"
    timed = row.median is not None
    median = f"{row.median:9.3f}" if timed else f"{'-':>9}"
    best = f"{row.best:8.3f}" if timed else f"{'-':>8}"
    reps = f"{row.repeats:4d}" if timed else f"{'-':>4}"
    error = f"{row.error:7.4f}" if row.error is not None else f"{'-':>7}"
    return (
        f"{row.method:<11} {grid:>9} {row.coverage:6.0%} {row.points:9d} {median} {best} {reps} {error}  "
        f"{row.note}"
    )


def print_row(row: Row) -> None:
    print(format_row(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed IDW runs per case (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image and the scan points")
    parser.add_argument(
        "--biharmonic-budget",
        type=float,
        default=60.0,
        help="seconds; skip the remaining biharmonic cases once one takes longer (default 60)",
    )
    parser.add_argument("--no-biharmonic", action="store_true", help="time IDW only")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print(
        f"fastflow reconstruction benchmark: {os.cpu_count()} CPUs, seed {args.seed}, repeats {args.repeats}"
    )
    print(HEADER)
    print("-" * len(HEADER))
    run(args.repeats, args.seed, args.biharmonic_budget, not args.no_biharmonic)


if __name__ == "__main__":
    main()
