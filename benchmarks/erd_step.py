"""Time per FAST batch step (features + ERD update + selection + route) and peak memory.

Each configuration runs in a fresh process: the sampler starts from its initial scan, made as large as the
given coverage, then ``--steps`` adaptive batches are timed. A step is ``ask`` (selection), the route of
the batch (:func:`fastflow.route.order_route`) and ``tell`` (local feature update and ERD prediction).
Peak memory is the process's maximum resident set size.

    python benchmarks/erd_step.py                        # 600x400, 2048x2048, 4096x4096 at 5 % and 20 %
    python benchmarks/erd_step.py --sizes 600x400 --steps 50
    python benchmarks/erd_step.py --cost demo            # cost-aware FAST on the demo instrument's model

A cost-aware sampler routes its batches itself (its ``ask`` includes the tour), so its route column is 0. A
sampler of flown segments (``--cost xray-nanoprobe-fly``) asks for at least a row's worth per batch (its
``min_batch``; the batch column says how many), and its initial scan is a third of its stop coverage, so
its stop coverage is set to three times the row's coverage.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def one(shape: tuple[int, int], coverage: float, batch: int, steps: int, cost: str | None = None) -> dict:
    from fastflow.grid import ScanGrid
    from fastflow.phantoms import flakes
    from fastflow.route import order_route
    from fastflow.sampling.flying import FlyingFastSampler
    from fastflow.sampling.slads import make_fast_sampler

    image = flakes(shape, seed=0)
    grid = ScanGrid(shape)
    t0 = time.perf_counter()
    sampler = make_fast_sampler(grid, seed=0, initial_coverage=coverage, cost=cost)
    if isinstance(sampler, FlyingFastSampler):     # its initial scan is a share of the stop coverage
        sampler = make_fast_sampler(grid, seed=0, coverage=min(1.0, coverage * sampler.initial_every), cost=cost)
    first = sampler.ask(grid.size)
    sampler.tell(first, image[first[:, 0], first[:, 1]])
    setup = time.perf_counter() - t0
    times, parts = [], {"ask": [], "route": [], "tell": []}
    here = np.zeros(2)
    for _ in range(steps):
        a = time.perf_counter()
        idx = sampler.ask(max(batch, sampler.min_batch))
        b = time.perf_counter()
        if not sampler.ordered:
            idx = idx[order_route(idx.astype(float), here)]
        c = time.perf_counter()
        sampler.tell(idx, image[idx[:, 0], idx[:, 1]])
        d = time.perf_counter()
        here = idx[-1].astype(float)
        times.append(d - a)
        for key, dt in (("ask", b - a), ("route", c - b), ("tell", d - c)):
            parts[key].append(dt)
    return {
        "grid": f"{shape[0]}x{shape[1]}", "sampler": type(sampler).__name__, "coverage": coverage,
        "batch": max(batch, sampler.min_batch), "steps": steps,
        "median_ms": 1e3 * float(np.median(times)), "p95_ms": 1e3 * float(np.percentile(times, 95)),
        **{f"{k}_ms": 1e3 * float(np.median(v)) for k, v in parts.items()},
        "setup_s": setup, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="600x400,2048x2048,4096x4096")
    parser.add_argument("--coverages", default="0.05,0.2")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cost", default=None, help="a time-model preset or file: cost-aware FAST (default point-wise)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        size, cov = args.one.split("@")
        ny, nx = (int(v) for v in size.split("x"))
        print(json.dumps(one((ny, nx), float(cov), args.batch, args.steps, args.cost)))
        return
    print(f"batch {args.batch}, {args.steps} timed steps per row (fresh process per row), cost {args.cost or 'off'}")
    header = (f"{'grid':>10} {'cover':>6} {'batch':>6} {'median ms':>10} {'p95 ms':>8} {'ask':>7} {'route':>7} "
              f"{'tell':>7} {'setup s':>8} {'peak MB':>8}")
    print(header)
    for size in args.sizes.split(","):
        for cov in args.coverages.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", f"{size}@{cov}", "--batch", str(args.batch),
                                  "--steps", str(args.steps), *(["--cost", args.cost] if args.cost else [])],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{size:>10} {float(cov):>6.0%}  failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout)
            print(f"{r['grid']:>10} {r['coverage']:>6.0%} {r['batch']:>6} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} "
                  f"{r['ask_ms']:>7.1f} {r['route_ms']:>7.1f} {r['tell_ms']:>7.1f} {r['setup_s']:>8.1f} "
                  f"{r['peak_mb']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
