"""Fitting ERD models: a training set from generic images, one MLP per c, and the choice of c.

The choice of ``c`` follows SLADS (Godaliyadda et al. 2018) rather than the FAST notebooks: each candidate
model runs simulated scans on held-out validation images, and the ``c`` with the lowest mean NRMSE over
5-30 % coverage wins (validation R² mostly rewards the smoother targets of small ``c``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from fastflow.erd.features import DEFAULT_DENSITY_RADIUS, DEFAULT_K, FEATURE_NAMES, VALUE_PERCENTILES, VALUE_SCALE
from fastflow.erd.model import ERDModel, feature_statistics, make_rbf_map, rbf_transform
from fastflow.erd.training import TrainingChunk, training_chunk
from fastflow.errors import InputError

DEFAULT_COVERAGES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
DEFAULT_C_VALUES = (2.0, 4.0, 8.0, 16.0, 32.0)
SELECTION_COVERAGES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


@dataclass
class TrainingSet:
    """Concatenated training chunks."""

    features: np.ndarray
    targets: np.ndarray
    c_values: tuple[float, ...]
    chunk_of_row: np.ndarray
    chunks: list[dict[str, Any]] = field(default_factory=list)


def build_training_set(
    images: Mapping[str, np.ndarray],
    *,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    seeds: Sequence[int] = (0,),
    c_values: Sequence[float] = DEFAULT_C_VALUES,
    rows: int = 4000,
) -> TrainingSet:
    """Training chunks for every image x coverage x seed, concatenated (chunk seeds are derived, fixed)."""
    chunks: list[TrainingChunk] = []
    for i, (name, image) in enumerate(images.items()):
        for j, cov in enumerate(coverages):
            for seed in seeds:
                chunks.append(training_chunk(image, coverage=cov, seed=chunk_seed(seed, i, j), c_values=c_values,
                                             rows=rows, name=name))
    return concatenate(chunks)


def chunk_seed(seed: int, image_number: int, coverage_number: int) -> int:
    """The mask seed of one training chunk: fixed by the run seed and the chunk's place in the sweep."""
    return int(seed) * 1_000_003 + int(image_number) * 1_009 + int(coverage_number)


def save_training_set(data: TrainingSet, path: str | os.PathLike) -> str:
    """Write a training set as a Zarr store (features, targets per c, and where every row came from).

    Readable with ``xarray.open_zarr(path, consolidated=False)`` and :func:`load_training_set`.
    """
    import xarray as xr

    ds = xr.Dataset(
        {
            "features": (("row", "feature"), data.features),
            "targets": (("row", "c"), data.targets),
            "chunk_of_row": (("row",), data.chunk_of_row.astype(np.int32)),
        },
        coords={"c": list(data.c_values)},
        attrs={"format": "fastflow-erd-training-set", "format_version": 1, "chunks": json.dumps(data.chunks),
               "feature_names": list(FEATURE_NAMES)},
    )
    ds.to_zarr(path, mode="w-", consolidated=False, zarr_format=3)
    return str(path)


def load_training_set(path: str | os.PathLike) -> TrainingSet:
    """Read a training set written by :func:`save_training_set`.

    Raises
    ------
    InputError
        If ``path`` is not such a store.
    """
    import xarray as xr

    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as exc:  # noqa: BLE001 - any failure to open means "not a training set"
        raise InputError(f"{path} is not a readable training set: {exc}") from None
    if ds.attrs.get("format") != "fastflow-erd-training-set":
        raise InputError(f"{path} is not a fastflow training set (no 'format' attribute)")
    return TrainingSet(
        features=ds["features"].values.astype(np.float32),
        targets=ds["targets"].values.astype(np.float32),
        c_values=tuple(float(c) for c in ds["c"].values),
        chunk_of_row=ds["chunk_of_row"].values.astype(np.int64),
        chunks=json.loads(ds.attrs["chunks"]),
    )


def concatenate(chunks: Sequence[TrainingChunk]) -> TrainingSet:
    """One training set from chunks (which must share their c values)."""
    if not chunks:
        raise InputError("no training chunks")
    c_values = chunks[0].c_values
    if any(ch.c_values != c_values for ch in chunks):
        raise InputError("training chunks were made for different c values")
    return TrainingSet(
        features=np.concatenate([ch.features for ch in chunks]),
        targets=np.concatenate([ch.targets for ch in chunks]),
        c_values=c_values,
        chunk_of_row=np.concatenate([np.full(len(ch.features), k) for k, ch in enumerate(chunks)]),
        chunks=[{"image": ch.image, "coverage": ch.coverage, "seed": ch.seed, "rows": len(ch.features)}
                for ch in chunks],
    )


