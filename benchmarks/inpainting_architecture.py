"""Which completion network to ship: a short training of each candidate on one training set, scored alike.

    python benchmarks/inpainting_architecture.py                      # the default candidates
    python benchmarks/inpainting_architecture.py --steps 1200 --sources 1200
    python benchmarks/inpainting_architecture.py --fit-one-batch      # how fast each loss fits the mean
    python benchmarks/inpainting_architecture.py --fine-tune spiral   # does a per-family model still pay?

Every candidate trains for the same steps on the same crops (generated once, here into --work) and is
scored on validation images (never trained on) at full size: NRMSE of the learned image against the
noise-free truth, as a ratio to biharmonic inpainting's NRMSE on the same mask, over mask families and
coverages; and the share of unmeasured pixels inside the calibrated 90 % interval. It prints one table.
Short trainings rank candidates; the shipped model then trains longer (README).

``--fit-one-batch`` fits one batch of eight crops for 300 steps with each loss (same network, seed and
batch) and prints the RMSE of the mean on those crops: how fast each loss can fit the mean at all.

``--fine-tune FAMILY`` fine-tunes the shipped (or ``--model``) model on masks of one family only, as long
as ``--steps``, and scores the general and the fine-tuned model on the validation images with masks of that
family and of the others (NRMSE relative to biharmonic), against a control continued as long on masks of
every family: whether one network for all scan paths gives up anything against a network for one path (the
adaptive-scans follow-up of partial STEM found it did). ``--noise none`` fine-tunes on noise-free crops
only: what a network told that the measurements are clean could do (the models are kept in ``--work``,
for ``benchmarks/inpainting.py --model``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def _make_set(path: Path, split: str, sources: int, crop: int, seed: int) -> None:
    from fastflow.recon.learned_data import chunk_samples, create_training_set, missing_chunks, write_chunk

    per_chunk = 25
    chunks = max(1, sources // per_chunk)
    params = create_training_set(path, chunks=chunks, sources_per_chunk=per_chunk, crop=crop, seed=seed, split=split)
    for chunk in missing_chunks(path):
        write_chunk(path, chunk, chunk_samples(chunk, sources=params["sources_per_chunk"], crop=crop, seed=seed,
                                               split=split))


def _cases(seed: int):
    """Validation images at full size: a generic photograph, STEM-like, flakes and particles phantoms."""
    from fastflow import phantoms
    from fastflow.recon.learned_data import PHANTOM_SEEDS, _generic
    from fastflow.stem import stem_image

    start = PHANTOM_SEEDS["validation"] + 900 + seed
    retina = _generic("retina")[300:556, 300:556]
    return {
        "retina": retina,
        "stem": stem_image((256, 256), seed=start).image,
        "flakes": phantoms.flakes((256, 256), seed=start),
        "particles": phantoms.particles((256, 256), seed=start),
    }


def _score(model, cases, families, coverages) -> tuple[float, float, float]:
    """Mean NRMSE ratio learned / biharmonic, its worst case, and the mean 90 % interval coverage."""
    from fastflow.metrics import nrmse
    from fastflow.recon import biharmonic
    from fastflow.recon.masks import scan_mask

    ratios, inside = [], []
    for truth in cases.values():
        for family in families:
            for coverage in coverages:
                mask = scan_mask(family, truth.shape, coverage, seed=1, image=truth)
                idx = np.argwhere(mask)
                values = truth[mask]
                mean, sigma = model.complete(_measurements(truth.shape, idx, values))
                base = biharmonic(_grid(truth.shape), idx, values)
                ratios.append(nrmse(truth, mean) / nrmse(truth, base))
                free = ~mask
                inside.append(np.mean(np.abs(mean - truth)[free] <= 1.645 * sigma[free]))
    return float(np.mean(ratios)), float(np.max(ratios)), float(np.mean(inside))


def _grid(shape):
    from fastflow.grid import ScanGrid

    return ScanGrid(shape)


def _measurements(shape, idx, values):
    from fastflow.recon.base import prepare_measurements

    return prepare_measurements(_grid(shape), idx, values)


CANDIDATES = {
    "unet-16-d4": {"base": 16, "depth": 4},
    "gated-12-d4": {"base": 12, "depth": 4, "conv": "gated"},
    "unet-16-d4-beta": {"base": 16, "depth": 4, "loss": "beta-nll"},
    "unet-16-d4-nll": {"base": 16, "depth": 4, "loss": "beta-nll", "beta": 0.0},
    "unet-16-d5": {"base": 16, "depth": 5},
    "unet-24-d4": {"base": 24, "depth": 4},
}
"""Candidates: the plain U-Net (faithful loss), gated convolutions at about the same cost, the beta-NLL
(beta 0.5) and the plain NLL (beta 0) instead of the faithful loss, one level deeper (a larger receptive
field) and wider."""


def fit_one_batch(threads: int) -> None:
    """RMSE of the mean after fitting one batch for 300 steps, per loss."""
    import torch

    from fastflow.nn.blocks import build
    from fastflow.nn.training import TrainingConfig, train
    from fastflow.recon.learned_data import TrainingSet, chunk_samples
    from fastflow.recon.learned_inputs import INPUT_CHANNELS, MASK_CHANNEL
    from fastflow.recon.learned_training import _loss

    torch.set_num_threads(threads)
    kind = dict(families=["random"], classes={"particles": 1.0}, noise_shares=(1, 0, 0))
    batch = TrainingSet.from_chunks([chunk_samples(0, sources=4, crop=48, crops_per_source=2, **kind)]).batch(0, 8)
    x, y = torch.from_numpy(batch["inputs"]), torch.from_numpy(batch["target"])
    free = x[:, MASK_CHANNEL] < 0.5

    def squared_error(module, b):
        out = module(b["inputs"])
        err = ((b["inputs"][:, 0] + out[:, 0] - b["target"]) ** 2) * (1 - b["inputs"][:, MASK_CHANNEL])
        return err.sum() / (1 - b["inputs"][:, MASK_CHANNEL]).sum(), {}

    losses = {"squared error (mean only)": (squared_error, 0), "faithful": (_loss(0.0, 0.2, True), 1),
              "beta-NLL, beta 1": (_loss(1.0, 0.2), 0), "beta-NLL, beta 0.5": (_loss(0.5, 0.2), 0),
              "NLL (beta 0)": (_loss(0.0, 0.2), 0)}
    print(f"one batch, 8 crops of 48 px: RMSE of the linear guess {float(((x[:, 0] - y)[free] ** 2).mean().sqrt()):.3f}")
    for name, (loss, detached) in losses.items():
        torch.manual_seed(0)
        net = build({"name": "unet", "in_channels": len(INPUT_CHANNELS), "out_channels": 2, "base": 8, "depth": 3, "detached": detached})
        train(net, lambda step: batch, loss, TrainingConfig(steps=300, learning_rate=3e-3, warmup=10, checkpoint_every=0))
        with torch.no_grad():
            mean = x[:, 0] + net(x)[:, 0]
        print(f"{name:<28} RMSE after 300 steps {float(((mean - y)[free] ** 2).mean().sqrt()):.3f}", flush=True)


NOISE_SHARES = {"all": None, "none": (1.0, 0.0, 0.0)}
"""``--noise``: the training mix's shares of no, Poisson and Gaussian noise (None: the shipped recipe's)."""


def fine_tune(family: str, steps: int, sources: int, crop: int, work: Path, model_path: str | None,
              threads: int, noise: str = "all") -> None:
    import torch

    from fastflow.recon.learned import LearnedModel
    from fastflow.recon.learned_data import TrainingSet, chunk_samples
    from fastflow.recon.learned_training import LearnedTrainingConfig, train_learned_model

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    general = LearnedModel.load(model_path)
    per_chunk = 25
    recipe = general.card.get("recipe", {}).get("training", {})
    config = LearnedTrainingConfig(**{**{k: v for k, v in recipe.items() if k in LearnedTrainingConfig.__dataclass_fields__},
                                      "steps": steps, "learning_rate": 5e-4, "warmup": 20, "checkpoint_every": 0,
                                      "validate_every": 0, "threads": threads})
    # the control continues the general model on masks of every family for the same steps, so that the
    # comparison separates specialisation from extra training
    tuned = {}
    for name, families in ((family, [family]), ("all families", None)):
        kind = {"families": families} if families else {}
        if NOISE_SHARES[noise] is not None:
            kind["noise_shares"] = NOISE_SHARES[noise]
        train = TrainingSet.from_chunks([chunk_samples(i, sources=per_chunk, crop=crop, seed=7, **kind)
                                         for i in range(max(1, sources // per_chunk))])
        validation = TrainingSet.from_chunks([chunk_samples(0, sources=per_chunk, crop=crop, seed=7,
                                                            split="validation", **kind)])
        tuned[name], history = train_learned_model(train, validation, config, start_from=general)
        tuned[name].save(work / f"fine-tuned-{name.replace(' ', '-')}.safetensors")
        print(f"continued on {name}: {steps} steps, {len(train)} crops, {history['seconds']:.0f} s", flush=True)
    cases = _cases(1)
    others = [f for f in ("random", "spiral", "lines", "raster") if f != family][:2]
    print(f"{'masks':<10} {'general':>10} {'+ ' + family:>16} {'+ all families':>16}   (NRMSE / biharmonic)")
    for masks in (family, *others):
        scores = [_score(m, cases, (masks,), (0.02, 0.1, 0.3))[0] for m in (general, *tuned.values())]
        print(f"{masks:<10} " + " ".join(f"{s:>16.3f}" if i else f"{s:>10.3f}" for i, s in enumerate(scores)),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default="unet-16-d4,gated-12-d4,unet-16-d4-nll")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sources", type=int, default=600, help="training sources (2 crops each)")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--work", default="/tmp/fastflow-architecture")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fit-one-batch", action="store_true", help="compare the losses on one batch and stop")
    parser.add_argument("--fine-tune", default=None, metavar="FAMILY", help="fine-tune on one mask family and stop")
    parser.add_argument("--model", default=None, help="with --fine-tune: the general model (default: shipped)")
    parser.add_argument("--noise", default="all", choices=sorted(NOISE_SHARES),
                        help="with --fine-tune: the noise of the fine-tuning crops (none: noise-free only)")
    args = parser.parse_args()
    if args.fit_one_batch:
        fit_one_batch(args.threads)
        return
    if args.fine_tune:
        fine_tune(args.fine_tune, args.steps, args.sources, args.crop, Path(args.work), args.model, args.threads,
                  args.noise)
        return

    import torch

    from fastflow.recon.learned_data import load_training_set
    from fastflow.recon.learned_training import LearnedTrainingConfig, train_learned_model

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _make_set(work / "train.zarr", "train", args.sources, args.crop, seed=0)
    _make_set(work / "validation.zarr", "validation", max(50, args.sources // 8), args.crop, seed=0)
    print(f"training set: {time.perf_counter() - t0:.0f} s")
    train, validation = load_training_set(work / "train.zarr"), load_training_set(work / "validation.zarr")
    cases = _cases(0)
    families, coverages = ("random", "spiral", "lines"), (0.02, 0.1, 0.3)
    print(f"{'candidate':<16} {'params':>8} {'train s':>8} {'val rmse/lin':>12} {'NRMSE/biharm':>12} "
          f"{'worst':>6} {'in 90%':>7}", flush=True)
    for name in args.candidates.split(","):
        options = CANDIDATES[name]
        config = LearnedTrainingConfig(steps=args.steps, batch_size=args.batch_size, validate_every=0,
                                       checkpoint_every=0, threads=args.threads, **options)
        model, history = train_learned_model(train, validation, config)
        mean_ratio, worst, inside = _score(model, cases, families, coverages)
        print(f"{name:<16} {model.card['training']['parameters']:>8} {history['seconds']:>8.0f} "
              f"{model.card['validation']['rmse_ratio']:>12.3f} {mean_ratio:>12.3f} {worst:>6.2f} {inside:>7.3f}",
              flush=True)


if __name__ == "__main__":
    main()
