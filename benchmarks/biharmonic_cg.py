"""The conjugate-gradient biharmonic solver against scikit-image's inpainting: error and time.

    python benchmarks/biharmonic_cg.py
    python benchmarks/biharmonic_cg.py --families random,lines --coverages 0.01,0.2

Images: the flakes phantom seed 4 (256x384) and a STEM-like image seed 21 (256x256); masks of the given
families and coverages (seed 2). For each case: NRMSE against the truth and seconds of
``skimage.restoration.inpaint_biharmonic`` (through ``fastflow.recon.biharmonic``), of
``fastflow.recon.biharmonic_cg.biharmonic_from_measurements`` started from the cubic interpolation (the
cubic's own time is not counted: the learned reconstruction has it already), and of the cubic start
alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="random,spiral,lines")
    parser.add_argument("--coverages", default="0.0115,0.056,0.2,0.5")
    args = parser.parse_args()

    from fastflow import phantoms
    from fastflow.grid import ScanGrid
    from fastflow.metrics import nrmse
    from fastflow.recon.base import prepare_measurements
    from fastflow.recon.biharmonic_cg import biharmonic_from_measurements
    from fastflow.recon.delaunay import cubic_from_measurements
    from fastflow.recon.inpaint import biharmonic
    from fastflow.recon.masks import scan_mask
    from fastflow.stem import stem_image

    images = {"flakes:4": phantoms.flakes((256, 384), seed=4), "stem:21": stem_image((256, 256), seed=21).image}
    print(f"{'image':<9} {'family':<8} {'coverage':>8}  {'skimage':>8} {'s':>6}  {'cg':>8} {'s':>6}  "
          f"{'cg/skimage':>10}  {'cubic':>8}")
    for name, truth in images.items():
        grid = ScanGrid(truth.shape)
        for family in args.families.split(","):
            for coverage in (float(c) for c in args.coverages.split(",")):
                mask = scan_mask(family, truth.shape, coverage, seed=2, image=truth)
                idx = np.argwhere(mask)
                m = prepare_measurements(grid, idx, truth[mask])
                start = cubic_from_measurements(m)
                t0 = time.perf_counter()
                reference = biharmonic(grid, idx, truth[mask])
                t1 = time.perf_counter()
                fast = biharmonic_from_measurements(m, start=start)
                t2 = time.perf_counter()
                e_ref, e_fast = nrmse(truth, reference), nrmse(truth, fast)
                print(f"{name:<9} {family:<8} {coverage:>8.4f}  {e_ref:>8.4f} {t1 - t0:>6.2f}  {e_fast:>8.4f} "
                      f"{t2 - t1:>6.2f}  {e_fast / e_ref:>10.3f}  {nrmse(truth, start):>8.4f}", flush=True)


if __name__ == "__main__":
    main()
