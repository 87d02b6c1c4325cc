"""Wall time of a ``benchmark_samplers`` sweep with 1 and 2 Dask workers, and what Prefect, Dask and Tiled add.

    python benchmarks/pipeline.py                      # 4 samplers x 3 images x 5 coverages (the issue's sweep)
    python benchmarks/pipeline.py --images flakes --coverages 0.1,0.2   # a smaller one

Three timings of the same cases:

* ``library``: the cases one after the other in this process, no Prefect, no Dask, no Tiled
  (:func:`fastflow.benchmark.run_case`): the work itself;
* ``flow, 1 worker`` and ``flow, 2 workers``: the ``benchmark_samplers`` flow end to end (Dask cluster
  start, task runs, result files, figure, publication to the local Tiled catalog).

Overhead = (flow with 1 worker - library) / flow with 1 worker. Prefect runs against one temporary API
server started before the timings (its start-up, ~10 s, is not part of any sweep).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samplers", default="fast,halton,random,raster")
    parser.add_argument("--images", default="flakes,coins,cell")
    parser.add_argument("--coverages", default="0.05,0.1,0.15,0.2,0.3")
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    samplers, images = args.samplers.split(","), args.images.split(",")
    coverages = [float(c) for c in args.coverages.split(",")]
    scratch = tempfile.mkdtemp(prefix="fastflow-pipeline-bench-")
    os.environ["FASTFLOW_DATA_DIR"] = scratch

    from fastflow.benchmark import run_case
    from flows.benchmark_samplers import benchmark_samplers
    from flows.runtime import share_api_with_workers

    share_api_with_workers()      # the temporary Prefect API, started once, outside every timing
    n_cases = len(samplers) * len(images)
    print(f"sweep: {len(samplers)} samplers x {len(images)} images x {len(coverages)} coverages "
          f"({n_cases} tasks), images downscaled to {args.max_side} px; {os.cpu_count()} cores")
    t0 = time.perf_counter()
    for image in images:
        for sampler in samplers:
            run_case(sampler, image, coverages, 0, max_side=args.max_side)
    library = time.perf_counter() - t0
    timings = {}
    for n in [int(w) for w in args.workers.split(",")]:
        t0 = time.perf_counter()
        result = benchmark_samplers(samplers=samplers, images=images, coverages=coverages, seeds=[0],
                                    max_side=args.max_side, out=os.path.join(scratch, f"bench-{n}"), n_workers=n)
        timings[n] = (time.perf_counter() - t0, result["sweep_wall_time_s"])
    print()
    print(f"{'run':<22} {'wall s':>8} {'sweep s':>8} {'speed-up':>9}")
    print(f"{'library, sequential':<22} {library:>8.1f} {'':>8} {'':>9}")
    base = timings.get(1, (None,))[0]
    for n, (wall, sweep) in timings.items():
        speed = f"{base / wall:.2f}x" if base else ""
        print(f"{f'flow, {n} worker(s)':<22} {wall:>8.1f} {sweep:>8.1f} {speed:>9}")
    if base:
        print(f"\noverhead of Prefect + Dask + files + Tiled with 1 worker: {base - library:.1f} s "
              f"= {(base - library) / base:.0%} of the flow's wall time")
    print("(wall = the whole flow call; sweep = the Dask part: cluster start, task runs, results)")


if __name__ == "__main__":
    main()
