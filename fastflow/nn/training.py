"""One training loop for every fastflow network, with checkpoints that a killed training resumes from.

:func:`train` runs Adam (AdamW with ``weight_decay``) for a number of steps on batches from a function of
the step number, with a linear warm-up and a cosine decay of the learning rate, gradient clipping and a
validation callback. Every ``checkpoint_every`` steps it writes a checkpoint: the network weights, the
optimiser's state, the step and the history, as one fastflow model file (safetensors; written to a
temporary name and renamed, so a kill during the write leaves the previous checkpoint). Started again
with the same checkpoint path, it resumes from the last checkpoint and, because batches depend only on the
step number and the learning rate only on the step, it ends with the weights an uninterrupted run would
have given (on the CPU, with the same thread count).

Examples
--------
>>> import numpy as np, torch
>>> net = torch.nn.Linear(1, 1)
>>> net.config = {"name": "linear"}  # only needed to save the trained network
>>> def batch(step):
...     x = np.random.default_rng(step).normal(size=(16, 1)).astype(np.float32)
...     return {"x": x, "y": 3 * x}
>>> def loss(module, b):
...     value = ((module(b["x"]) - b["y"]) ** 2).mean()
...     return value, {}
>>> result = train(net, batch, loss, TrainingConfig(steps=300, learning_rate=0.05, warmup=10))
>>> round(float(net.weight), 1)
3.0
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.modelfile import ModelError, read_model_file, write_model_file
from fastflow.nn import require_torch, resolve_device

torch = require_torch("fastflow.nn")

__all__ = ["CHECKPOINT_KIND", "TrainingConfig", "TrainingResult", "learning_rate_at", "train"]

CHECKPOINT_KIND = "fastflow-training-checkpoint"
CHECKPOINT_VERSION = 1

Batch = Mapping[str, Any]
BatchFn = Callable[[int], Batch]
LossFn = Callable[[Any, Mapping[str, Any]], tuple[Any, Mapping[str, float]]]


@dataclass(frozen=True)
class TrainingConfig:
    """How to train.

    Attributes
    ----------
    steps : int
        Optimiser steps in all (a resumed run counts the steps already done).
    learning_rate : float
        Peak learning rate.
    weight_decay : float
        AdamW's decoupled weight decay.
    warmup : int
        Steps of linear warm-up from 1 % of the peak.
    final_fraction : float
        The cosine decay ends at this fraction of the peak.
    grad_clip : float
        Largest gradient norm (0: no clipping).
    checkpoint_every : int
        Steps between checkpoints (0: only at the end).
    validate_every : int
        Steps between validation calls (0: only at the end).
    seed : int
        Seed of torch's generator, set before the first step.
    device : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    threads : int or None
        torch's intra-op threads on the CPU (None: leave as is).
    """

    steps: int
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    final_fraction: float = 0.05
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    validate_every: int = 0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "warmup", "checkpoint_every", "validate_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "steps" else 0):
                raise InputError(f"{name} must be a {'positive' if name == 'steps' else 'non-negative'} integer; "
                                 f"got {value!r}")
        for name in ("learning_rate", "weight_decay", "final_fraction", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0; got {value!r}")
        if self.learning_rate <= 0:
            raise InputError(f"learning_rate must be > 0; got {self.learning_rate!r}")

    def fingerprint(self) -> str:
        """A hash of what decides the weights (device and threads aside): a checkpoint of another
        configuration is not resumed."""
        relevant = {k: v for k, v in asdict(self).items() if k not in ("device", "threads", "checkpoint_every",
                                                                      "validate_every")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainingResult:
    """What :func:`train` did.

    Attributes
    ----------
    steps : int
        Steps done in all.
    resumed_from : int
        The step the run resumed from (0 for a fresh start).
    history : list of dict
        One entry per logged step: ``step``, ``loss``, ``learning_rate``, the loss function's metrics,
        and ``validation`` (a dict) where validation ran.
    seconds : float
        Wall time of the training, summed over the runs that resumed it (checkpoints carry it).
    """

    steps: int
    resumed_from: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def learning_rate_at(step: int, config: TrainingConfig) -> float:
    """The learning rate of ``step`` (0-based): linear warm-up, then a cosine decay to the final fraction."""
    peak = config.learning_rate
    if config.warmup and step < config.warmup:
        return peak * (0.01 + 0.99 * (step + 1) / config.warmup)
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    low = peak * config.final_fraction
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    module: Any,
    batch: BatchFn,
    loss: LossFn,
    config: TrainingConfig,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    validate: Callable[[Any], Mapping[str, float]] | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
) -> TrainingResult:
    """Train ``module`` in place.

    Parameters
    ----------
    module : torch.nn.Module
        The network, freshly built (with ``torch.manual_seed(config.seed)`` for reproducible
        initialisation); a resumed run loads the checkpoint's weights into it.
    batch : callable
        ``batch(step) -> {name: numpy array or tensor}``; it must depend on the step only (e.g. draw from
        ``numpy.random.default_rng([seed, step])``), so that a resumed run sees the same batches.
    loss : callable
        ``loss(module, batch_on_device) -> (scalar loss tensor, {metric: float})``.
    config : TrainingConfig
    checkpoint : path, optional
        Checkpoint file. If it exists, training resumes from it (refused if it was made with another
        configuration or network); it is rewritten every ``checkpoint_every`` steps and at the end.
    validate : callable, optional
        ``validate(module) -> {metric: float}``, called in eval mode without gradients every
        ``validate_every`` steps and at the end; its results go into the history.
    log : callable, optional
        Receives one progress line every ``log_every`` steps.
    log_every : int, optional
        Steps between history entries and log lines.

    Returns
    -------
    TrainingResult

    Raises
    ------
    ModelError
        If the checkpoint cannot be read or belongs to another training.
    FloatingPointError
        If the loss becomes NaN or infinite (the last checkpoint is kept).
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed)
    module.to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    path = Path(checkpoint) if checkpoint is not None else None
    history: list[dict[str, Any]] = []
    start, before = 0, 0.0
    if path is not None and path.exists():
        start, history, before = _load_checkpoint(path, module, optimizer, config, device)
        if log:
            log(f"resumed from {path} at step {start}")
    result = TrainingResult(steps=start, resumed_from=start, history=history)
    module.train()
    for step in range(start, config.steps):
        rate = learning_rate_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = rate
        tensors = _to_device(batch(step), device)
        optimizer.zero_grad(set_to_none=True)
        value, metrics = loss(module, tensors)
        if not torch.isfinite(value):
            raise FloatingPointError(f"the loss became {float(value)} at step {step}; the last checkpoint is kept")
        value.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        done = step + 1
        last = done == config.steps
        entry: dict[str, Any] | None = None
        if done % max(1, log_every) == 0 or last:
            entry = {"step": done, "loss": float(value.detach()), "learning_rate": rate,
                     **{k: float(v) for k, v in metrics.items()}}
        if validate is not None and ((config.validate_every and done % config.validate_every == 0) or last):
            entry = entry or {"step": done, "loss": float(value.detach()), "learning_rate": rate}
            entry["validation"] = _validate(module, validate)
        if entry is not None:
            history.append(entry)
            if log:
                shown = {k: v for k, v in entry.items() if k not in ("step", "loss", "learning_rate", "validation")}
                extra = "".join(f", {k} {v:.4g}" for k, v in shown.items())
                extra += "".join(f", validation {k} {v:.4g}" for k, v in entry.get("validation", {}).items())
                log(f"step {done}/{config.steps}: loss {entry['loss']:.4g}, lr {rate:.3g}{extra}")
        if path is not None and ((config.checkpoint_every and done % config.checkpoint_every == 0) or last):
            _save_checkpoint(path, module, optimizer, config, done, history,
                             before + time.perf_counter() - started)
        result.steps = done
    module.eval()
    result.history = history
    result.seconds = before + time.perf_counter() - started
    return result


