"""A scan-store writer for the crash-safety test: appends deterministic batches until killed.

Usage: python crash_writer.py STORE BATCH_SIZE MAX_POINTS

Point number k (over the whole scan) is pixel k of a 64x64 grid in row-major order with value
``value_of(k)``; the writer resumes from what the store holds, so it can be killed and restarted. After
each commit it prints the committed count, flushed, so the test knows what must survive.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fastflow.grid import ScanGrid
from fastflow.store import ScanStore, is_scan_store

GRID = ScanGrid((64, 64), pixel_size=(0.25, 0.25), units="um")


def value_of(k: np.ndarray) -> np.ndarray:
    """Value and channels of point number k."""
    k = np.asarray(k, dtype=np.float64)
    return np.stack([k * 0.5 + 1.0, -k], axis=-1)


def main() -> None:
    path, batch, max_points = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if is_scan_store(path):
        store = ScanStore.open(path, "a")
    else:
        store = ScanStore.create(path, GRID, channels=("signal", "monitor"), attrs={"writer": "crash-test"})
    while store.n_points < max_points:
        k = np.arange(store.n_points, min(store.n_points + batch, max_points))
        store.append(GRID.unravel(k), value_of(k), times=k * 0.01)
        print(store.n_points, flush=True)
    store.close("done")
    print("closed", flush=True)


if __name__ == "__main__":
    main()
