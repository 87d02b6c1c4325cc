"""Learned completion against IDW, linear, cubic and biharmonic inpainting on held-out images; calibration; speed.

    python benchmarks/inpainting.py                         # quality, uncertainty, defects, anchor, speed
    python benchmarks/inpainting.py --part quality --classes stem,flakes --families spiral,random
    python benchmarks/inpainting.py --part speed            # 600x400, 2048^2, 4096^2 with peak memory
    python benchmarks/inpainting.py --part speed --speed-cases 400x600@0.2,4096x4096@0.1 --speed-methods learned
    python benchmarks/inpainting.py --model DIR/model.safetensors
    python benchmarks/inpainting.py --cache /tmp/inpainting-cache   # keep masks and baseline scores

Held-out images (no training set or model selection uses them; see ``fastflow/recon/learned_data.py``):
generic = scikit-image's astronaut (grey, 256x320 crop); flakes = the flakes phantom seed 0 at 256x384;
coins (303x384); cell (downscaled to 330x275); stem = STEM-like images of seeds 11, 12 (256x256, with
vacancies, substitutions, boundaries); noisy = particles seed 3 with Poisson noise (20 counts at peak)
and a STEM-like image (seed 13) with Poisson noise (200 counts). Masks: raster, random, halton, spiral,
lissajous, lines and FAST (the adaptive sampler run on the image). Coverages: 1/87, 1/50, 1/17.9, 10 %,
20 %, 50 %. Errors are against the noise-free truth: NRMSE as everywhere in fastflow, and RMS % (the
truth min-max scaled to [0, 1], as in partial STEM; the paper's own convention, a truth blurred by a 5x5
Gaussian of sigma 2.5, is printed for the anchor too).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

import numpy as np

COVERAGES = (1 / 87, 1 / 50, 1 / 17.9, 0.10, 0.20, 0.50)
FAMILIES = ("raster", "random", "halton", "spiral", "lissajous", "lines", "fast")
METHODS = ("idw", "linear", "cubic", "biharmonic", "learned")


def held_out_images() -> dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]]:
    """``class -> [(name, truth, measured image, defect labels or None)]``."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    from fastflow import phantoms
    from fastflow.images import load_sample
    from fastflow.stem import scan_noise, stem_image

    astronaut = rgb2gray(skimage.data.astronaut())[100:356, 96:416]
    cell = rescale(load_sample("cell")[0], 0.5, anti_aliasing=True)
    stems = [stem_image((256, 256), seed=s) for s in (11, 12)]
    noisy_particles = phantoms.particles((256, 256), seed=3)
    noisy_stem = stem_image((256, 256), seed=13)
    return {
        "generic": [("astronaut", astronaut, astronaut, None)],
        "flakes": [("flakes:0", phantoms.flakes((256, 384), seed=0), None, None)],
        "coins": [("coins", load_sample("coins")[0], None, None)],
        "cell": [("cell", cell, None, None)],
        "stem": [(f"stem:{s}", st.image, None, st.defects) for s, st in zip((11, 12), stems)],
        "noisy": [("particles:3 poisson:20", noisy_particles, scan_noise(noisy_particles, 3, dose=20), None),
                  ("stem:13 poisson:200", noisy_stem.image, scan_noise(noisy_stem.image, 13, dose=200),
                   noisy_stem.defects)],
    }


def _rms_percent(truth: np.ndarray, estimate: np.ndarray) -> float:
    lo, hi = float(truth.min()), float(truth.max())
    return 100.0 * float(np.sqrt(np.mean(((estimate - truth) / max(hi - lo, 1e-12)) ** 2)))


def _blurred_rms_percent(truth: np.ndarray, estimate: np.ndarray) -> float:
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(truth, 2.5, truncate=2 / 2.5)  # a 5x5 kernel, sigma 2.5
    lo, hi = float(truth.min()), float(truth.max())
    return 100.0 * float(np.sqrt(np.mean(((estimate - blurred) / max(hi - lo, 1e-12)) ** 2)))


