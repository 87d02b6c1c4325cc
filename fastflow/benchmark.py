"""Sampler comparisons: samplers x images x coverages x seeds, as a table, a dataset and a figure.

This is how fastflow reproduces the FAST paper's comparison (coverage against NRMSE / SSIM for FAST,
raster, uniform random and low-discrepancy sampling). One *case* is a sampler on an image with one seed;
it passes through every coverage (an adaptive scan is one run; a static pattern is drawn afresh for each
coverage, with exactly the same number of pixels). Cases are independent, which is what the
``benchmark_samplers`` flow spreads over Dask workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.evaluate import simulate
from fastflow.grid import ScanGrid

METRICS = ("nrmse", "ssim", "psnr")


def held_out_cases() -> dict[str, tuple[Any, str | None]]:
    """The held-out benchmark cases, ``name -> (make_image, measurement noise)``: sparse (flakes, coins),
    smooth (cell), dense and noisy (lattice, noisy particles). None of them trains the ERD model or the
    error estimate; ``benchmarks/time_to_quality.py`` and ``benchmarks/error_estimate.py`` score them."""
    from fastflow import phantoms
    from fastflow.images import load_sample

    return {
        "flakes": (lambda: phantoms.flakes(), None),
        "coins": (lambda: load_sample("coins")[0], None),
        "cell": (lambda: load_sample("cell")[0], None),
        "lattice": (lambda: phantoms.lattice((256, 256), spacing=6.0, seed=5), None),
        "noisy-particles": (lambda: phantoms.particles((256, 256), seed=5), "poisson:20"),
        "noisy-lattice": (lambda: phantoms.lattice((256, 256), spacing=8.0, seed=5), "gaussian:0.05"),
    }


def load_case_image(name: str, max_side: int | None = None) -> np.ndarray:
    """A benchmark image: a bundled sample name, ``phantom:seed`` (e.g. ``lattice:5``) or a file."""
    from fastflow.erd.fit import load_image_set

    return load_image_set([name], max_side or 1 << 30)[name]


def check_sweep(samplers: Sequence[str], images: Sequence[str], coverages: Sequence[float],
                seeds: Sequence[int]) -> tuple[list[str], list[str], list[float], list[int]]:
    """Validate a sweep before anything runs: names exist, coverages in (0, 1], seeds >= 0."""
    from fastflow.sampling.protocol import check_coverage
    from fastflow.sampling.registry import available_samplers

    samplers, images = list(samplers), list(images)
    if not samplers or not images or not coverages or not seeds:
        raise InputError("a benchmark needs at least one sampler, image, coverage and seed")
    known = available_samplers()
    unknown = [s for s in samplers if s.strip().lower() not in known]
    if unknown:
        raise InputError(f"unknown sampler(s) {', '.join(unknown)}; available: {', '.join(known)}")
    for name in images:
        load_case_image(name, 64)                 # raises a clear error for an unknown image
    covs = sorted({check_coverage(c, "benchmark coverage") for c in coverages})
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise InputError(f"seeds must be non-negative integers; got {list(seeds)}")
    return samplers, images, covs, [int(s) for s in seeds]


def run_case(
    sampler: str,
    image_name: str,
    coverages: Sequence[float],
    seed: int = 0,
    *,
    batch_size: int = 50,
    recon: str = "idw",
    noise: str | None = None,
    max_side: int | None = 256,
) -> list[dict[str, Any]]:
    """Score one sampler on one image at every coverage; one row per coverage.

    Rows hold ``sampler``, ``image``, ``seed``, ``coverage``, ``n_points`` and the metrics.
    """
    from fastflow.sampling.registry import make_sampler

    image = load_case_image(image_name, max_side)
    grid = ScanGrid(image.shape)
    coverages = sorted(coverages)
    adaptive = sampler.strip().lower() == "fast"
    groups = [coverages] if adaptive else [[c] for c in coverages]
    rows = []
    for covs in groups:
        s = make_sampler(sampler, grid, coverage=max(covs), seed=seed)
        for row in simulate(s, image, covs, batch_size=batch_size, recon=recon, noise=noise, seed=seed):
            rows.append({"sampler": sampler, "image": image_name, "seed": int(seed), **row})
    return rows


def results_dataset(rows: Sequence[dict[str, Any]]) -> Any:
    """Rows as an :class:`xarray.Dataset` with dims ``(image, sampler, coverage, seed)``.

    Coverages are the requested ones (rounded to 1e-6); each case's exact coverage is in ``coverage_exact``.
    """
    import xarray as xr

    if not rows:
        raise InputError("no benchmark results")
    images = list(dict.fromkeys(r["image"] for r in rows))
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    coverages = sorted({round(r["coverage"], 6) for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    shape = (len(images), len(samplers), len(coverages), len(seeds))
    data = {name: np.full(shape, np.nan) for name in (*METRICS, "coverage_exact")}
    for r in rows:
        at = (images.index(r["image"]), samplers.index(r["sampler"]), coverages.index(round(r["coverage"], 6)),
              seeds.index(r["seed"]))
        for name in METRICS:
            data[name][at] = r.get(name, np.nan)
        data["coverage_exact"][at] = r["coverage"]
    dims = ("image", "sampler", "coverage", "seed")
    return xr.Dataset({k: (dims, v) for k, v in data.items()},
                      coords={"image": np.array(images, dtype=object), "sampler": np.array(samplers, dtype=object),
                              "coverage": coverages, "seed": seeds})


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Mean NRMSE and SSIM over seeds per image, sampler and coverage, as a markdown table.

    The best NRMSE of each image and coverage is in bold.
    """
    ds = results_dataset(rows).mean("seed")
    lines = ["| image | sampler | " + " | ".join(f"NRMSE @ {c:.0%}" for c in ds.coverage.values)
             + " | " + " | ".join(f"SSIM @ {c:.0%}" for c in ds.coverage.values) + " |",
             "|---|---|" + "---:|" * (2 * ds.sizes["coverage"])]
    for image in ds.image.values:
        best = ds.nrmse.sel(image=image).min("sampler").values
        for sampler in ds.sampler.values:
            cells = []
            for j, value in enumerate(ds.nrmse.sel(image=image, sampler=sampler).values):
                text = f"{value:.4f}"
                cells.append(f"**{text}**" if np.isclose(value, best[j]) else text)
            cells += [f"{v:.3f}" for v in ds.ssim.sel(image=image, sampler=sampler).values]
            lines.append(f"| {image} | {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_results(rows: Sequence[dict[str, Any]], path: str | Path) -> str:
    """Coverage against NRMSE (top) and SSIM (bottom), one column per image, one line per sampler (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ds = results_dataset(rows)
    mean, spread = ds.mean("seed"), ds.std("seed")
    n = ds.sizes["image"]
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n + 0.6, 6.2), squeeze=False, constrained_layout=True)
    for i, image in enumerate(ds.image.values):
        for row, metric in enumerate(("nrmse", "ssim")):
            ax = axes[row, i]
            for sampler in ds.sampler.values:
                y = mean[metric].sel(image=image, sampler=sampler).values
                e = spread[metric].sel(image=image, sampler=sampler).values
                ax.errorbar(ds.coverage.values * 100, y, yerr=e, marker="o", ms=3, capsize=2, label=sampler)
            ax.set_xlabel("coverage (%)")
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(image)
    axes[0, 0].legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