def _validate(module: Any, validate: Callable[[Any], Mapping[str, float]]) -> dict[str, float]:
    module.eval()
    with torch.no_grad():
        scores = {k: float(v) for k, v in validate(module).items()}
    module.train()
    return scores


def _to_device(batch: Batch, device: Any) -> dict[str, Any]:
    out = {}
    for name, value in batch.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        out[name] = tensor.to(device)
    return out


def _architecture(module: Any) -> Any:
    return getattr(module, "config", type(module).__name__)


def _save_checkpoint(path: Path, module: Any, optimizer: Any, config: TrainingConfig, step: int,
                     history: list[dict[str, Any]], seconds: float) -> None:
    arrays: dict[str, np.ndarray] = {
        f"net.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
    }
    state = optimizer.state_dict()
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            arrays[f"opt.{index}.{slot}"] = tensor.detach().cpu().numpy().copy()
    card = {
        "step": step,
        "seconds": round(seconds, 3),
        "history": history,
        "config": asdict(config),
        "fingerprint": config.fingerprint(),
        "architecture": _architecture(module),
        "param_groups": state["param_groups"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_model_file(path, arrays, kind=CHECKPOINT_KIND, version=CHECKPOINT_VERSION, card=card)


def _load_checkpoint(path: Path, module: Any, optimizer: Any, config: TrainingConfig,
                     device: Any) -> tuple[int, list[dict[str, Any]], float]:
    name = os.fspath(path)
    saved = read_model_file(name, kind=CHECKPOINT_KIND, versions=(CHECKPOINT_VERSION,), what="training checkpoint")
    card = saved.card
    if card.get("fingerprint") != config.fingerprint():
        raise ModelError(
            f"{name} is a checkpoint of another training configuration; use a new checkpoint path (or "
            "delete it) to start afresh"
        )
    if card.get("architecture") != json.loads(json.dumps(_architecture(module))):
        raise ModelError(f"{name} is a checkpoint of another network ({card.get('architecture')!r})")
    net = {k[4:]: torch.from_numpy(v) for k, v in saved.arrays.items() if k.startswith("net.")}
    try:
        module.load_state_dict(net)
    except RuntimeError as exc:
        raise ModelError(f"{name} does not fit this network: {str(exc).splitlines()[0]}") from None
    module.to(device)
    slots: dict[int, dict[str, Any]] = {}
    for key, value in saved.arrays.items():
        if key.startswith("opt."):
            _, index, slot = key.split(".", 2)
            slots.setdefault(int(index), {})[slot] = torch.from_numpy(value)
    optimizer.load_state_dict({"state": slots, "param_groups": card["param_groups"]})
    step = int(card["step"])
    if not 0 < step <= config.steps:
        raise ModelError(f"{name} holds step {step}, outside this training's {config.steps} steps")
    return step, list(card.get("history", [])), float(card.get("seconds", 0.0))