class _Cache:
    """Masks and baseline scores kept between runs (``--cache DIR``), so that a new model is scored without
    redrawing FAST masks or re-running biharmonic inpainting; keyed by image, family, coverage and seed."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        self.scores: dict[str, dict] = {}
        if folder and os.path.exists(os.path.join(folder, "scores.json")):
            with open(os.path.join(folder, "scores.json")) as fh:
                self.scores = json.load(fh)

    def mask(self, key: str, shape: tuple[int, int], draw) -> np.ndarray:
        if not self.folder:
            return draw()
        path = os.path.join(self.folder, "masks", key.replace("/", "_") + ".npy")
        if os.path.exists(path):
            return np.unpackbits(np.load(path))[: shape[0] * shape[1]].reshape(shape).astype(bool)
        mask = draw()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, np.packbits(mask.ravel()))
        return mask

    def save(self) -> None:
        if self.folder:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, "scores.json"), "w") as fh:
                json.dump(self.scores, fh)


def quality(classes, families, coverages, model, seed: int, cache: _Cache | None = None,
            methods: tuple[str, ...] = METHODS, check: bool = True) -> list[dict]:
    from fastflow.grid import ScanGrid
    from fastflow.metrics import nrmse, ssim, uncertainty_scores
    from fastflow.recon import reconstruct
    from fastflow.recon.base import prepare_measurements
    from fastflow.recon.masks import scan_mask
    from fastflow.stem import DEFECT_LABELS

    cache = cache or _Cache(None)
    rows = []
    images = held_out_images()
    for image_class in classes:
        for name, truth, measured, defects in images[image_class]:
            source = truth if measured is None else measured
            grid = ScanGrid(truth.shape)
            for family in families:
                for coverage in coverages:
                    key = f"{name}|{family}|{coverage:.6g}|{seed}"
                    draw = functools.partial(scan_mask, family, truth.shape, coverage, seed=seed, image=source)
                    mask = cache.mask(key, truth.shape, draw)
                    idx = np.argwhere(mask)
                    values = source[mask]
                    row = {"class": image_class, "image": name, "family": family, "coverage": coverage}
                    for method in methods:
                        if method != "learned" and f"{key}|{method}" in cache.scores:
                            row.update(cache.scores[f"{key}|{method}"])
                            continue
                        t0 = time.perf_counter()
                        if method == "learned":
                            estimate, sigma, found = model.complete_checked(prepare_measurements(grid, idx, values),
                                                                            check=check)
                            row["learned_weight"] = found.network_weight
                            row["learned_weights"] = found.weights
                        else:
                            estimate = reconstruct(grid, idx, values, method=method)
                        row[f"{method}_s"] = time.perf_counter() - t0
                        row[f"{method}_nrmse"] = nrmse(truth, estimate)
                        row[f"{method}_ssim"] = ssim(truth, estimate)
                        row[f"{method}_rms"] = _rms_percent(truth, estimate)
                        if method != "learned":
                            cache.scores[f"{key}|{method}"] = {k: v for k, v in row.items() if k.startswith(method)}
                            cache.save()
                        if method == "learned":
                            row["learned_rms_blurred"] = _blurred_rms_percent(truth, estimate)
                            unc = uncertainty_scores(truth, estimate, sigma, ~mask)
                            row.update({f"unc_{k}": v for k, v in unc.items()})
                            if defects is not None:
                                free = ~mask
                                err = np.abs(estimate - truth)
                                lattice = free & (defects == DEFECT_LABELS["lattice"])
                                point = free & np.isin(defects, [DEFECT_LABELS["vacancy"], DEFECT_LABELS["substitution"]])
                                boundary = free & (defects == DEFECT_LABELS["boundary"])
                                for part, where in (("lattice", lattice), ("point", point), ("boundary", boundary)):
                                    if where.any():
                                        row[f"defect_{part}_rmse"] = float(np.sqrt(np.mean(err[where] ** 2)))
                                        row[f"defect_{part}_sigma"] = float(sigma[where].mean())
                    rows.append(row)
                    print(f"{image_class:<8} {name:<24} {family:<10} {coverage:7.4f}  "
                          + "  ".join(f"{m} {row[f'{m}_nrmse']:.4f}" for m in methods)
                          + (f"  learned/biharmonic {row['learned_nrmse'] / row['biharmonic_nrmse']:.3f}"
                             f"  in90 {row.get('unc_coverage90', float('nan')):.3f}  w {row.get('learned_weight', 1):.2f}" if "learned" in methods else ""),
                          flush=True)
    return rows


def _ratio_table(rows: list[dict], key: str, coverages: list[float]) -> None:
    """Mean (worst) learned / biharmonic NRMSE per value of ``key`` and coverage."""
    for value in dict.fromkeys(r[key] for r in rows):
        cells = []
        for c in coverages:
            ratios = [r["learned_nrmse"] / r["biharmonic_nrmse"] for r in rows if r[key] == value and r["coverage"] == c]
            cells.append(f"{np.mean(ratios):>8.3f} ({max(ratios):.2f})" if ratios else f"{'-':>15}")
        print(f"{value:<10}" + "".join(f"{x:>15}" for x in cells))


def summarise(rows: list[dict]) -> None:
    coverages = sorted({r["coverage"] for r in rows})
    classes = list(dict.fromkeys(r["class"] for r in rows))
    header = f"{'':<10}" + "".join(f"{'1/' + format(1 / c, '.1f') if c < 0.1 else format(c, '.0%'):>15}" for c in coverages)
    print("\n# learned / biharmonic NRMSE: mean (worst) over mask families, per class and coverage")
    print(header)
    _ratio_table(rows, "class", coverages)
    print("\n# learned / biharmonic NRMSE: mean (worst) over images, per mask family and coverage")
    print(header)
    _ratio_table(rows, "family", coverages)
    print("\n# uncertainty per class: share of unmeasured pixels in the 90 % interval (min-max), Spearman (min)")
    for image_class in classes:
        sel = [r for r in rows if r["class"] == image_class and "unc_coverage90" in r]
        if sel:
            cov = [r["unc_coverage90"] for r in sel]
            rho = [r["unc_spearman"] for r in sel if np.isfinite(r["unc_spearman"])]
            print(f"{image_class:<9} in90 mean {np.mean(cov):.3f} ({min(cov):.3f}-{max(cov):.3f})  "
                  f"spearman mean {np.mean(rho):.3f} (min {min(rho):.3f})")
    sel = [r for r in rows if "defect_point_rmse" in r]
    if sel:
        print("\n# defects (STEM-like, unmeasured pixels): RMSE and mean sigma at lattice / point defects / boundaries")
        for part in ("lattice", "point", "boundary"):
            vals = [(r[f"defect_{part}_rmse"], r[f"defect_{part}_sigma"]) for r in sel if f"defect_{part}_rmse" in r]
            if vals:
                e, s = np.mean(vals, axis=0)
                print(f"{part:<9} rmse {e:.4f}  sigma {s:.4f}  ({len(vals)} cases)")
        higher = sum(r["defect_point_sigma"] > r["defect_lattice_sigma"] for r in sel)
        print(f"point-defect sigma above lattice sigma in {higher} of {len(sel)} cases")
    anchor = [r for r in rows if r["class"] == "stem" and r["family"] == "spiral"]
    if anchor:
        print("\n# anchor: STEM-like, spiral scans, learned RMS % (noise-free truth | 5x5-blurred truth, the paper's)")
        for c in sorted({r["coverage"] for r in anchor}):
            sel = [r for r in anchor if r["coverage"] == c]
            print(f"1/{1 / c:5.1f}  {np.mean([r['learned_rms'] for r in sel]):.2f} % | "
                  f"{np.mean([r['learned_rms_blurred'] for r in sel]):.2f} %   biharmonic "
                  f"{np.mean([r['biharmonic_rms'] for r in sel]):.2f} %")


def flat_background(model, seed: int) -> None:
    """A flat field with noise: the learned image must be no further from the truth than biharmonic."""
    from fastflow.grid import ScanGrid
    from fastflow.recon import biharmonic
    from fastflow.recon.learned import learned
    from fastflow.recon.masks import scan_mask

    rng = np.random.default_rng(seed)
    truth = np.full((256, 256), 0.2)
    print("\n# flat background with noise: RMS error against the flat truth")
    for noise in ("gaussian 0.02", "poisson 30"):
        measured = truth + rng.normal(0, 0.02, truth.shape) if noise.startswith("gaussian") else \
            rng.poisson(truth * 30 / 0.2) * 0.2 / 30
        for coverage in (0.02, 0.1):
            mask = scan_mask("random", truth.shape, coverage, seed=seed)
            idx, values = np.argwhere(mask), measured[mask]
            grid = ScanGrid(truth.shape)
            ours = np.sqrt(np.mean((learned(grid, idx, values, model=model) - truth) ** 2))
            theirs = np.sqrt(np.mean((biharmonic(grid, idx, values) - truth) ** 2))
            print(f"{noise:<14} {coverage:5.2f}  learned {ours:.4f}  biharmonic {theirs:.4f}")


_SPEED_CHILD = """
import json, resource, sys, time
import numpy as np
from fastflow.grid import ScanGrid
from fastflow.recon import reconstruct
ny, nx, coverage, method, model = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
rng = np.random.default_rng(0)
grid = ScanGrid((ny, nx))
n = int(coverage * grid.size)
flat = rng.choice(grid.size, n, replace=False)
y, x = np.divmod(flat, nx)
values = np.sin(y / 17.0) * np.cos(x / 23.0)
options = {"model": model} if method == "learned" and model != "-" else {}
seconds = []
for _ in range(2):  # the first call also reads the model and sets up torch's kernels
    t0 = time.perf_counter()
    reconstruct(grid, np.column_stack([y, x]), values, method=method, **options)
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"first": seconds[0], "seconds": seconds[1],
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


