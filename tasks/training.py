"""Tasks of ERD model training: training chunks (cached on their inputs), fits per c, validation scans."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS

from fastflow.erd import fit
from fastflow.erd.training import training_chunk
from tasks.common import logger, retry_unless_user_error


@task(name="training-chunk", cache_policy=INPUTS, persist_result=True, result_serializer="json",
      retries=1, retry_condition_fn=retry_unless_user_error)
def make_training_chunk(image: str, image_number: int, coverage: float, coverage_number: int, seed: int,
                        c_values: list[float], rows: int, max_side: int, chunk_dir: str) -> str:
    """Features and RD targets of one (image, coverage, seed), written as a Zarr store; returns its path.

    Cached on its inputs: the same image, coverage, seed and settings are computed once.
    """
    inputs = [image, image_number, coverage, coverage_number, seed, sorted(c_values), rows, max_side]
    digest = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:20]
    path = Path(chunk_dir) / f"chunk-{digest}.zarr"
    if not path.exists():
        picture = fit.load_image_set([image], max_side)[image]
        chunk = training_chunk(picture, coverage=coverage, seed=fit.chunk_seed(seed, image_number, coverage_number),
                               c_values=c_values, rows=rows, name=image)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".chunk-", dir=path.parent))
        try:   # written aside and moved into place: a killed run leaves no half chunk behind
            fit.save_training_set(fit.concatenate([chunk]), tmp / path.name)
            (tmp / path.name).rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger().info("training chunk %s at %.0f%%: %s", image, 100 * coverage, path.name)
    return str(path)


@task(name="assemble-training-set", persist_result=False, retry_condition_fn=retry_unless_user_error)
def assemble_training_set(chunk_paths: list[str], out: str) -> str:
    """Merge chunk stores (in order) into one training set at ``out``."""
    data = fit.merge_training_sets([fit.load_training_set(p) for p in chunk_paths])
    fit.save_training_set(data, out)
    logger().info("training set: %d rows from %d chunks -> %s", len(data.features), len(data.chunks), out)
    return out


@task(name="fit-erd-model", persist_result=False, retries=1, retry_condition_fn=retry_unless_user_error)
def fit_for_c(training_set: str, c: float, seed: int, max_iter: int, out_dir: str) -> str:
    """Fit the ERD network for one ``c`` and save it (safetensors file with its card); returns the file."""
    model = fit.fit_model(fit.load_training_set(training_set), c, seed=seed, max_iter=max_iter)
    path = Path(out_dir) / f"erd-c{c:g}.safetensors"
    model.save(path)
    logger().info("c=%g: R2 %.3f on held-out chunks -> %s", c, model.card["validation"].get("r2", float("nan")), path)
    return str(path)


@task(name="validation-scans", persist_result=False, retries=1, retry_condition_fn=retry_unless_user_error)
def score_model(model_path: str, validation_images: list[str], max_side: int, seed: int) -> dict[str, Any]:
    """Mean NRMSE of simulated FAST scans with the model on the validation images (and per image)."""
    from fastflow.erd.model import ERDModel

    model = ERDModel.load(model_path)
    images = fit.load_image_set(validation_images, max_side)
    scores = {**fit.score_c(model, images, seed=seed), **model.card["validation"]}
    logger().info("c=%g: mean validation NRMSE %.4f", model.card["c"], scores["mean_nrmse"])
    return scores