def fit_model(
    data: TrainingSet,
    c: float,
    *,
    seed: int = 0,
    hidden: tuple[int, ...] = (50, 5),
    n_components: int = 50,
    gamma: float | None = None,
    max_iter: int = 200,
    validation_share: float = 0.2,
) -> ERDModel:
    """Fit the ERD MLP for one ``c``; the R² on held-out chunks goes into the model card."""
    if c not in data.c_values:
        raise InputError(f"c={c} is not in the training set's c values {list(data.c_values)}")
    y_all = data.targets[:, data.c_values.index(c)].astype(np.float64)
    rng = np.random.default_rng(seed)
    n_chunks = len(data.chunks)
    held = rng.random(n_chunks) < validation_share if n_chunks > 4 else np.zeros(n_chunks, bool)
    val_rows = held[data.chunk_of_row]
    x_train, y_train = data.features[~val_rows].astype(np.float64), y_all[~val_rows]
    mean, scale = feature_statistics(x_train)
    rbf_w, rbf_b = make_rbf_map(n_components=n_components, gamma=gamma, seed=seed)
    target_scale = float(np.std(y_train)) or 1.0
    mlp = MLPRegressor(hidden_layer_sizes=hidden, activation="relu", solver="adam", alpha=1e-4,
                       learning_rate_init=1e-3, batch_size=256, max_iter=max_iter, early_stopping=True,
                       validation_fraction=0.1, n_iter_no_change=8, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(rbf_transform(x_train, mean, scale, rbf_w, rbf_b), y_train / target_scale)
    model = ERDModel.from_sklearn(mlp, mean, scale, rbf_w, rbf_b, target_scale, card={})
    validation = {"epochs": int(mlp.n_iter_)}
    if val_rows.any():
        y_val = y_all[val_rows]
        pred = model.predict(data.features[val_rows], dtype=np.float64)
        validation["r2"] = float(1 - np.sum((pred - y_val) ** 2) / np.sum((y_val - y_val.mean()) ** 2))
        validation["rows"] = int(val_rows.sum())
    model.card = {
        "c": float(c),
        "training_images": sorted({ch["image"] for ch in data.chunks}),
        "coverages": sorted({ch["coverage"] for ch in data.chunks}),
        "seeds": sorted({ch["seed"] for ch in data.chunks}),
        "n_samples": int(len(x_train)),
        "validation": validation,
        "feature_names": list(FEATURE_NAMES),
        "k": DEFAULT_K,
        "density_radius": DEFAULT_DENSITY_RADIUS,
        "value_normalisation": {"percentiles": list(VALUE_PERCENTILES), "scale": VALUE_SCALE},
        "rbf": {"n_components": n_components, "gamma": gamma, "seed": seed},
        "mlp": {"hidden": list(hidden), "activation": "relu", "max_iter": max_iter, "seed": seed},
        "library_versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return model


def score_c(
    model: ERDModel,
    images: Mapping[str, np.ndarray],
    *,
    coverages: Sequence[float] = SELECTION_COVERAGES,
    batch_size: int = 50,
    seed: int = 0,
    make_sampler: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Mean NRMSE (IDW) of simulated FAST scans with ``model`` on ``images`` over ``coverages``."""
    from fastflow.evaluate import simulate
    from fastflow.grid import ScanGrid
    from fastflow.sampling.slads import FastSampler

    make = make_sampler or (lambda grid: FastSampler(grid, model, seed=seed))
    per_image = {}
    for name, image in images.items():
        rows = simulate(make(ScanGrid(image.shape)), image, coverages, batch_size=batch_size)
        per_image[name] = [r["nrmse"] for r in rows]
    return {"mean_nrmse": float(np.mean([v for vals in per_image.values() for v in vals])), "per_image": per_image}


def select_c(models: Mapping[float, ERDModel], scores: Mapping[float, Mapping[str, Any]], *,
             validation_images: Sequence[str]) -> ERDModel:
    """The model with the lowest mean validation NRMSE; its card records every candidate's score."""
    if not models or set(models) != set(scores):
        raise InputError("select_c needs one score per model")
    c_values = sorted(models)
    best = min(c_values, key=lambda c: scores[c]["mean_nrmse"])
    model = models[best]
    model.card["selection"] = {
        "rule": "lowest mean NRMSE (IDW) of simulated FAST scans on the validation images over 5-30 % coverage",
        "validation_images": list(validation_images),
        "scores": {f"{c:g}": {"mean_nrmse": scores[c]["mean_nrmse"], "r2": scores[c].get("r2")} for c in c_values},
        "chosen_c": best,
    }
    return model


def merge_training_sets(sets: Sequence[TrainingSet]) -> TrainingSet:
    """One training set from several (e.g. chunks made in parallel), in the given order."""
    if not sets:
        raise InputError("no training sets to merge")
    c_values = sets[0].c_values
    if any(t.c_values != c_values for t in sets):
        raise InputError("training sets were made for different c values")
    offsets = np.cumsum([0] + [len(t.chunks) for t in sets[:-1]])
    return TrainingSet(
        features=np.concatenate([t.features for t in sets]),
        targets=np.concatenate([t.targets for t in sets]),
        c_values=c_values,
        chunk_of_row=np.concatenate([t.chunk_of_row + off for t, off in zip(sets, offsets)]),
        chunks=[ch for t in sets for ch in t.chunks],
    )


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("fastflow", "numpy", "scipy", "scikit-learn", "scikit-image"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def card_json(model: ERDModel) -> str:
    """The model card as indented JSON (with the content hash)."""
    return json.dumps({**model.card, "content_hash": model.content_hash()}, indent=2)


# -- the default image sets -----------------------------------------------------------------------------
DEFAULT_TRAINING = ("camera", "moon", "text", "page", "brick", "grass", "gravel", "clock", "shepp_logan",
                    "grains:11", "particles:11")
"""Generic images (scikit-image's offline data and procedural phantoms with their own seeds). The
held-out evaluation images (flakes, coins, cell and the lattice and noisy phantoms) are not among them."""
DEFAULT_VALIDATION = ("hubble", "microaneurysms", "particles:23", "grains:23")
"""Images used only to choose c."""


def load_image_set(names: Sequence[str], max_side: int) -> dict[str, np.ndarray]:
    """Load images by sample name (``name`` or ``phantom:seed``), downscaled so the longer side is ``max_side``."""
    from skimage.transform import rescale

    from fastflow import phantoms
    from fastflow.images import load_sample

    out = {}
    for name in names:
        base, _, seed = name.partition(":")
        if seed and hasattr(phantoms, base):
            image = getattr(phantoms, base)(seed=int(seed))
        else:
            image, _ = load_sample(name)
        factor = max_side / max(image.shape)
        if factor < 1:
            image = rescale(image, factor, anti_aliasing=True, preserve_range=True)
        out[name] = image
    return out


def train_and_select(
    training: Mapping[str, np.ndarray],
    validation: Mapping[str, np.ndarray],
    *,
    c_values: Sequence[float] = DEFAULT_C_VALUES,
    seed: int = 0,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    rows: int = 4000,
    max_iter: int = 200,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[ERDModel, dict[float, dict[str, Any]], dict[float, ERDModel]]:
    """Build the training set, fit one model per ``c`` and keep the one with the best validation scans.

    Returns ``(best_model, scores_by_c, models_by_c)``; the best model's card records the selection.
    """
    c_values = tuple(float(c) for c in c_values)
    log(f"training set: {len(training)} images x {len(coverages)} coverages, {rows} rows per mask")
    data = build_training_set(training, coverages=coverages, seeds=(seed,), c_values=c_values, rows=rows)
    models, scores = {}, {}
    for c in c_values:
        models[c] = fit_model(data, c, seed=seed, max_iter=max_iter)
        scores[c] = {**score_c(models[c], validation, seed=seed), **models[c].card["validation"]}
        log(f"c={c:g}: validation R2 {scores[c].get('r2', float('nan')):.3f}, "
            f"mean NRMSE of validation scans {scores[c]['mean_nrmse']:.4f}")
    model = select_c(models, scores, validation_images=sorted(validation))
    return model, scores, models