SPEED_CASES = "400x600@0.05,400x600@0.2,400x600@0.5,2048x2048@0.05,4096x4096@0.01,4096x4096@0.1"
SPEED_METHODS = ("learned", "idw", "linear", "cubic", "biharmonic")


def _speed_cases(text: str) -> list[tuple[int, int, float]]:
    """``"400x600@0.05,..."`` -> ``[(400, 600, 0.05), ...]``."""
    cases = []
    for item in text.split(","):
        size, _, coverage = item.partition("@")
        ny, _, nx = size.partition("x")
        cases.append((int(ny), int(nx), float(coverage)))
    return cases


def speed(model_path: str | None, cases: list[tuple[int, int, float]] | None = None,
          methods: tuple[str, ...] = SPEED_METHODS) -> None:
    print("\n# speed (one process each; wall time of the second of two reconstructions and of the first, which "
          "also reads the model; peak resident memory of the process)")
    print(f"{'method':<10} {'grid':>11} {'cover':>6} {'seconds':>8} {'first s':>8} {'peak GB':>8}")
    cases = cases or _speed_cases(SPEED_CASES)
    for method in methods:
        for ny, nx, coverage in cases:
            if method == "biharmonic" and ny > 400:
                continue  # minutes to hours at these sizes
            out = subprocess.run([sys.executable, "-c", _SPEED_CHILD, str(ny), str(nx), str(coverage), method,
                                  model_path or "-"], capture_output=True, text=True, timeout=3600)
            if out.returncode:
                print(f"{method:<10} {ny}x{nx}: failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{method:<10} {f'{ny}x{nx}':>11} {coverage:>6.2f} {r['seconds']:>8.2f} {r['first']:>8.2f} "
                  f"{r['peak_gb']:>8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="quality,flat,speed", help="quality, flat, speed (comma-separated)")
    parser.add_argument("--classes", default="generic,flakes,coins,cell,stem,noisy")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--coverages", default=",".join(f"{c:.6g}" for c in COVERAGES))
    parser.add_argument("--model", default=None, help="model file (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the quality rows to this file")
    parser.add_argument("--cache", default=None, help="folder keeping masks and baseline scores between runs")
    parser.add_argument("--speed-cases", default=SPEED_CASES, help="grids and coverages timed, as YxX@coverage,...")
    parser.add_argument("--speed-methods", default=",".join(SPEED_METHODS), help="methods timed")
    parser.add_argument("--no-check", action="store_true",
                        help="score the network alone (no self-check blend with the interpolations)")
    parser.add_argument("--baselines-only", action="store_true", help="fill the cache with the baselines only")
    args = parser.parse_args()
    from fastflow.recon.learned import LearnedModel

    parts = args.part.split(",")
    cache = _Cache(args.cache)
    if args.baselines_only:
        quality(args.classes.split(","), args.families.split(","), [float(c) for c in args.coverages.split(",")],
                None, args.seed, cache, methods=tuple(m for m in METHODS if m != "learned"))
        return
    model = LearnedModel.load(args.model)
    print(model.describe())
    card = model.card.get("training", {})
    print(f"training: {card.get('seconds', '?')} s, {card.get('steps', '?')} steps, hardware {model.card.get('hardware')}")
    if "quality" in parts:
        rows = quality(args.classes.split(","), args.families.split(","),
                       [float(c) for c in args.coverages.split(",")], model, args.seed, cache,
                       check=not args.no_check)
        summarise(rows)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    if "flat" in parts:
        flat_background(model, args.seed)
    if "speed" in parts:
        speed(args.model, _speed_cases(args.speed_cases), tuple(args.speed_methods.split(",")))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
