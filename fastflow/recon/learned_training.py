"""Training, validation and calibration of the learned reconstruction's network.

:func:`train_learned_model` trains a U-Net (:mod:`fastflow.nn.blocks`) on a training set
(:mod:`fastflow.recon.learned_data`) with the loop of :mod:`fastflow.nn.training` (checkpoints, resume
after a kill), then fits the calibration of its standard deviation on the validation set and writes the
model card. The default loss is "faithful" heteroscedastic regression (Stirn et al., "Faithful heteroscedastic
regression with neural networks", AISTATS 2023): the mean is fitted by squared error, and the log-variance
by the Gaussian negative log-likelihood (with the mean's error held fixed) from a head of its own whose
gradient does not reach the shared U-Net, so learning the uncertainty costs the mean nothing. The
alternative ``loss="beta-nll"`` is the beta-weighted NLL of Seitzer et al. (ICLR 2022) for both outputs.
Fitting one batch (``benchmarks/inpainting_architecture.py --fit-one-batch``) shows why: the faithful
loss fits the mean about as fast as plain squared error, the beta-NLL much more slowly. Unmeasured
pixels count fully, measured pixels with ``measured_weight`` (the network learns their denoised value
too, used with ``keep_measured=False``).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.metrics import Z90
from fastflow.recon.learned import LOG_VARIANCE_RANGE, LearnedModel
from fastflow.recon.learned_data import TrainingSet
from fastflow.recon.learned_inputs import INPUT_CHANNELS, MASK_CHANNEL

__all__ = ["LearnedTrainingConfig", "calibrate", "train_learned_model", "validation_scores"]

_MARGIN = 12
"""Pixels at each crop's border left out of validation scores (a crop's border lacks context that a
whole image has)."""


@dataclass(frozen=True)
class LearnedTrainingConfig:
    """The network and how to train it.

    Attributes
    ----------
    base, depth, conv, activation
        The U-Net (:class:`fastflow.nn.blocks.UNet`).
    steps, batch_size, learning_rate, warmup, weight_decay, grad_clip
        The optimisation (:class:`fastflow.nn.training.TrainingConfig`).
    loss : str
        ``faithful`` (default): the mean by squared error, the variance by the Gaussian NLL from a head
        whose gradient does not reach the shared network; ``beta-nll``: one beta-weighted NLL for both.
    beta : float
        With ``beta-nll``: exponent of the variance weighting (0 = plain NLL, 1 ~ MSE for the mean).
    measured_weight : float
        Weight of measured pixels in the loss.
    seed : int
        Seed of the initialisation and the batches.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    threads : int or None
        torch threads on the CPU.
    checkpoint_every, validate_every : int
        Steps between checkpoints and validations.
    """

    base: int = 16
    depth: int = 4
    conv: str = "plain"
    activation: str = "silu"
    steps: int = 4000
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss: str = "faithful"
    beta: float = 0.5
    measured_weight: float = 0.2
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int = 100
    validate_every: int = 500

    def __post_init__(self) -> None:
        if self.loss not in ("faithful", "beta-nll"):
            raise InputError(f"loss must be 'faithful' or 'beta-nll'; got {self.loss!r}")

    def network_config(self) -> dict[str, Any]:
        return {"name": "unet", "in_channels": len(INPUT_CHANNELS), "out_channels": 2, "base": self.base,
                "depth": self.depth, "conv": self.conv, "activation": self.activation,
                "detached": 1 if self.loss == "faithful" else 0}

    def training_config(self) -> Any:
        from fastflow.nn.training import TrainingConfig

        return TrainingConfig(steps=self.steps, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
                              warmup=min(self.warmup, max(0, self.steps - 1)), grad_clip=self.grad_clip,
                              checkpoint_every=self.checkpoint_every, validate_every=self.validate_every,
                              seed=self.seed, device=self.device, threads=self.threads)


def _loss(beta: float, measured_weight: float, faithful: bool = False) -> Any:
    from fastflow.nn import require_torch

    torch = require_torch("training")
    lo, hi = LOG_VARIANCE_RANGE

    def loss(module: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        x, y = batch["inputs"], batch["target"]
        out = module(x)
        mean = x[:, 0] + out[:, 0]
        log_var = out[:, 1].clamp(lo, hi)
        squared = (y - mean) ** 2
        measured = x[:, MASK_CHANNEL]
        weight = (1.0 - measured) + measured_weight * measured
        if faithful:  # the mean by squared error; the variance head (detached trunk) by the NLL
            nll = 0.5 * (log_var + squared.detach() * torch.exp(-log_var))
            per_pixel = squared + nll
        else:
            per_pixel = 0.5 * (log_var + squared * torch.exp(-log_var))
            if beta:
                per_pixel = per_pixel * torch.exp(log_var.detach() * beta)
        value = (per_pixel * weight).sum() / weight.sum()
        unmeasured = 1.0 - measured
        rmse = torch.sqrt((squared * unmeasured).sum() / unmeasured.sum().clamp_min(1.0))
        return value, {"rmse": float(rmse.detach())}

    return loss


def _predict_crops(model: LearnedModel, data: TrainingSet, limit: int) -> tuple[np.ndarray, np.ndarray, slice]:
    """Mean and uncalibrated sigma (normalised units) of up to ``limit`` validation crops."""
    from fastflow.nn import require_torch

    torch = require_torch("validation")
    lo, hi = LOG_VARIANCE_RANGE
    n = min(limit, len(data))
    means, sigmas = [], []
    net = model.network.eval()
    device = next(net.parameters()).device
    with torch.inference_mode():
        for start in range(0, n, 32):
            x = torch.from_numpy(data.inputs[start : min(n, start + 32)]).to(device)
            y = net(x)
            means.append((x[:, 0] + y[:, 0]).cpu().numpy())
            sigmas.append(torch.exp(0.5 * y[:, 1].clamp(lo, hi)).cpu().numpy())
    crop = data.inputs.shape[-1]
    margin = _MARGIN if crop > 4 * _MARGIN else 0
    return np.concatenate(means), np.concatenate(sigmas), slice(margin, crop - margin)


def validation_scores(model: LearnedModel, data: TrainingSet, limit: int = 512) -> dict[str, float]:
    """Scores on validation crops (normalised units, unmeasured pixels away from the crop borders).

    Returns
    -------
    dict
        ``rmse`` of the learned mean, ``rmse_guess`` of the first guess and their ratio ``rmse_ratio``,
        ``crop_ratio`` the geometric mean over crops of each crop's ratio (every crop counts alike),
        ``nll`` (mean Gaussian NLL with the calibrated sigma), ``coverage90`` (share of pixels whose truth
        lies in the calibrated 90 % interval), ``sigma_scale`` the model's calibration.
    """
    mean, sigma, inner = _predict_crops(model, data, limit)
    n = len(mean)
    target = data.target[:n, inner, inner]
    guess = data.inputs[:n, 0, inner, inner]
    free = data.inputs[:n, MASK_CHANNEL, inner, inner] < 0.5
    mean, sigma = mean[:, inner, inner], sigma[:, inner, inner] * model.sigma_scale
    err = (mean - target)[free]
    s = sigma[free]
    rmse, rmse_guess = np.sqrt(np.mean(err**2)), np.sqrt(np.mean((guess - target)[free] ** 2))
    count = np.maximum(free.sum(axis=(1, 2)), 1)
    per_crop = np.sqrt(np.where(free, (mean - target) ** 2, 0).sum(axis=(1, 2)) / count)
    per_crop_guess = np.sqrt(np.where(free, (guess - target) ** 2, 0).sum(axis=(1, 2)) / count)
    crop_ratio = np.exp(np.mean(np.log(np.maximum(per_crop, 1e-12) / np.maximum(per_crop_guess, 1e-12))))
    return {
        "rmse": float(rmse),
        "rmse_guess": float(rmse_guess),
        "rmse_ratio": float(rmse / max(rmse_guess, 1e-12)),
        "crop_ratio": float(crop_ratio),
        "nll": float(np.mean(0.5 * np.log(2 * np.pi * s**2) + 0.5 * (err / s) ** 2)),
        "coverage90": float(np.mean(np.abs(err) <= Z90 * s)),
        "sigma_scale": float(model.sigma_scale),
    }


def calibrate(model: LearnedModel, data: TrainingSet, limit: int = 1024) -> float:
    """The factor that puts the truth inside ``mean ± 1.645 sigma`` for 90 % of the validation pixels.

    It is the 90th percentile of ``|error| / sigma`` over unmeasured pixels, divided by 1.645.
    """
    mean, sigma, inner = _predict_crops(model, data, limit)
    n = len(mean)
    free = data.inputs[:n, MASK_CHANNEL, inner, inner] < 0.5
    z = np.abs(mean[:, inner, inner] - data.target[:n, inner, inner])[free] / sigma[:, inner, inner][free]
    return float(np.quantile(z, 0.9) / Z90)


def train_learned_model(
    train: TrainingSet,
    validation: TrainingSet,
    config: LearnedTrainingConfig | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    log: Any = None,
    start_from: LearnedModel | None = None,
) -> tuple[LearnedModel, dict[str, Any]]:
    """Train, calibrate and describe a learned reconstruction model.

    Parameters
    ----------
    train, validation : TrainingSet
        Training and validation sets (:func:`fastflow.recon.learned_data.load_training_set`).
    config : LearnedTrainingConfig, optional
    checkpoint : path, optional
        Checkpoint file: written during training; an existing one is resumed.
    log : callable, optional
        Receives progress lines.
    start_from : LearnedModel, optional
        Fine-tune: start from this model's weights (its architecture must be the configuration's).

    Returns
    -------
    model : LearnedModel
        The calibrated model; its card describes the data, the training and the validation scores.
    history : dict
        ``steps``, ``resumed_from``, ``seconds`` and ``history`` (loss and validation curves).
    """
    from fastflow.nn import require_torch
    from fastflow.nn.blocks import build, count_parameters
    from fastflow.nn.training import train as run_training

    torch = require_torch("training the learned reconstruction")
    cfg = config or LearnedTrainingConfig()
    if len(train) == 0 or len(validation) == 0:
        raise InputError("training and validation sets must not be empty")
    torch.manual_seed(cfg.seed)
    network = build(cfg.network_config())
    if start_from is not None:
        if start_from.network.config != network.config:
            raise InputError(f"cannot fine-tune a {start_from.network.config} network as {network.config}")
        network.load_state_dict(start_from.network.state_dict())
    probe = LearnedModel(network)

    def batch(step: int) -> dict[str, np.ndarray]:
        return train.batch(step, cfg.batch_size, seed=cfg.seed)

    def validate(module: Any) -> dict[str, float]:
        scores = validation_scores(probe, validation, limit=256)
        return {"rmse": scores["rmse"], "rmse_ratio": scores["rmse_ratio"], "crop_ratio": scores["crop_ratio"]}

    started = time.perf_counter()
    result = run_training(network, batch, _loss(cfg.beta, cfg.measured_weight, cfg.loss == "faithful"),
                          cfg.training_config(),
                          checkpoint=checkpoint, validate=validate, log=log)
    network = network.to("cpu").eval()
    model = LearnedModel(network)
    model.sigma_scale = calibrate(model, validation)
    scores = validation_scores(model, validation)
    model.card = _card(cfg, train, validation, scores, result, count_parameters(network),
                       time.perf_counter() - started)
    if start_from is not None:
        model.card["fine_tuned_from"] = start_from.content_hash
    history = {"steps": result.steps, "resumed_from": result.resumed_from, "seconds": result.seconds,
               "history": result.history}
    return model, history


def _card(cfg: LearnedTrainingConfig, train: TrainingSet, validation: TrainingSet, scores: dict[str, float],
          result: Any, n_parameters: int, seconds: float) -> dict[str, Any]:
    from importlib.metadata import version

    import torch

    attrs = train.attrs
    device = cfg.device
    hardware = {"device": device, "machine": platform.machine(), "processor": platform.processor() or "unknown",
                "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device != "cpu" and torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name(0)
    return {
        "task": "completion of partial scans (mean and standard deviation per pixel)",
        "training": {
            "samples": len(train),
            "crop": attrs.get("crop"),
            "image_classes": attrs.get("image_classes"),
            "mask_families": attrs.get("families"),
            "coverage_range": [float(train.meta["coverage"].min()), float(train.meta["coverage"].max())],
            "noise": ["none", "poisson (5-2000 counts at peak)", "gaussian (0.3-8 % of the range)"],
            "set_seed": attrs.get("seed"),
            "steps": result.steps,
            "epochs": round(result.steps * cfg.batch_size / len(train), 2),
            "seconds": round(seconds, 1),
            "config": asdict(cfg),
            "parameters": n_parameters,
        },
        "validation": {**{k: round(v, 5) for k, v in scores.items()}, "samples": len(validation),
                       "set_seed": validation.attrs.get("seed")},
        "hardware": hardware,
        "library_versions": {name: version(name) for name in ("fastflow", "torch", "numpy", "safetensors")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
