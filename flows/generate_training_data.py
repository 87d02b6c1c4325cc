"""Flow: ERD training data, images x coverages x seeds fanned out over Dask, written as one Zarr training set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.runtime import dask_runner, run_script
from tasks.training import assemble_training_set, make_training_chunk


def check_training_parameters(images: list[str], coverages: list[float], seeds: list[int],
                              c_values: list[float], rows: int, max_side: int) -> None:
    """Refuse bad parameters before any work starts."""
    import math

    from fastflow.erd.fit import load_image_set
    from fastflow.errors import InputError

    if not images or not coverages or not seeds or not c_values:
        raise InputError("training data needs at least one image, coverage, seed and c value")
    if any(not (isinstance(c, (int, float)) and 0 < c < 1) for c in coverages):
        raise InputError(f"training coverages must be fractions in (0, 1); got {coverages}")
    if any(not (isinstance(c, (int, float)) and c > 0 and math.isfinite(c)) for c in c_values):
        raise InputError(f"c values must be positive numbers; got {c_values}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise InputError(f"seeds must be non-negative integers; got {seeds}")
    for what, value, low in (("rows", rows, 1), ("max_side", max_side, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{what} must be an integer >= {low}; got {value!r}")
    load_image_set(images, 32)          # unknown images fail here, with their name


@flow(name="training-data-on-dask")
def _chunks(images: list[str], coverages: list[float], seeds: list[int], c_values: list[float], rows: int,
            max_side: int, chunk_dir: str, out: str, refresh_cache: bool) -> str:
    task = make_training_chunk.with_options(refresh_cache=True) if refresh_cache else make_training_chunk
    futures = [task.submit(image, i, cov, j, seed, c_values, rows, max_side, chunk_dir)
               for seed in seeds for i, image in enumerate(images) for j, cov in enumerate(coverages)]
    return assemble_training_set.submit([f.result() for f in futures], out).result()


@flow(name="generate-training-data")
def generate_training_data(
    out: str,
    images: list[str] | None = None,
    coverages: list[float] | None = None,
    seeds: list[int] = [0],  # noqa: B006 - Prefect parameters are copied per run
    c_values: list[float] = [2.0, 4.0, 8.0, 16.0, 32.0],  # noqa: B006
    rows: int = 4000,
    max_side: int = 256,
    chunk_dir: str | None = None,
    refresh_cache: bool = False,
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Features and reduction-in-distortion targets for every image x coverage x seed, as one Zarr store.

    Chunks are cached on their inputs (the same image, coverage, seed and settings are computed once;
    ``refresh_cache=True`` recomputes them) and kept in ``chunk_dir`` (default: ``OUT.chunks``).

    Returns
    -------
    dict
        ``training_set`` (path), ``rows``, ``chunks``.
    """
    from fastflow.erd.fit import DEFAULT_COVERAGES, DEFAULT_TRAINING, load_training_set
    from fastflow.errors import InputError

    images = list(images or DEFAULT_TRAINING)
    coverages = list(coverages or DEFAULT_COVERAGES)
    check_training_parameters(images, coverages, list(seeds), list(c_values), rows, max_side)
    if Path(out).exists():
        raise InputError(f"training set {out} already exists; choose a new path")
    chunk_dir = chunk_dir or f"{out}.chunks"
    path = _chunks.with_options(task_runner=dask_runner(dask_address, n_workers))(
        images, coverages, list(seeds), [float(c) for c in c_values], rows, max_side, chunk_dir, out, refresh_cache)
    data = load_training_set(path)
    return {"training_set": path, "rows": int(len(data.features)), "chunks": len(data.chunks)}


if __name__ == "__main__":
    run_script(generate_training_data)
