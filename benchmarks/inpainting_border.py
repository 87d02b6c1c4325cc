"""Which completion is closest to the truth near the image's edge: the network, linear, cubic or biharmonic.

    python benchmarks/inpainting_border.py
    python benchmarks/inpainting_border.py --widths 2,4,8 --coverages 0.02,0.2

The measurement behind the self-check's border blend (``fastflow/recon/learned_check.py``, ``BORDER``):
development images that neither the training nor the held-out benchmark uses (flakes seed 7, particles
seed 9, grains seed 5, STEM-like seeds 31 and 33, scikit-image's chelsea; 256x256), each clean and with
Poisson noise (50 counts at the peak), through seven mask families at four coverages. For each band
width: how often each candidate has the lowest RMS error over the unmeasured pixels of the outer band,
and its mean RMS error there relative to the biharmonic interpolation.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="2,4,8")
    parser.add_argument("--families", default="random,spiral,halton,raster,lissajous,fast,lines")
    parser.add_argument("--coverages", default="0.02,0.1,0.2,0.5")
    parser.add_argument("--model", default=None, help="model file (default: the shipped one)")
    args = parser.parse_args()

    import skimage.data
    from skimage.color import rgb2gray

    from fastflow import phantoms
    from fastflow.grid import ScanGrid
    from fastflow.recon.base import prepare_measurements
    from fastflow.recon.learned import LearnedModel
    from fastflow.recon.learned_check import GUESSES, edge_distance, guess
    from fastflow.recon.learned_inputs import network_inputs
    from fastflow.recon.masks import scan_mask
    from fastflow.stem import scan_noise, stem_image

    model = LearnedModel.load(args.model)
    images = {"flakes:7": phantoms.flakes((256, 256), seed=7), "particles:9": phantoms.particles((256, 256), seed=9),
              "grains:5": phantoms.grains((256, 256), seed=5), "stem:31": stem_image((256, 256), seed=31).image,
              "stem:33": stem_image((256, 256), seed=33).image,
              "chelsea": rgb2gray(skimage.data.chelsea())[:256, :256]}
    widths = [int(w) for w in args.widths.split(",")]
    names = ("network", *GUESSES)
    wins: collections.Counter = collections.Counter()
    relative: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
    for truth in images.values():
        edge = edge_distance(truth.shape)
        for source in (truth, scan_noise(truth, 4, dose=50)):
            for family in args.families.split(","):
                for coverage in (float(c) for c in args.coverages.split(",")):
                    mask = scan_mask(family, truth.shape, coverage, seed=3, image=source)
                    m = prepare_measurements(ScanGrid(truth.shape), np.argwhere(mask), source[mask])
                    inputs, loc, scale = network_inputs(m)
                    mean, _ = model.predict_normalised(inputs)
                    candidates = [mean, *(guess(name, m, inputs, loc, scale) for name in GUESSES)]
                    for width in widths:
                        band = ~mask & (edge < width)
                        error = [float(np.sqrt(np.mean((c[band] * scale + loc - truth[band]) ** 2))) for c in candidates]
                        wins[(width, names[int(np.argmin(error))])] += 1
                        for name, e in zip(names, error):
                            relative[(width, name)].append(e / error[-1])
    scans = sum(wins[(widths[0], name)] for name in names)
    print(f"{scans} scans; outer band of the image, unmeasured pixels")
    print(f"{'band px':>7}  " + "  ".join(f"{name:>22}" for name in names))
    for width in widths:
        cells = [f"best {wins[(width, n)]:>3} x, {np.mean(relative[(width, n)]):.3f}x bih." for n in names]
        print(f"{width:>7}  " + "  ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
