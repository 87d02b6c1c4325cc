"""Wall time of a ``benchmark_samplers`` sweep with 1 and 2 Dask workers, and what Prefect and Tiled add.

    python benchmarks/pipeline.py          # 4 samplers x 3 images x 5 coverages x 2 seeds, images at 384 px
    python benchmarks/pipeline.py --seeds 0 --max-side 256                  # a smaller sweep

Timings of the same cases:

* ``library``: one after the other in this process (:func:`fastflow.benchmark.run_case`): the work itself;
* ``dask, N workers``: the cases on a fresh local Dask cluster (start included), no Prefect, no Tiled;
* ``flow, N workers``: the ``benchmark_samplers`` flow end to end (its Dask cluster, task and flow runs,
  result files, figure, artifact, publication to the data folder's Tiled catalog).

Prefect/Tiled overhead = flow - dask with the same workers. Prefect runs against one temporary API server
started before the timings (its start-up, ~10 s, is not part of any sweep), and the data folder's Tiled
catalog is created beforehand (a facility's data folder has one; creating it takes 3-5 s once).
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
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    samplers, images = args.samplers.split(","), args.images.split(",")
    coverages = [float(c) for c in args.coverages.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    scratch = tempfile.mkdtemp(prefix="fastflow-pipeline-bench-")
    os.environ["FASTFLOW_DATA_DIR"] = scratch

    from fastflow.benchmark import run_case
    from flows.benchmark_samplers import benchmark_samplers
    from flows.runtime import quiet_dask, share_api_with_workers

    quiet_dask()
    share_api_with_workers()      # the temporary Prefect API, started once, outside every timing
    from fastflow.catalog import local_catalog

    with local_catalog(scratch):  # the data folder's Tiled catalog exists already, as at a facility
        pass
    cases = [(s, im, seed) for im in images for s in samplers for seed in seeds]
    print(f"sweep: {len(samplers)} samplers x {len(images)} images x {len(coverages)} coverages x {len(seeds)} "
          f"seeds ({len(cases)} tasks), images downscaled to {args.max_side} px; {os.cpu_count()} cores")
    t0 = time.perf_counter()
    for s, im, seed in cases:
        run_case(s, im, coverages, seed, max_side=args.max_side)
    library = time.perf_counter() - t0
    workers = [int(w) for w in args.workers.split(",")]
    plain, flow = {}, {}
    for n in workers:
        plain[n] = plain_dask(cases, coverages, args.max_side, n)
        t0 = time.perf_counter()
        benchmark_samplers(samplers=samplers, images=images, coverages=coverages, seeds=seeds,
                           max_side=args.max_side, out=os.path.join(scratch, f"bench-{n}"), n_workers=n)
        flow[n] = time.perf_counter() - t0
    print()
    print(f"{'run':<22} {'wall s':>8} {'speed-up':>9} {'Prefect+Tiled':>14}")
    print(f"{'library, sequential':<22} {library:>8.1f}")
    for n in workers:
        print(f"{f'dask, {n} worker(s)':<22} {plain[n]:>8.1f} {plain[workers[0]] / plain[n]:>8.2f}x")
    for n in workers:
        extra = flow[n] - plain[n]
        print(f"{f'flow, {n} worker(s)':<22} {flow[n]:>8.1f} {flow[workers[0]] / flow[n]:>8.2f}x "
              f"{extra:>6.1f} s {extra / flow[n]:>5.0%}")
    print("(speed-up against the first worker count; Prefect+Tiled = flow - dask with the same workers, "
          "as a share of the flow)")


def plain_dask(cases: list, coverages: list, max_side: int, n_workers: int) -> float:
    """The cases on a fresh local Dask cluster configured as the flows configure theirs; wall seconds."""
    import dask
    from distributed import Client, LocalCluster

    from fastflow.benchmark import run_case

    t0 = time.perf_counter()
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                         host="127.0.0.1") as cluster, Client(cluster) as client:
        order = sorted(cases, key=lambda c: c[0] != "fast")        # as the flow: adaptive cases first
        futures = [client.submit(run_case, s, im, coverages, seed, max_side=max_side, pure=False)
                   for s, im, seed in order]
        client.gather(futures)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
