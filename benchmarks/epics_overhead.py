"""Software overhead per point of the EPICS instrument on loopback, in point mode and in list mode.

Starts the simulated-beamline IOC (``fastflow.instruments.ioc``) in a subprocess on free loopback ports,
measures batches of random points through :class:`~fastflow.instruments.epics.EpicsInstrument`, and reports
the time per point beyond what the simulated physics takes (travel ``max(|dy|, |dx|) / speed`` + settle +
dwell, times ``time_scale``):

- point mode: per point, from the spacing of :attr:`Measurement.times` (the first point of each batch is
  left out); median and p95;
- list mode: (wall time of a batch - its simulated duration) / points, per batch; median and p95.

Run::

    OMP_NUM_THREADS=1 python benchmarks/epics_overhead.py [--points 400] [--batches 5] [--time-scale 1]

Targets: point mode < 3 ms median per point, list mode < 0.2 ms per point.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def expected_durations(start: np.ndarray, positions: np.ndarray, speed: float, settle: float,
                       dwell: float, scale: float) -> np.ndarray:
    """Simulated wall seconds per point (same model as the IOC and SimulatedInstrument)."""
    steps = np.diff(np.vstack([start, positions]), axis=0)
    moved = np.any(steps != 0, axis=1)
    return (np.abs(steps).max(axis=1) / speed + settle * moved + dwell) * scale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=400, help="points per batch (default 400)")
    p.add_argument("--batches", type=int, default=5, help="batches per mode (default 5)")
    p.add_argument("--size", type=int, default=64, help="sample size in pixels (default 64)")
    p.add_argument("--dwell", type=float, default=0.001, help="seconds per point (default 0.001)")
    p.add_argument("--speed", type=float, default=2000.0, help="stage speed, px/s (default 2000)")
    p.add_argument("--settle", type=float, default=0.0005, help="settle seconds (default 0.0005)")
    p.add_argument("--time-scale", type=float, default=1.0, help="IOC time scale (default 1: real time)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from fastflow.instruments.ioc import pv_map_for, start_ioc

    rng = np.random.default_rng(args.seed)
    image = rng.random((args.size, args.size))
    opts = dict(dwell=args.dwell, speed=args.speed, settle=args.settle, time_scale=args.time_scale)
    with start_ioc(image, "BENCH:", **opts) as ioc:
        os.environ.update(ioc.env)  # before the first Channel Access call of this process
        from fastflow.instruments.epics import EpicsInstrument

        rows = []
        for mode in ("point", "list"):
            inst = EpicsInstrument(ioc.grid, pv_map_for("BENCH:", ioc.grid, mode=mode))
            per_point: list[float] = []
            per_batch: list[float] = []
            wall_total = sim_total = 0.0
            n_total = 0
            for _ in range(args.batches):
                idx = rng.integers(0, args.size, (args.points, 2))
                positions = ioc.grid.to_position(idx)
                expected = expected_durations(inst.position, positions, args.speed, args.settle, args.dwell,
                                              args.time_scale)
                t0 = time.monotonic() - inst._t0  # noqa: SLF001 - the instrument's own clock
                w0 = time.perf_counter()
                m = inst.measure(idx)
                wall = time.perf_counter() - w0
                if not np.array_equal(m.values[:, 0], image[idx[:, 0], idx[:, 1]]):
                    print(f"warning: {mode} mode values differ from the image", file=sys.stderr)
                per_batch.append((wall - expected.sum()) / len(idx))
                spacing = np.diff(np.concatenate([[t0], m.times]))
                per_point.extend((spacing - expected)[1:].tolist())
                wall_total += wall
                sim_total += float(expected.sum())
                n_total += len(idx)
            series = per_point if mode == "point" else per_batch
            rows.append((mode, n_total, wall_total, sim_total, np.median(series) * 1e3,
                         np.percentile(series, 95) * 1e3, (wall_total - sim_total) / n_total * 1e3))

    print(f"EPICS overhead on loopback: {args.batches} batches x {args.points} random points, "
          f"{args.size}x{args.size} sample, dwell {args.dwell} s, speed {args.speed} px/s, settle {args.settle} s, "
          f"time scale {args.time_scale}")
    print(f"{'mode':<6} {'points':>6} {'wall s':>8} {'physics s':>9} {'median ms/pt':>13} {'p95 ms/pt':>10} "
          f"{'mean ms/pt':>10}")
    for mode, n, wall, sim, med, p95, mean in rows:
        print(f"{mode:<6} {n:>6} {wall:>8.2f} {sim:>9.2f} {med:>13.3f} {p95:>10.3f} {mean:>10.3f}")
    print("(point: per-point spacing minus physics; list: per-batch (wall - physics) / points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
