"""Tasks of the learned reconstruction: training-set chunks, the training (torch in a task), artifacts."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks.common import logger, retry_unless_user_error


@task(name="inpainting-chunk", persist_result=False, retries=1, retry_condition_fn=retry_unless_user_error)
def make_inpainting_chunk(path: str, chunk: int, params: dict[str, Any]) -> int:
    """Generate one chunk of a training set into its region of the store (skipped when already done)."""
    from fastflow.recon.learned_build import _chunk_job
    from fastflow.recon.learned_data import missing_chunks

    if chunk not in missing_chunks(path):
        return chunk
    _chunk_job(path, chunk, params)
    logger().info("%s: chunk %d written", path, chunk)
    return chunk


@task(name="train-network", persist_result=False, retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_user_error)
def train_network(folder: str, train_path: str, validation_path: str, recipe: Any) -> dict[str, Any]:
    """Train, calibrate and save the model in ``folder`` (a retry, or a rerun, resumes from the checkpoint)."""
    from pathlib import Path

    from fastflow.recon.learned_build import save_outputs
    from fastflow.recon.learned_data import load_training_set
    from fastflow.recon.learned_training import train_learned_model

    out = Path(folder)
    model, history = train_learned_model(load_training_set(train_path), load_training_set(validation_path),
                                         recipe.training, checkpoint=out / "checkpoint.safetensors",
                                         log=logger().info)
    saved = save_outputs(out, model, history, recipe)
    logger().info("model %s: validation %s", out / "model.safetensors", saved.card["validation"])
    return {"model": str(out / "model.safetensors"), "card": saved.card, "history": history}


@task(name="learned-model-artifacts", persist_result=False, retry_condition_fn=retry_unless_user_error)
def publish_model_artifacts(folder: str, result: dict[str, Any]) -> dict[str, str]:
    """Card, validation curves and example panels as files and Prefect artifacts."""
    import json
    from pathlib import Path

    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from fastflow.recon.learned import LearnedModel
    from fastflow.recon.learned_build import write_figures

    model = LearnedModel.load(result["model"])
    figures = write_figures(Path(folder), model, result["history"])
    card = json.dumps(result["card"], indent=2, sort_keys=True)
    create_markdown_artifact(f"# Learned reconstruction model\n\n{model.describe()}\n\nFigures: "
                             f"{figures['curves']}, {figures['panels']}\n\n```json\n{card}\n```",
                             key="learned-model-card", description="The model card")
    rows = [{"step": h["step"], **{k: round(v, 5) for k, v in h["validation"].items()}}
            for h in result["history"]["history"] if "validation" in h]
    if rows:
        create_table_artifact(rows, key="learned-model-validation", description="Validation curves")
    return figures
