"""Flow: fit the ERD network for each c in parallel, choose c by simulated validation scans, publish the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow

from flows.runtime import dask_runner, run_script
from tasks.training import fit_for_c, score_model


@flow(name="fit-and-score-on-dask")
def _fit_all(training_set: str, c_values: list[float], seed: int, max_iter: int, out: str,
             validation_images: list[str], max_side: int) -> tuple[dict[float, str], dict[float, dict[str, Any]]]:
    fits = {c: fit_for_c.submit(training_set, c, seed, max_iter, out) for c in c_values}
    scores = {c: score_model.submit(f, validation_images, max_side, seed) for c, f in fits.items()}
    return {c: f.result() for c, f in fits.items()}, {c: s.result() for c, s in scores.items()}


@flow(name="train-erd-model")
def train_erd_model(
    out: str,
    training_set: str | None = None,
    c_values: list[float] = [2.0, 4.0, 8.0, 16.0, 32.0],  # noqa: B006 - Prefect parameters are copied per run
    validation_images: list[str] | None = None,
    seed: int = 0,
    max_iter: int = 200,
    max_side: int = 256,
    rows: int = 4000,
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Train one ERD model per c, keep the c whose simulated validation scans are best.

    Without ``training_set``, one is generated first (``generate_training_data`` on the default images).
    Writes ``erd-c<c>.safetensors`` per c, ``erd-model.safetensors`` (the chosen one), ``model-card.json`` and
    ``validation.png`` (NRMSE against coverage per c and validation image) to ``out``, and shows the card
    and the scores as Prefect artifacts.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from fastflow.erd.fit import DEFAULT_VALIDATION, SELECTION_COVERAGES, card_json, load_training_set, select_c
    from fastflow.erd.model import ERDModel
    from fastflow.errors import InputError
    from fastflow.figures import selection_figure
    from flows.generate_training_data import check_training_parameters, generate_training_data

    validation_images = list(validation_images or DEFAULT_VALIDATION)
    check_training_parameters(validation_images, [0.1], [seed], list(c_values), rows, max_side)
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"output folder {out} already exists and is not empty; choose a new one")
    if training_set is None:
        training_set = generate_training_data(str(folder / "training-set.zarr"), c_values=list(c_values),
                                              seeds=[seed], rows=rows, max_side=max_side,
                                              dask_address=dask_address, n_workers=n_workers)["training_set"]
    data = load_training_set(training_set)
    overlap = sorted({ch["image"] for ch in data.chunks} & set(validation_images))
    if overlap:
        raise InputError(f"images used both for training and for choosing c: {', '.join(overlap)}")
    missing = [c for c in c_values if float(c) not in data.c_values]
    if missing:
        raise InputError(f"c values {missing} are not in the training set (it has {list(data.c_values)})")
    folder.mkdir(parents=True, exist_ok=True)
    c_values = [float(c) for c in c_values]
    paths, scores = _fit_all.with_options(task_runner=dask_runner(dask_address, n_workers))(
        training_set, c_values, seed, max_iter, str(folder), validation_images, max(96, max_side * 5 // 8))
    models = {c: ERDModel.load(p) for c, p in paths.items()}
    model = select_c(models, scores, validation_images=validation_images)
    model.save(folder / "erd-model.safetensors")
    (folder / "model-card.json").write_text(card_json(model))
    figure = selection_figure(scores, SELECTION_COVERAGES, folder / "validation.png")
    create_table_artifact([{"c": c, "mean_nrmse": round(s["mean_nrmse"], 5), "r2": round(s.get("r2", float("nan")), 4)}
                           for c, s in sorted(scores.items())], key="erd-c-selection",
                          description="Validation scans per c (lower NRMSE is better)")
    create_markdown_artifact(f"# ERD model card (chosen c = {model.card['c']:g})\n\n```json\n{card_json(model)}\n```",
                             key="erd-model-card", description="The chosen model's card")
    return {"model": str(folder / "erd-model.safetensors"), "card": json.loads(card_json(model)), "figure": figure,
            "scores": {f"{c:g}": s for c, s in scores.items()}, "training_set": training_set}


if __name__ == "__main__":
    run_script(train_erd_model)
