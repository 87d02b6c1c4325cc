"""Time saved by measuring and thinking in parallel (``--overlap``): FAST scans of the simulated-beamline IOC.

    python benchmarks/overlap.py [--side 128] [--coverage 0.08] [--batch-size 50] [--modes point,list]

The IOC runs in real time (dwell, settle and travel as configured); each scan is run with and without
overlap on the same sample and seed. Overlap hides the sampler's step (features, ERD, selection, route)
behind the batch's acquisition; the points differ by at most a one-batch lag of information.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--coverage", type=float, default=0.08)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--modes", default="point,list")
    parser.add_argument("--dwell", type=float, default=0.002)
    args = parser.parse_args()

    import numpy as np

    from fastflow.instruments.ioc import pv_map_for, start_ioc
    from fastflow.phantoms import particles
    from fastflow.runs import ScanConfig, acquire, create_run

    scratch = tempfile.mkdtemp(prefix="fastflow-overlap-")
    sample = os.path.join(scratch, "sample.npy")
    np.save(sample, particles((args.side, args.side), seed=2))
    ioc = start_ioc(sample, "OVL:", dwell=args.dwell, speed=2000.0, settle=0.0005, time_scale=1.0,
                    max_points=max(2000, args.batch_size))
    os.environ.update(ioc.env)          # before this process's first Channel Access call
    rows = []
    try:
        for mode in args.modes.split(","):
            pv_map = os.path.join(scratch, f"{mode}.toml")
            pv_map_for("OVL:", ioc.grid, mode=mode).save(pv_map)
            for overlap in (False, True):
                config = ScanConfig(sample=sample, sampler="fast", coverage=args.coverage,
                                    batch_size=args.batch_size, snapshots=[], instrument="epics", pv_map=pv_map,
                                    overlap=overlap)
                run_dir = create_run(config, os.path.join(scratch, f"{mode}-{overlap}"))
                t0 = time.perf_counter()
                report = acquire(run_dir, figure=False)
                rows.append((mode, overlap, time.perf_counter() - t0, report["n_points"],
                             report["snapshots"][-1]["nrmse"]))
    finally:
        ioc.stop()
    print(f"FAST on a {args.side}x{args.side} particles sample to {args.coverage:.0%}, batch {args.batch_size}, "
          f"dwell {args.dwell * 1e3:g} ms, IOC in real time")
    print(f"{'mode':<6} {'overlap':<8} {'wall s':>8} {'points':>7} {'NRMSE':>8} {'saved':>8}")
    for mode, overlap, wall, n, err in rows:
        base = next(w for m, o, w, _, _ in rows if m == mode and not o)
        saved = f"{(base - wall) / base:.1%}" if overlap else ""
        print(f"{mode:<6} {str(overlap):<8} {wall:>8.2f} {n:>7} {err:>8.4f} {saved:>8}")


if __name__ == "__main__":
    main()
