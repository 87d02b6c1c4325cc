"""Flow: a training set of the learned reconstruction, its chunks generated in parallel on Dask into one Zarr store."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runtime import dask_runner, run_script
from tasks.learned import make_inpainting_chunk


@flow(name="inpainting-chunks-on-dask")
def _chunks(path: str, chunks: list[int], params: dict[str, Any]) -> list[int]:
    futures = [make_inpainting_chunk.submit(path, chunk, params) for chunk in chunks]
    return [f.result() for f in futures]


@flow(name="generate-inpainting-data")
def generate_inpainting_data(
    out: str,
    split: str = "train",
    sources: int = 2400,
    sources_per_chunk: int = 25,
    crop: int = 128,
    crops_per_source: int = 2,
    seed: int = 0,
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Crops of generic, phantom and STEM-like images under masks of every scan family, as one Zarr store.

    Each chunk of ``sources_per_chunk`` sources is one Dask task writing its own region of the store; a
    rerun on the same ``out`` with the same parameters generates only the chunks still missing.

    Returns
    -------
    dict
        ``training_set`` (path), ``samples``, ``chunks``.
    """
    from fastflow.errors import InputError
    from fastflow.recon.learned_data import SPLITS, create_training_set, missing_chunks

    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    for name, value in (("sources", sources), ("sources_per_chunk", sources_per_chunk),
                        ("crops_per_source", crops_per_source), ("crop", crop)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (16 if name == "crop" else 1):
            raise InputError(f"{name} must be a positive integer{' >= 16' if name == 'crop' else ''}; got {value!r}")
    sources_per_chunk = min(sources_per_chunk, sources)
    chunks = -(-sources // sources_per_chunk)
    params = create_training_set(out, chunks=chunks, sources_per_chunk=sources_per_chunk, crop=crop,
                                 crops_per_source=crops_per_source, seed=seed, split=split)
    todo = missing_chunks(out)
    if todo:
        _chunks.with_options(task_runner=dask_runner(dask_address, n_workers))(out, todo, params)
    return {"training_set": out, "samples": chunks * sources_per_chunk * crops_per_source, "chunks": chunks}


if __name__ == "__main__":
    run_script(generate_inpainting_data)
