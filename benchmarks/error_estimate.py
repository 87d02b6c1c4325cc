"""Error estimate (issue 15, first measurement): how well does cross-validation on the measured points predict
the reconstruction's true NRMSE?

For every image, each sampler (``fast``, ``random``, ``halton``) scans to 30 % coverage on the simulated
instrument; at each coverage of ``COVERAGES`` the script records

- ``cv``: leave-one-out residuals of the measured values, each predicted by inverse-distance weighting (power
  2) from its ``k`` nearest *other* measured points, as an RMS weighted by the squared distance to the nearest
  other point (an area weight: adaptive samplers crowd edges, where residuals are large) and divided by
  the equally weighted RMS of the values (NRMSE divides by ``||truth||``);
- the true NRMSE of the IDW and the biharmonic reconstructions.

It fits ``log(true) = a + b log(cv) + c log(coverage)`` per sampler family (adaptive / static) and method on the
training images (the ERD model's training and validation images, longer side 192 px) and reports, on the
held-out cases of ``time_to_quality.py`` (none of them trained on), the share of snapshots from 5 % coverage
on whose estimate is within 25 % of the truth, the median and the largest relative error.

    python benchmarks/error_estimate.py            # about 30 minutes on 2 cores (the full-size cell image about 8)
    python benchmarks/error_estimate.py --json rows.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from fastflow.erd.fit import DEFAULT_TRAINING, DEFAULT_VALIDATION, load_image_set
from fastflow.grid import ScanGrid
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.metrics import nrmse
from fastflow.recon import reconstruct
from fastflow.sampling.registry import make_sampler

COVERAGES = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
FAMILIES = {"adaptive": ("fast",), "static": ("random", "halton")}
METHODS = ("idw", "biharmonic")


def cross_validation(indices: np.ndarray, values: np.ndarray, k: int = 8) -> float:
    """Area-weighted leave-one-out IDW residual of the measured values, over their area-weighted RMS."""
    tree = cKDTree(indices.astype(float))
    d, ids = tree.query(indices.astype(float), k=k + 1)
    d, ids = d[:, 1:], ids[:, 1:]                       # drop each point itself
    w = 1.0 / np.maximum(d, 1e-9) ** 2
    residual = values - (w * values[ids]).sum(1) / w.sum(1)
    area = d[:, 0] ** 2
    return float(np.sqrt(np.sum(area * residual**2) / np.sum(area * values**2)))


def scan_rows(name: str, image: np.ndarray, sampler_name: str, noise: str | None, seed: int = 0) -> list[dict[str, Any]]:
    """One scan to the largest coverage; the estimate's input and the true errors at each coverage."""
    grid = ScanGrid(image.shape)
    instrument = SimulatedInstrument(image, grid, noise=noise, seed=seed)
    sampler = make_sampler(sampler_name, grid, coverage=max(COVERAGES), seed=seed)
    indices, values, rows = [], [], []
    for coverage in COVERAGES:
        target = round(coverage * image.size)
        while sampler.n_measured < target and not sampler.done:
            batch = sampler.ask(min(50, target - sampler.n_measured))
            if len(batch) == 0:
                break
            measured = instrument.measure(batch)
            sampler.tell(batch, measured.values)
            indices.append(batch)
            values.append(measured.values[:, 0])
        idx, val = np.concatenate(indices), np.concatenate(values)
        row = {"image": name, "sampler": sampler_name, "coverage": coverage, "cv": cross_validation(idx, val)}
        for method in METHODS:
            row[f"true_{method}"] = nrmse(image, reconstruct(grid, idx, val, method=method))
        rows.append(row)
    return rows


def design(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[1.0, np.log(r["cv"]), np.log(r["coverage"])] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()

    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location("ttq", pathlib.Path(__file__).with_name("time_to_quality.py"))
    ttq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ttq)
    training = [(n, im, None) for n, im in load_image_set(list(DEFAULT_TRAINING) + list(DEFAULT_VALIDATION), 192).items()]
    held_out = [(n, make(), noise) for n, (make, noise) in ttq.CASES.items()]
    rows: dict[str, list[dict[str, Any]]] = {"training": [], "held_out": []}
    for part, cases in (("training", training), ("held_out", held_out)):
        for name, image, noise in cases:
            for sampler in ("fast", "random", "halton"):
                t0 = time.perf_counter()
                rows[part] += scan_rows(name, np.asarray(image, float), sampler, noise)
                print(f"{part:9s} {name:16s} {sampler:7s} {time.perf_counter() - t0:6.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)

    print("\n| method | samplers | a, b, c | held-out snapshots within 25 % | median rel. error | largest |")
    print("|---|---|---|---|---|---|")
    for method in METHODS:
        for family, names in FAMILIES.items():
            fit = [r for r in rows["training"] if r["sampler"] in names and r["coverage"] >= 0.05]
            test = [r for r in rows["held_out"] if r["sampler"] in names and r["coverage"] >= 0.05]
            coef, *_ = np.linalg.lstsq(design(fit), np.log([r[f"true_{method}"] for r in fit]), rcond=None)
            rel = np.abs(np.exp(design(test) @ coef) / np.array([r[f"true_{method}"] for r in test]) - 1)
            print(f"| {method} | {family} | {', '.join(f'{v:.3f}' for v in coef)} | {np.mean(rel < 0.25):.0%} "
                  f"| {np.median(rel):.1%} | {rel.max():.0%} |")


if __name__ == "__main__":
    main()
