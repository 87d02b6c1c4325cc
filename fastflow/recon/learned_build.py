"""Rebuilding a learned reconstruction model from nothing: data, training, calibration, card and figures.

:func:`build_learned_model` is what ``fastflow train-recon`` runs (the ``train_learned_model`` flow runs the
same steps as Prefect tasks on Dask). Everything lands in one folder::

    recipe.json                 the parameters; a rerun with the same folder resumes, with others is refused
    train.zarr, validation.zarr training sets (chunks generated in parallel; missing ones are finished)
    checkpoint.safetensors      the training's checkpoint (a killed training resumes from it)
    model.safetensors           the model (weights, calibration, card)
    model-card.json             its card, readable
    history.json, curves.png    loss and validation curves
    panels.png                  example completions on validation images

The defaults of :class:`Recipe` are the shipped model's recipe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.recon.learned_data import (
    PHANTOM_SEEDS,
    chunk_samples,
    create_training_set,
    load_training_set,
    missing_chunks,
    write_chunk,
)
from fastflow.recon.learned_training import LearnedTrainingConfig, train_learned_model

__all__ = ["Recipe", "build_learned_model", "example_cases", "generate_set", "panel_cases", "prepare_folder"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a model: the training sets and the training.

    Attributes
    ----------
    train_sources, validation_sources : int
        Source images of the training and validation sets (each gives ``crops_per_source`` crops).
    sources_per_chunk : int
        Sources per generation chunk (the unit of parallel work).
    crop, crops_per_source : int
        Side of the training crops and crops per source.
    data_seed : int
        Seed of both sets.
    training : LearnedTrainingConfig
        Network and optimisation.
    """

    train_sources: int = 2400
    validation_sources: int = 200
    sources_per_chunk: int = 25
    crop: int = 96
    crops_per_source: int = 2
    data_seed: int = 0
    training: LearnedTrainingConfig = field(default_factory=LearnedTrainingConfig)

    def chunking(self, sources: int) -> tuple[int, int]:
        """``(chunks, sources per chunk)`` of a set of ``sources`` sources (small sets: one small chunk)."""
        per_chunk = max(1, min(self.sources_per_chunk, int(sources)))
        return -(-int(sources) // per_chunk), per_chunk

    def to_json(self) -> dict[str, Any]:
        """The recipe as JSON-ready data (device and threads left out: they do not decide the model)."""
        data = asdict(self)
        for key in ("device", "threads", "checkpoint_every", "validate_every"):
            data["training"].pop(key)
        return data


def _chunk_job(path: str, chunk: int, params: dict[str, Any]) -> int:
    samples = chunk_samples(chunk, sources=params["sources_per_chunk"], crop=params["crop"],
                            crops_per_source=params["crops_per_source"], seed=params["seed"], split=params["split"])
    write_chunk(path, chunk, samples)
    return chunk


def generate_set(path: str | os.PathLike[str], split: str, sources: int, recipe: Recipe, *, workers: int = 1,
                 log: Log | None = None) -> str:
    """Create (or finish) one training-set store, its chunks in ``workers`` processes.

    Returns
    -------
    str
        The store's path.
    """
    chunks, per_chunk = recipe.chunking(sources)
    params = create_training_set(path, chunks=chunks, sources_per_chunk=per_chunk, crop=recipe.crop,
                                 crops_per_source=recipe.crops_per_source, seed=recipe.data_seed, split=split)
    todo = missing_chunks(path)
    if log and todo:
        log(f"{split} set: {len(todo)} of {chunks} chunks to generate ({per_chunk} sources each)")
    if workers <= 1 or len(todo) <= 1:
        for chunk in todo:
            _chunk_job(str(path), chunk, params)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for done, _ in enumerate(pool.map(_chunk_job, [str(path)] * len(todo), todo, [params] * len(todo)), 1):
                if log and (done % 10 == 0 or done == len(todo)):
                    log(f"{split} set: {done}/{len(todo)} chunks")
    return str(path)


def example_cases() -> dict[str, np.ndarray]:
    """Validation images at full size for the example panels (none is in any training set)."""
    from fastflow import phantoms
    from fastflow.recon.learned_data import _generic
    from fastflow.stem import scan_noise, stem_image

    start = PHANTOM_SEEDS["validation"] + 950
    return {
        "STEM-like (validation seed)": stem_image((192, 256), seed=start).image,
        "flakes (validation seed)": phantoms.flakes((192, 256), seed=start),
        "retina (validation image)": _generic("retina")[500:692, 400:656],
        "noisy particles": scan_noise(phantoms.particles((192, 256), seed=start), start, dose=50),
    }


def panel_cases(model: Any, families: tuple[str, ...] = ("spiral", "random", "fast", "lines"),
                coverage: float = 0.05) -> list[dict[str, Any]]:
    """Completions of :func:`example_cases` (one mask family each) with the learned and biharmonic methods."""
    from fastflow.grid import ScanGrid
    from fastflow.recon import biharmonic
    from fastflow.recon.base import prepare_measurements
    from fastflow.recon.masks import scan_mask

    rows = []
    for (name, image), family in zip(example_cases().items(), families):
        mask = scan_mask(family, image.shape, coverage, seed=0, image=image)
        idx = np.argwhere(mask)
        grid = ScanGrid(image.shape)
        mean, sigma = model.complete(prepare_measurements(grid, idx, image[mask]))
        rows.append({"name": f"{name}, {family}", "truth": image, "mask": mask, "learned": mean, "sigma": sigma,
                     "biharmonic": biharmonic(grid, idx, image[mask])})
    return rows


def prepare_folder(out: str | os.PathLike[str], recipe: Recipe, log: Log | None = None) -> Path:
    """Create the training folder with its ``recipe.json``, or check that an existing one has this recipe.

    Raises
    ------
    InputError
        If the folder holds another recipe, or other files and no recipe.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    recipe_file = folder / "recipe.json"
    wanted = json.loads(json.dumps(recipe.to_json()))
    if recipe_file.exists():
        if json.loads(recipe_file.read_text()) != wanted:
            raise InputError(f"{folder} holds a training with another recipe (recipe.json); choose a new folder")
        if log:
            log(f"continuing the training in {folder}")
    elif any(folder.iterdir()):
        raise InputError(f"{folder} is not empty and holds no recipe.json; choose a new or empty folder")
    else:
        recipe_file.write_text(json.dumps(wanted, indent=2) + "\n")
    return folder


def build_learned_model(
    out: str | os.PathLike[str],
    recipe: Recipe | None = None,
    *,
    workers: int | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Generate the training sets, train, calibrate, and write the model with its card and figures.

    A rerun with the same ``out`` and recipe continues where a killed run stopped (missing chunks, then
    the training from its checkpoint); another recipe in the same folder is refused.

    Parameters
    ----------
    out : path
        The folder (created if needed).
    recipe : Recipe, optional
        Default: the shipped model's recipe.
    workers : int, optional
        Processes for the data generation (default: one per core).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    dict
        ``model`` (path), ``card``, ``seconds`` of training, ``figures``.
    """
    recipe = recipe or Recipe()
    folder = prepare_folder(out, recipe, log)
    workers = workers or os.cpu_count() or 1
    train_path = generate_set(folder / "train.zarr", "train", recipe.train_sources, recipe, workers=workers, log=log)
    val_path = generate_set(folder / "validation.zarr", "validation", recipe.validation_sources, recipe,
                            workers=workers, log=log)
    model, history = train_learned_model(load_training_set(train_path), load_training_set(val_path), recipe.training,
                                         checkpoint=folder / "checkpoint.safetensors", log=log)
    saved = save_outputs(folder, model, history, recipe)
    figures = write_figures(folder, saved, history)
    return {"model": str(folder / "model.safetensors"), "card": saved.card, "seconds": history["seconds"],
            "figures": figures}


def save_outputs(folder: Path, model: Any, history: dict[str, Any], recipe: Recipe) -> Any:
    """Write ``model.safetensors`` (with the recipe in its card), ``model-card.json`` and ``history.json``;
    returns the model read back from its file (so its card carries the content hash)."""
    from fastflow.modelfile import write_card

    model.card["recipe"] = recipe.to_json()
    saved = type(model).load(model.save(folder / "model.safetensors"))
    write_card(folder / "model-card.json", saved.card)
    (folder / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return saved


def write_figures(folder: Path, model: Any, history: dict[str, Any]) -> dict[str, str]:
    """``curves.png`` (loss and validation) and ``panels.png`` (example completions)."""
    from fastflow.figures import completion_panels, training_curves

    return {"curves": training_curves(history["history"], folder / "curves.png"),
            "panels": completion_panels(panel_cases(model), folder / "panels.png")}
