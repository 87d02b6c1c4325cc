"""Flow: train the learned reconstruction (training sets on Dask, torch in a task, checkpoints), publish its card."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.runtime import run_script
from tasks.learned import publish_model_artifacts, train_network


@flow(name="train-learned-model")
def train_learned_model(
    out: str,
    train_sources: int = 2400,
    validation_sources: int = 200,
    crop: int = 96,
    steps: int = 4000,
    batch_size: int = 16,
    base: int = 16,
    depth: int = 4,
    conv: str = "plain",
    learning_rate: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    dask_address: str | None = None,
    n_workers: int | None = None,
) -> dict[str, Any]:
    """Generate the training and validation sets, train, calibrate, and publish the model and its card.

    Writes to ``out`` what ``fastflow train-recon`` writes (``model.safetensors``, ``model-card.json``,
    ``curves.png``, ``panels.png``, the sets and the checkpoint). A rerun with the same ``out`` and
    parameters continues a killed run: missing chunks, then the training from its checkpoint.

    Returns
    -------
    dict
        ``model`` (path), ``card``, ``figures``.
    """
    from fastflow.recon.learned_build import Recipe, prepare_folder
    from fastflow.recon.learned_training import LearnedTrainingConfig
    from flows.generate_inpainting_data import generate_inpainting_data

    training = LearnedTrainingConfig(base=base, depth=depth, conv=conv, steps=steps, batch_size=batch_size,
                                     learning_rate=learning_rate, seed=seed, device=device)
    recipe = Recipe(train_sources=train_sources, validation_sources=validation_sources, crop=crop, data_seed=seed,
                    training=training)
    folder = prepare_folder(out, recipe)
    sets = {}
    for split, sources in (("train", train_sources), ("validation", validation_sources)):
        sets[split] = generate_inpainting_data(str(folder / f"{split}.zarr"), split=split, sources=sources,
                                               sources_per_chunk=recipe.chunking(sources)[1], crop=crop,
                                               crops_per_source=recipe.crops_per_source, seed=seed,
                                               dask_address=dask_address, n_workers=n_workers)["training_set"]
    result = train_network(str(folder), sets["train"], sets["validation"], recipe)
    figures = publish_model_artifacts(str(folder), result)
    return {"model": result["model"], "card": result["card"], "figures": figures}


if __name__ == "__main__":
    run_script(train_learned_model)
