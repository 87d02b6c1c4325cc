"""How much the regularity of a static pattern is worth on a noisy dense texture (biharmonic scoring).

Scores, at one coverage, a raster, a quincunx lattice of the same density (every other point of the raster
at twice the coverage), the raster with every point jittered by up to ``--jitter`` pixels, and Halton, all
on the same noisy lattice phantom, reconstructed biharmonically and compared with the noise-free image
(NRMSE, as in ``benchmarks/sample_efficiency.py``). This is the limit a progressive sampler such as FAST
meets there: at an intermediate coverage it cannot be the raster drawn for exactly that coverage.

    python benchmarks/pattern_regularity.py [--spacing 8] [--sigma 0.05] [--coverage 0.1] [--size 256]
"""

from __future__ import annotations

import argparse

import numpy as np

from fastflow import phantoms
from fastflow.grid import ScanGrid
from fastflow.metrics import nrmse
from fastflow.recon import reconstruct
from fastflow.sampling.static import halton_pattern, raster_grid_pattern


def quincunx(shape: tuple[int, int], n: int) -> np.ndarray:
    """Every other point (checkerboard by row and column rank) of the raster of ``2 n`` pixels."""
    full = raster_grid_pattern(shape, min(2 * n, shape[0] * shape[1]))
    row_rank = np.searchsorted(np.unique(full[:, 0]), full[:, 0])
    col_rank = np.empty(len(full), dtype=np.int64)
    for y in np.unique(full[:, 0]):
        on_row = np.flatnonzero(full[:, 0] == y)
        col_rank[on_row] = np.argsort(np.argsort(full[on_row, 1]))
    return full[(row_rank + col_rank) % 2 == 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spacing", type=float, default=8.0, help="lattice spacing, pixels (default 8)")
    parser.add_argument("--sigma", type=float, default=0.05, help="Gaussian noise (default 0.05)")
    parser.add_argument("--coverage", type=float, default=0.1, help="coverage (default 0.1)")
    parser.add_argument("--size", type=int, default=256, help="image side, pixels (default 256)")
    parser.add_argument("--jitter", type=int, default=1, help="raster jitter, pixels (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    image = phantoms.lattice((args.size, args.size), spacing=args.spacing, seed=5)
    rng = np.random.default_rng(args.seed)
    noisy = image + rng.normal(0.0, args.sigma, image.shape)
    grid = ScanGrid(image.shape)
    n = round(args.coverage * image.size)
    raster = raster_grid_pattern(image.shape, n)
    jittered = np.unique(np.clip(raster + rng.integers(-args.jitter, args.jitter + 1, raster.shape), 0,
                                 np.array(image.shape) - 1), axis=0)
    patterns = {
        "raster": raster,
        "quincunx": quincunx(image.shape, n),
        f"raster, jitter {args.jitter} px": jittered,
        "halton": halton_pattern(image.shape, n, seed=args.seed),
    }
    print(f"lattice spacing {args.spacing:g}, noise sigma {args.sigma:g}, {args.size}x{args.size}, "
          f"coverage {args.coverage:.0%}, biharmonic")
    print(f"{'pattern':<22} {'coverage':>8} {'NRMSE':>8}")
    for name, idx in patterns.items():
        rec = reconstruct(grid, idx, noisy[idx[:, 0], idx[:, 1]], method="biharmonic")
        print(f"{name:<22} {len(idx) / image.size:>8.2%} {nrmse(image, rec):>8.4f}")


if __name__ == "__main__":
    main()
