"""Flow: samplers x images x coverages x seeds on Dask; the coverage-vs-NRMSE/SSIM table and figure (FAST paper, Fig. 2 style)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.runtime import dask_runner, run_script
from tasks.benchmarking import benchmark_case


@flow(name="benchmark-on-dask")
def _sweep(samplers: list[str], images: list[str], coverages: list[float], seeds: list[int], batch_size: int,
           recon: str, noise: str | None, max_side: int | None) -> list[dict[str, Any]]:
    cases = [(s, im, seed) for im in images for s in samplers for seed in seeds]
    # adaptive cases take longest: submitted first, so that workers finish together
    order = sorted(range(len(cases)), key=lambda i: cases[i][0].strip().lower() != "fast")
    futures = {i: benchmark_case.submit(cases[i][0], cases[i][1], coverages, cases[i][2], batch_size, recon, noise,
                                        max_side) for i in order}
    return [row for i in range(len(cases)) for row in futures[i].result()]


@flow(name="benchmark-samplers")
def benchmark_samplers(
    samplers: list[str] = ["fast", "halton", "random", "raster"],  # noqa: B006 - copied per run by Prefect
    images: list[str] = ["flakes", "coins", "cell"],  # noqa: B006
    coverages: list[float] = [0.05, 0.1, 0.15, 0.2, 0.3],  # noqa: B006
    seeds: list[int] = [0],  # noqa: B006
    batch_size: int = 50,
    recon: str = "idw",
    noise: str | None = None,
    max_side: int | None = 256,
    out: str | None = None,
    publish: bool = True,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Compare samplers on images: one task per (sampler, image, seed), spread over Dask workers.

    Images are bundled sample names, ``phantom:seed`` (e.g. ``lattice:5``) or files, downscaled to
    ``max_side``. Writes ``results.json``, ``results.zarr``, ``table.md`` and ``curves.png`` to ``out``
    (default: a new ``benchmark-<time>`` folder in the data folder), shows the table as a Prefect artifact
    and publishes the results dataset to Tiled.
    """
    from prefect.artifacts import create_markdown_artifact

    from fastflow import benchmark
    from fastflow.errors import InputError
    from fastflow.recon import check_methods
    from fastflow.runs import runs_root
    from flows.adaptive_scan import tiled_target
    from tasks.publishing import publish_dataset

    samplers, images, coverages, seeds = benchmark.check_sweep(samplers, images, coverages, seeds)
    check_methods(recon)
    if noise not in (None, "", "none"):
        from fastflow.instruments.simulated import parse_noise

        parse_noise(noise)
    name = "benchmark-" + time.strftime("%Y%m%d-%H%M%S")
    folder = Path(out) if out else runs_root() / name
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"output folder {folder} already exists and is not empty; choose a new one")
    t0 = time.perf_counter()
    rows = _sweep.with_options(task_runner=dask_runner(dask_address, n_workers))(
        samplers, images, coverages, seeds, batch_size, recon, noise, max_side)
    sweep_s = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    table = benchmark.markdown_table(rows)
    ds = benchmark.results_dataset(rows)
    ds.attrs.update({"kind": "benchmark", "name": folder.name, "recon": recon, "batch_size": batch_size,
                     "noise": noise or "none", "max_side": max_side or 0, "sweep_wall_time_s": sweep_s})
    ds.to_zarr(folder / "results.zarr", mode="w", consolidated=False, zarr_format=3)
    (folder / "results.json").write_text(json.dumps(rows, indent=1))
    (folder / "table.md").write_text(table + "\n")
    figure = benchmark.plot_results(rows, folder / "curves.png")
    create_markdown_artifact(f"# Sampler benchmark ({recon} reconstruction)\n\n{table}\n\nFolder: `{folder}`",
                             key="benchmark-table", description="Mean NRMSE and SSIM over seeds")
    result: dict[str, Any] = {"folder": str(folder), "table": table, "figure": figure, "rows": rows,
                              "sweep_wall_time_s": sweep_s}
    if publish:
        uri, key = tiled_target(tiled_uri, api_key)
        result["tiled"] = {"key": publish_dataset(str(folder / "results.zarr"), folder.name, uri, key,
                                                  None if uri else str(folder.parent)), "uri": uri}
    return result


if __name__ == "__main__":
    run_script(benchmark_samplers)
