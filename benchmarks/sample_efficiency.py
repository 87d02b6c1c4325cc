"""Sample efficiency of FAST against static patterns on held-out images (none used in training).

Scoring follows the FAST paper: the measured pixels are inpainted biharmonically and compared with the
ground truth (NRMSE with euclidean normalisation, SSIM with the truth's data range). Static patterns are
drawn for exactly the same number of distinct pixels. FAST runs one scan per coverage, stopped there (as
``fastflow scan --stop-coverage C`` does); ``--progressive`` scores one scan to the largest coverage on its way
instead. Prints one table; ``--json FILE`` also saves it.

    python benchmarks/sample_efficiency.py                 # the full table (several minutes)
    python benchmarks/sample_efficiency.py --recon idw     # quick, IDW scoring
    python benchmarks/sample_efficiency.py --cases noisy-lattice@7,noisy-lattice@9   # other lattice spacings
    python benchmarks/sample_efficiency.py --cases lattice:1,noisy-particles:2       # other phantom seeds
    python benchmarks/sample_efficiency.py --cases noisy-particles --seed 0,1,2,3,4   # mean over noise draws
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fastflow import phantoms
from fastflow.evaluate import simulate
from fastflow.grid import ScanGrid
from fastflow.images import load_sample
from fastflow.sampling.registry import make_sampler

PHANTOM_SEED = 5
LATTICES = {"lattice": 6.0, "noisy-lattice": 8.0}   # default spacing (px) of the lattice cases
FIXED = ("flakes", "coins", "cell")                 # cases without a phantom seed


def _lattice(seed: int, spacing: float):
    return phantoms.lattice((256, 256), spacing=spacing, seed=seed)


# name -> (image from (phantom seed, lattice spacing), measurement noise): sparse samples where adaptive
# sampling should win, then dense/noisy ones
CASES = {
    "flakes": (lambda seed, spacing: phantoms.flakes(), None),
    "coins": (lambda seed, spacing: load_sample("coins")[0], None),
    "cell": (lambda seed, spacing: load_sample("cell")[0], None),
    "lattice": (_lattice, None),
    "noisy-particles": (lambda seed, spacing: phantoms.particles((256, 256), seed=seed), "poisson:20"),
    "noisy-lattice": (_lattice, "gaussian:0.05"),
}


def make_case(name: str):
    """``(make_image, noise)`` of a case of CASES; ``lattice@S`` / ``noisy-lattice@S``: those lattices with
    spacing ``S`` pixels; a ``:SEED`` suffix draws a phantom case (lattices, noisy-particles) with another
    phantom seed."""
    base, _, seed = name.partition(":")
    base, _, spacing = base.partition("@")
    if (base not in CASES or (spacing and base not in LATTICES) or (seed and base in FIXED)
            or (seed and not seed.isdigit())):
        raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}, lattice@S, noisy-lattice@S, "
                         "and :SEED after a phantom case")
    make, noise = CASES[base]
    phantom_seed = int(seed) if seed else PHANTOM_SEED
    size = float(spacing) if spacing else LATTICES.get(base)
    return (lambda: make(phantom_seed, size)), noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--samplers", default="fast,halton,random,raster")
    parser.add_argument("--coverages", default="0.1,0.2")
    parser.add_argument("--recon", default="biharmonic")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", default="0",
                        help="seed of the samplers and of the measurement noise; several (0,1,2) are averaged")
    parser.add_argument("--model", default=None, help="ERD model file for fast (default: the shipped one)")
    parser.add_argument("--progressive", action="store_true",
                        help="one FAST scan to the largest coverage, scored at each coverage on the way")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    coverages = [float(c) for c in args.coverages.split(",")]
    seeds = [int(s) for s in args.seed.split(",")]
    rows = []
    print(f"recon={args.recon} batch={args.batch_size} seeds={args.seed}")
    print(f"{'image':<16} {'sampler':<8} {'seed':>4} {'cover':>6} {'NRMSE':>8} {'SSIM':>7} {'time s':>7}")
    for case in args.cases.split(","):
        make_image, noise = make_case(case)
        image = make_image()
        grid = ScanGrid(image.shape)
        for name in args.samplers.split(","):
            options = {"model": args.model} if name == "fast" and args.model else {}
            for seed in seeds:
                t0 = time.perf_counter()
                # one scan per coverage, whose stop rule is that coverage (FAST plans its fill for it), unless
                # --progressive: FAST scans once to the largest coverage and is scored on the way
                runs = [coverages] if name == "fast" and args.progressive else [[c] for c in coverages]
                for covs in runs:
                    sampler = make_sampler(name, grid, coverage=max(covs), seed=seed, **options)
                    for r in simulate(sampler, image, covs, batch_size=args.batch_size, recon=args.recon,
                                      noise=noise, seed=seed):
                        rows.append({"image": case, "sampler": name, "noise": noise, "seed": seed, **r})
                        print(f"{case:<16} {name:<8} {seed:>4} {r['coverage']:>6.1%} {r['nrmse']:>8.4f} "
                              f"{r['ssim']:>7.4f} {time.perf_counter() - t0:>7.1f}", flush=True)
    over = f", mean over seeds {args.seed}" if len(seeds) > 1 else ""
    print(f"\nverdict (NRMSE{over}; FAST vs the best static pattern at each coverage):")
    for case in args.cases.split(","):
        for cov in coverages:
            at = [r for r in rows if r["image"] == case and abs(r["coverage"] - cov) < 1e-3]
            mean = {name: float(np.mean([r["nrmse"] for r in at if r["sampler"] == name]))
                    for name in {r["sampler"] for r in at}}
            static = {name: v for name, v in mean.items() if name != "fast"}
            if "fast" in mean and static:
                best = min(static, key=static.get)
                ratio = mean["fast"] / static[best]
                per_seed = [next(r["nrmse"] for r in at if r["sampler"] == "fast" and r["seed"] == s)
                            / min(r["nrmse"] for r in at if r["sampler"] != "fast" and r["seed"] == s)
                            for s in seeds]
                spread = f"  per seed {min(per_seed):.3f}-{max(per_seed):.3f}" if len(seeds) > 1 else ""
                print(f"  {case:<16} {cov:>5.0%}: fast {mean['fast']:.4f} vs {best} {static[best]:.4f}"
                      f"  ratio {ratio:.3f}  ({'wins' if ratio < 1 else 'loses'}){spread}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
