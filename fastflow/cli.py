"""The ``fastflow`` command.

Every error a user can cause is printed as one line on stderr with exit status 2; nothing is overwritten.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fastflow.errors import FastflowError, InputError

app = typer.Typer(
    help="fastflow: adaptive scanning microscopy. Decide where to measure, rebuild the rest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

@app.command()
def scan(
    sample: Annotated[Optional[str], typer.Option(help="Bundled sample name (see `fastflow samples`) or a .tif/.tiff/.npy/.png file [default: flakes]. With --instrument epics: the truth for metrics, if known.", show_default=False)] = None,
    sampler: Annotated[str, typer.Option(help="Sampler name (see `fastflow samplers`).")] = "fast",
    instrument: Annotated[str, typer.Option(help="simulated, or epics (with --pv-map).")] = "simulated",
    pv_map: Annotated[Optional[Path], typer.Option(help="EPICS: the PV map file (TOML; see `fastflow ioc --write-pv-map`).")] = None,
    shape: Annotated[Optional[str], typer.Option(help="EPICS: grid shape NY,NX (default: the --sample's shape).")] = None,
    origin: Annotated[Optional[str], typer.Option(help="Physical position Y,X of pixel (0, 0) [default: 0,0].")] = None,
    stop_coverage: Annotated[str, typer.Option(help="Stop when this fraction of pixels is measured, in (0, 1].")] = "0.2",
    out: Annotated[Optional[Path], typer.Option(help="New folder for this run (default: ./fastflow-runs/RUN_ID, or $FASTFLOW_DATA_DIR/RUN_ID).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a stopped run (its id under the data folder, or its folder); other scan options are ignored.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (sampler, noise).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Points measured per step.")] = 50,
    snapshots: Annotated[str, typer.Option(help="Coverages at which to store a reconstruction and metrics, e.g. 0.05,0.1.")] = "0.05,0.1,0.15,0.2",
    noise: Annotated[str, typer.Option(help="Simulated detector noise: none, poisson:PEAK_COUNTS or gaussian:SIGMA (fraction of the image range).")] = "none",
    recon: Annotated[str, typer.Option(help="Reconstruction for snapshots and the final image (idw, linear, cubic, biharmonic, learned; learned also stores its uncertainty map).")] = "idw",
    evaluate: Annotated[str, typer.Option(help="After the scan, rebuild and score the snapshots with these methods on Dask (comma-separated, from idw, linear, cubic, biharmonic, learned; 'none' to skip).")] = "idw,biharmonic",
    time_budget: Annotated[Optional[float], typer.Option(help="Stop when the acquisition time (the instrument's seconds) reaches this.")] = None,
    target_nrmse: Annotated[Optional[float], typer.Option(help="Stop when the reconstruction's estimated NRMSE (its upper estimate, from the measured points alone) is at or below this, e.g. 0.05; from 5 % coverage on.", show_default=False)] = None,
    pixel_size: Annotated[float, typer.Option(help="Pixel size of the simulated grid.")] = 1.0,
    units: Annotated[str, typer.Option(help="Units of the pixel size.")] = "px",
    timing: Annotated[Optional[str], typer.Option(help="The instrument's time model: a preset (see `fastflow timing presets`) or a JSON file (e.g. from `fastflow timing fit`). Simulated: what it measures with [default: demo]; EPICS: the beamline's model, weighed by FAST and used to fly straight runs on a list map with a list.fly PV [default: none].", show_default=False)] = None,
    dwell: Annotated[Optional[float], typer.Option(help="Simulated dwell time per point, seconds [default: the time model's, 0.01 for demo].", show_default=False)] = None,
    speed: Annotated[Optional[float], typer.Option(help="Simulated stage speed, the time model's units per second [default: the model's, 100 px/s for demo].", show_default=False)] = None,
    settle: Annotated[Optional[float], typer.Option(help="Simulated settle time after each move, seconds [default: the model's, 0.005 for demo].", show_default=False)] = None,
    report: Annotated[str, typer.Option(help="Report format: text, or json (one JSON object on stdout).")] = "text",
    route: Annotated[Optional[bool], typer.Option("--route/--no-route", help="Visit each batch along a short route (default: for samplers whose batches are sets).")] = None,
    overlap: Annotated[bool, typer.Option("--overlap/--no-overlap", help="Choose the next batch while the instrument measures this one.")] = False,
    model: Annotated[Optional[Path], typer.Option(help="FAST: ERD model file (default: the model shipped with fastflow).")] = None,
    initial_coverage: Annotated[Optional[float], typer.Option(help="FAST: coverage of the initial scan [default: the sampler's].")] = None,
    initial: Annotated[Optional[str], typer.Option(help="FAST: initial scan: 'interlaced' (the coarse levels of the fill's lattice) or 'halton' (as in the paper) [default: interlaced].")] = None,
    diversity: Annotated[Optional[float], typer.Option(help="FAST: spread of each batch (0 = plain top-ERD) [default: the sampler's].")] = None,
    proximity: Annotated[Optional[float], typer.Option(help="FAST: discount of pixels close to measurements, in mean spacings (0 = off) [default: the sampler's].")] = None,
    explore: Annotated[Optional[float], typer.Option(help="FAST: share of each batch from the continued low-discrepancy pattern [default: the sampler's].")] = None,
    erd_stop: Annotated[Optional[float], typer.Option(help="FAST: stop when the total ERD falls below this fraction of its start.")] = None,
    fill: Annotated[Optional[str], typer.Option(help="FAST: share of each batch from fill picks (the interlaced lattice of the stop coverage, then farthest-point), or 'auto' (set from the measured payoff of ERD picks) [default: auto].")] = None,
    cost: Annotated[Optional[str], typer.Option(help="FAST: the time model its choices weigh: 'auto' (the instrument's --timing; point-wise on EPICS without one), 'off' (point-wise FAST, as in the paper), a preset or a JSON file from `fastflow timing fit` [default: auto].", show_default=False)] = None,
    segments: Annotated[Optional[str], typer.Option(help="FAST on a travel-bound instrument that flies: 'auto' (measure flown row segments) or 'off' (tours of points) [default: auto].", show_default=False)] = None,
    roi: Annotated[Optional[str], typer.Option(help="Measure only inside this region: a mask file (.png/.tif/.npy, nonzero inside), a .json polygon file, or a polygon 'x,y; x,y; x,y' in grid pixels. Coverage counts its pixels.", show_default=False)] = None,
    no_go: Annotated[Optional[list[str]], typer.Option(help="Never measure inside this region (same forms as --roi); repeat for several. The report says how far the stage route crossed them.", show_default=False)] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the run to Tiled (a server given by --tiled-uri or $FASTFLOW_TILED_URI, else the data folder's local catalog).")] = True,
    tiled_uri: Annotated[Optional[str], typer.Option(help="Tiled server to publish to (default: $FASTFLOW_TILED_URI, else the local catalog).")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key of that Tiled server (default: $FASTFLOW_TILED_API_KEY).")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Dask scheduler for the evaluation (default: a local cluster).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Workers of the local Dask cluster (default: one per core).")] = None,
) -> None:
    """Scan a sample on the simulated instrument (through the adaptive-scan flow), evaluate it and publish it."""
    from fastflow.runs import ScanConfig, find_run, runs_root
    from fastflow.scan import new_run_id
    from fastflow.store import jsonable

    # 1. validate everything before anything is created or Prefect starts
    if report not in ("text", "json"):
        raise InputError(f"--report must be text or json; got {report!r}")
    methods = [] if evaluate.strip().lower() == "none" else _split(evaluate, "--evaluate")
    params: dict[str, Any] = {"evaluate_methods": methods, "publish": publish, "tiled_uri": tiled_uri,
                              "api_key": api_key, "dask_address": dask_address, "n_workers": workers}
    if resume:
        run_dir = find_run(resume)
        params["resume"] = str(run_dir)
    else:
        options = {"model": str(model) if model is not None else None, "initial_coverage": initial_coverage,
                   "initial": initial, "diversity": diversity, "proximity": proximity, "explore": explore, "erd_stop": erd_stop,
                   "fill": _fill(fill), "cost": cost, "segments": segments}
        options = {k: v for k, v in options.items() if v is not None}
        if sample is None and instrument == "simulated":
            sample = "flakes"
        config = ScanConfig(sample=sample, sampler=sampler, coverage=stop_coverage, batch_size=batch_size,
                            snapshots=snapshots, recon=recon, seed=seed, time_budget=time_budget, noise=noise,
                            target_nrmse=target_nrmse,
                            pixel_size=pixel_size, units=units, timing=timing, dwell=dwell, speed=speed,
                            settle=settle, route=route, overlap=overlap, sampler_options=options, instrument=instrument,
                            pv_map=str(pv_map) if pv_map is not None else None,
                            shape=_numbers(shape, "--shape", int, 2), origin=_numbers(origin, "--origin", float, 2),
                            roi=roi, no_go=list(no_go or []))
        config.check()
        run_id = new_run_id()
        run_dir = Path(out) if out is not None else runs_root() / run_id
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise InputError(f"output folder {run_dir} already exists and is not empty; choose a new --out")
        params.update({k: v for k, v in config.to_dict().items()})
        params.update({"run_dir": str(run_dir), "run_id": run_id})

    # 2. run the flow (Prefect without a server unless PREFECT_API_URL is set)
    _prefect_defaults()
    _quiet_progress_lines()
    from flows.adaptive_scan import adaptive_scan

    try:
        summary = adaptive_scan(**params)
    except KeyboardInterrupt:
        typer.echo(_interrupted_message(Path(run_dir)), err=True)
        raise typer.Exit(_interrupt_status()) from None
    if report == "json":
        typer.echo(json.dumps(jsonable(summary)))
    else:
        _print_report(summary)


@app.command()
def control(
    run: Annotated[str, typer.Argument(help="The run: its id under the data folder, or its folder.")],
    action: Annotated[str, typer.Argument(help="pause, resume, stop, stop-rule (with --coverage, --time-budget and/or --target-nrmse) or no-go (with --region).")],
    coverage: Annotated[Optional[float], typer.Option(help="stop-rule: the new stop coverage, in (0, 1].", show_default=False)] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="stop-rule: the new time budget, seconds of acquisition.", show_default=False)] = None,
    target_nrmse: Annotated[Optional[float], typer.Option(help="stop-rule: the new target of the estimated NRMSE.", show_default=False)] = None,
    region: Annotated[Optional[str], typer.Option(help="no-go: a polygon 'x,y; x,y; x,y' in grid pixels, or a mask / .json polygon file.", show_default=False)] = None,
) -> None:
    """Steer a running scan: pause, resume, stop (data kept), change its stop rule, or add a no-go region.

    The control takes effect at the next batch boundary and is recorded, with its time, in the run's
    provenance (the store's `controls` attribute). Sent while no scan runs, it applies when the run resumes.
    """
    from fastflow.controls import send_control
    from fastflow.runs import find_run

    run_dir = find_run(run)
    path = send_control(run_dir, action, source="cli", coverage=coverage, time_budget=time_budget,
                        target_nrmse=target_nrmse, region=region)
    typer.echo(f"sent {action} to run {run_dir.name} ({path.name}); it applies at the next batch boundary")


@app.command()
def benchmark(
    samplers: Annotated[str, typer.Option(help="Samplers to compare (comma-separated).")] = "fast,halton,random,raster",
    images: Annotated[str, typer.Option(help="Images: bundled sample names, phantom:seed (e.g. lattice:5) or files.")] = "flakes,coins,cell",
    coverages: Annotated[str, typer.Option(help="Coverages to score.")] = "0.05,0.1,0.15,0.2,0.3",
    seeds: Annotated[str, typer.Option(help="Seeds (comma-separated); results are averaged over them.")] = "0",
    recon: Annotated[str, typer.Option(help="Reconstruction used for scoring (idw; linear; biharmonic as in the FAST paper, slower; learned).")] = "idw",
    batch_size: Annotated[int, typer.Option(help="Points per step of adaptive samplers.")] = 50,
    noise: Annotated[str, typer.Option(help="Simulated detector noise (none, poisson:PEAK, gaussian:SIGMA).")] = "none",
    max_side: Annotated[int, typer.Option(help="Images are downscaled to this longer side.")] = 256,
    out: Annotated[Optional[Path], typer.Option(help="New folder for the results (default: a benchmark-<time> folder in the data folder).")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the results dataset to Tiled.")] = True,
    tiled_uri: Annotated[Optional[str], typer.Option(help="Tiled server (default: $FASTFLOW_TILED_URI, else the local catalog).")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key of that Tiled server.")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="Dask scheduler (default: a local cluster).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Workers of the local Dask cluster (default: one per core).")] = None,
) -> None:
    """Compare samplers on images at several coverages (the benchmark-samplers flow): table, curves, Tiled."""
    from fastflow.benchmark import check_sweep
    from fastflow.scan import parse_fractions

    def ints(text: str, what: str) -> list[int]:
        try:
            return [int(v) for v in _split(text, what)]
        except ValueError:
            raise InputError(f"{what} must be integers; got {text!r}") from None

    params = {"samplers": _split(samplers, "--samplers"), "images": _split(images, "--images"),
              "coverages": parse_fractions(coverages, "--coverages"), "seeds": ints(seeds, "--seeds")}
    check_sweep(**params)
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"output folder {out} already exists and is not empty; choose a new --out")
    params.update({"recon": recon, "batch_size": batch_size, "noise": None if noise == "none" else noise,
                   "max_side": max_side, "out": str(out) if out else None, "publish": publish,
                   "tiled_uri": tiled_uri, "api_key": api_key, "dask_address": dask_address, "n_workers": workers})
    _prefect_defaults()
    from flows.benchmark_samplers import benchmark_samplers

    result = benchmark_samplers(**params)
    typer.echo(result["table"])
    typer.echo(f"sweep wall time {result['sweep_wall_time_s']:.1f} s")
    typer.echo(f"results: {result['folder']} (results.zarr, results.json, table.md, curves.png)")
    if result.get("tiled"):
        typer.echo(f"published to Tiled as {result['tiled']['key']!r}")


@app.command()
def serve(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder of the runs (default: $FASTFLOW_DATA_DIR or ./fastflow-runs); a run folder serves the folder above it.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key clients must send (default: $FASTFLOW_TILED_API_KEY, else a new random key, printed).")] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean to share it.")] = "127.0.0.1",
) -> None:
    """Serve every run of a data folder through Tiled (runs not yet in its catalog are published first)."""
    from fastflow.catalog import serve as serve_catalog
    from fastflow.runs import runs_root

    key = api_key or os.environ.get("FASTFLOW_TILED_API_KEY") or None
    serve_catalog(data_dir if data_dir is not None else runs_root(), host=host, port=port, api_key=key)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def ioc(ctx: typer.Context) -> None:
    """A simulated scanning beamline as a caproto soft IOC on 127.0.0.1 (`fastflow ioc --help` for options).

    fastflow ioc --sample NAME_OR_PATH [--prefix SIM:] [--noise ...] [--pixel-size D] [--timing MODEL] [--time-scale S]
    [--write-pv-map FILE]; Channel Access ports come from the EPICS environment variables.
    """
    try:
        from fastflow.instruments.ioc import main as ioc_main
    except ImportError as exc:
        raise InputError(f"the IOC needs the epics extra: pip install 'fastflow[epics]' ({exc})") from None
    raise typer.Exit(ioc_main(list(ctx.args)))


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="New or empty folder for the models, their cards and the selection report.")],
    images: Annotated[str, typer.Option(help="Training images: comma-separated sample names, phantom:seed or files.")] = "default",
    validation_images: Annotated[str, typer.Option(help="Images used only to choose c.")] = "default",
    c: Annotated[str, typer.Option(help="Candidate c values, e.g. 2,4,8,16,32.")] = "2,4,8,16,32",
    seed: Annotated[int, typer.Option(help="Seed of masks, rows, the kernel map and the network.")] = 0,
    rows: Annotated[int, typer.Option(help="Training rows per mask.")] = 4000,
    max_iter: Annotated[int, typer.Option(help="Maximum training epochs (early stopping on 10 % of rows).")] = 200,
    max_side: Annotated[int, typer.Option(help="Training images are downscaled to this longer side.")] = 256,
) -> None:
    """Train ERD models for several c and keep the one whose simulated scans are best."""
    from fastflow.erd.fit import DEFAULT_TRAINING, DEFAULT_VALIDATION, card_json, load_image_set, train_and_select

    c_values = [float(v) for v in _split(c, "--c")]
    if any(not (v > 0 and math.isfinite(v)) for v in c_values):
        raise InputError(f"--c values must be positive numbers; got {c!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"output folder {out} already exists and is not empty; choose a new --out")
    train_names = DEFAULT_TRAINING if images == "default" else _split(images, "--images")
    val_names = DEFAULT_VALIDATION if validation_images == "default" else _split(validation_images, "--validation-images")
    overlap = set(train_names) & set(val_names)
    if overlap:
        raise InputError(f"images used both for training and for choosing c: {', '.join(sorted(overlap))}")
    training = load_image_set(train_names, max_side)
    validation = load_image_set(val_names, max(96, max_side * 5 // 8))
    model, scores, models = train_and_select(training, validation, c_values=c_values, seed=seed, rows=rows,
                                             max_iter=max_iter, log=lambda m: typer.echo(m, err=True))
    out.mkdir(parents=True, exist_ok=True)
    for value, m in models.items():
        m.save(out / f"erd-c{value:g}.safetensors")
    model.save(out / "erd-model.safetensors")
    (out / "model-card.json").write_text(card_json(model))
    typer.echo(f"chosen c = {model.card['c']:g}; model: {out / 'erd-model.safetensors'}")
    typer.echo(model.describe())


def _fill(text: Optional[str]) -> Any:
    """``--fill``: ``auto`` or a share as a number (the sampler checks its range)."""
    if text is None or text.strip().lower() == "auto":
        return None if text is None else "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--fill must be 'auto' or a share in [0, 1]; got {text!r}") from None


def _numbers(text: Optional[str], what: str, kind: type, count: int) -> Optional[list]:
    """``"a,b"`` as ``count`` numbers of ``kind``, or None."""
    if text is None:
        return None
    try:
        values = [kind(v) for v in _split(text, what)]
    except ValueError:
        raise InputError(f"{what} must be {count} comma-separated numbers; got {text!r}") from None
    if len(values) != count:
        raise InputError(f"{what} must be {count} comma-separated numbers; got {text!r}")
    return values


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError(f"{what} needs at least one value")
    return items


@app.command("train-recon")
def train_recon(
    out: Annotated[Path, typer.Option(help="Folder for the training sets, checkpoint, model and figures (rerun the same command with the same folder to resume).")],
    train_sources: Annotated[int, typer.Option(help="Source images of the training set (2 crops each).")] = 2400,
    validation_sources: Annotated[int, typer.Option(help="Source images of the validation set.")] = 200,
    crop: Annotated[int, typer.Option(help="Side of the training crops, in pixels.")] = 96,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 4000,
    batch_size: Annotated[int, typer.Option(help="Crops per step.")] = 16,
    base: Annotated[int, typer.Option(help="Channels of the U-Net's first level.")] = 16,
    depth: Annotated[int, typer.Option(help="Levels of the U-Net.")] = 4,
    conv: Annotated[str, typer.Option(help="plain or gated convolutions.")] = "plain",
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate (Adam).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of the training sets, the initialisation and the batches.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (the same code trains on either).")] = "cpu",
    workers: Annotated[Optional[int], typer.Option(help="Processes generating the training sets [default: one per core].", show_default=False)] = None,
) -> None:
    """Train the learned reconstruction (training sets, training with checkpoints, calibration, card, figures)."""
    from fastflow.recon.learned_build import Recipe, build_learned_model
    from fastflow.recon.learned_training import LearnedTrainingConfig

    training = LearnedTrainingConfig(base=base, depth=depth, conv=conv, steps=steps, batch_size=batch_size,
                                     learning_rate=learning_rate, seed=seed, device=device)
    recipe = Recipe(train_sources=train_sources, validation_sources=validation_sources, crop=crop,
                    data_seed=seed, training=training)
    result = build_learned_model(out, recipe, workers=workers, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"model: {result['model']} (trained in {result['seconds']:.0f} s)")
    typer.echo(f"card: {out / 'model-card.json'}; figures: {', '.join(result['figures'].values())}")


@app.command()
def recon(
    run: Annotated[str, typer.Argument(help="A run id under the data folder, or a run folder.")],
    method: Annotated[str, typer.Option(help="Reconstruction method (learned, idw, linear, cubic, biharmonic).")] = "learned",
    model: Annotated[Optional[Path], typer.Option(help="Model file for --method learned [default: the shipped one].", show_default=False)] = None,
    coverages: Annotated[Optional[str], typer.Option(help="Coverages to rebuild, e.g. 0.05,0.1 [default: the run's snapshots].", show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where run ids are looked up [default: $FASTFLOW_DATA_DIR or ./fastflow-runs].", show_default=False)] = None,
) -> None:
    """Apply a reconstruction (a learned model by default) to a stored run: image and uncertainty at each
    coverage, scored against the truth where it is known, written to the run's evaluation.zarr."""
    from fastflow.evaluate import apply_to_run
    from fastflow.scan import parse_fractions

    wanted = parse_fractions(coverages, "coverage") if coverages else None
    options = {"model": str(model)} if model is not None else {}
    if model is not None and method != "learned":
        raise InputError("--model goes with --method learned")
    result = apply_to_run(run, method, coverages=wanted, data_dir=data_dir, **options)
    for row in result["rows"]:
        scores = ", ".join(f"{k} {row[k]:.4f}" for k in ("nrmse", "ssim", "coverage90") if k in row)
        typer.echo(f"{method} at {row['coverage']:.1%} ({row['n_points']} points){': ' + scores if scores else ''}")
    typer.echo(f"written: {result['evaluation']}")


@app.command("convert-model")
def convert_model(
    source: Annotated[Path, typer.Argument(help="An ERD model of fastflow 0.1 (.npz, format 1).")],
    target: Annotated[Path, typer.Argument(help="The new model file (.safetensors).")],
) -> None:
    """Convert an .npz ERD model of fastflow 0.1 into today's model file (safetensors); nothing is unpickled."""
    from fastflow.erd.model import convert_npz_model

    if target.exists():
        raise InputError(f"{target} already exists; choose a new file name")
    model = convert_npz_model(source, target)
    typer.echo(f"written {target}")
    typer.echo(model.describe())


@app.command()
def samplers() -> None:
    """List the samplers."""
    from fastflow.sampling.registry import available_samplers

    for name, text in available_samplers().items():
        typer.echo(f"{name:<12} {text}")


@app.command()
def samples() -> None:
    """List the bundled samples (any .tif/.tiff/.npy/.png path works too)."""
    from fastflow.images import available_samples

    for name, text in available_samples().items():
        typer.echo(f"{name:<12} {text}")


timing_app = typer.Typer(help="Acquisition time models: presets, a grid's raster time and costs, a model fitted to a run.",
                         no_args_is_help=True)
app.add_typer(timing_app, name="timing")


@timing_app.command("presets")
def timing_presets(
    shape: Annotated[str, typer.Option(help="Grid NY,NX on which to compare the presets (in pixels).")] = "400,600",
) -> None:
    """List the time-model presets: full-raster time on a grid, regime, and where their numbers come from."""
    from rich.console import Console
    from rich.table import Table

    from fastflow.grid import ScanGrid
    from fastflow.timing import JUMP_PX, preset, presets

    grid = ScanGrid(tuple(_numbers(shape, "--shape", int, 2)))
    table = Table(title=f"time-model presets on {grid.shape[0]}x{grid.shape[1]} px", title_justify="left")
    for col in ("preset", "raster", "full raster", "per pixel", f"{JUMP_PX} px jump", "break-even coverage", "regime"):
        table.add_column(col, justify="right" if col not in ("preset", "raster", "regime") else "left")
    for name in presets():
        model = preset(name).for_grid(grid)
        costs = model.costs(grid)
        table.add_row(name, model.raster, f"{model.raster_time(grid):,.1f} s", f"{costs['raster_pixel_s']:.3g} s",
                      f"{costs[f'jump_{JUMP_PX}px_point_s']:.3g} s", f"{costs['break_even_coverage']:.1%}",
                      costs["regime"])
    Console(highlight=False).print(table)
    for name, doc in presets().items():
        typer.echo(f"{name}: {doc.get('description', '')}\n  source: {doc.get('source', '')}")


@timing_app.command("show")
def timing_show(
    spec: Annotated[str, typer.Argument(help="A preset name or a JSON time-model file.")],
    shape: Annotated[str, typer.Option(help="Grid NY,NX.")] = "400,600",
    pixel_size: Annotated[float, typer.Option(help="Pixel size of the grid.")] = 1.0,
    units: Annotated[str, typer.Option(help="Units of the pixel size (px uses the model's typical pixel).")] = "px",
) -> None:
    """Print a time model on a grid (in the grid's units) with its full-raster time and point costs, as JSON."""
    from fastflow.grid import ScanGrid
    from fastflow.timing import load_time_model

    grid = ScanGrid(tuple(_numbers(shape, "--shape", int, 2)), pixel_size=pixel_size, units=units)
    model = load_time_model(spec).for_grid(grid)
    typer.echo(json.dumps({"time_model": model.to_attrs(), "raster_time_s": model.raster_time(grid),
                           "costs": model.costs(grid)}, indent=2))


@timing_app.command("fit")
def timing_fit(
    run: Annotated[str, typer.Argument(help="A run (its id under the data folder, its folder or its store).")],
    dwell: Annotated[Optional[float], typer.Option(help="The known dwell time, seconds (the rest of the per-point overhead becomes settling).", show_default=False)] = None,
    raster: Annotated[str, typer.Option(help="How a full raster runs on this instrument: step or fly.")] = "step",
    out: Annotated[Optional[Path], typer.Option(help="Write the fitted model to this JSON file (for --timing).", show_default=False)] = None,
) -> None:
    """Fit a time model to a stored run's timestamps (e.g. an EPICS scan) and print it with its raster time."""
    from fastflow.runs import find_run, find_store
    from fastflow.store import ScanStore
    from fastflow.timing import fit_store

    store = ScanStore.open(find_store(run if Path(run).exists() else find_run(run)))
    fit = fit_store(store, dwell=dwell, raster=raster)
    doc = {**fit.to_attrs(), "raster_time_s": fit.model.raster_time(store.grid), "costs": fit.model.costs(store.grid)}
    if out is not None:
        if out.exists():
            raise InputError(f"{out} exists; choose a new --out")
        out.write_text(json.dumps(doc, indent=2))
    typer.echo(json.dumps(doc, indent=2))


# -- helpers ----------------------------------------------------------------------------------------
def _prefect_defaults() -> None:
    """Defaults for Prefect without a server, set before Prefect is imported (explicit settings win)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _quiet_progress_lines() -> None:
    """On a terminal the progress bar shows the batches: keep per-batch log lines out of the console
    (the Prefect API, and so the UI, still receives them)."""
    if not sys.stderr.isatty():
        return
    import logging

    from tasks.scanning import PROGRESS_RECORD
    from prefect.logging.handlers import APILogHandler

    def drop(record: logging.LogRecord) -> bool:
        return not getattr(record, PROGRESS_RECORD, False)

    from prefect.logging.configuration import setup_logging

    setup_logging()
    for handler in logging.getLogger("prefect").handlers:
        if not isinstance(handler, APILogHandler):
            handler.addFilter(drop)


#: Signals that stopped this command (SIGTERM handled as Ctrl-C; see :func:`_stop_on_sigterm`).
_SIGNALS: list[int] = []


def _stop_on_sigterm() -> None:
    """Make SIGTERM (a batch scheduler, systemd, a Prefect cancellation) stop the command as Ctrl-C does.

    Python's default for SIGTERM ends the process at once: no ``finally``, no exit handlers, so the run
    would not be marked ``interrupted`` and Prefect's temporary API server and the Dask workers would
    outlive the command. Raising ``KeyboardInterrupt`` instead unwinds it as Ctrl-C does. Inside a flow
    run Prefect installs its own handler (its ``TerminationSignal`` counts as an interruption too, see
    :func:`fastflow.errors.is_interruption`) and hands the signal back to this one when the run has ended.
    """
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        _SIGNALS.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _interrupt_status() -> int:
    """Exit status of an interrupted command: 128 + the signal (143 for SIGTERM, 130 for Ctrl-C)."""
    import signal

    return 128 + (_SIGNALS[0] if _SIGNALS else signal.SIGINT)


def _interrupted_message(run_dir: Path) -> str:
    """What an interrupted scan left, and how to go on."""
    from fastflow.runs import STORE_NAME
    from fastflow.store import ScanStore

    how = "terminated (SIGTERM)" if _SIGNALS else "interrupted"
    try:
        store = ScanStore.open(run_dir / STORE_NAME)
        status, n_points = store.attrs.get("status"), store.n_points
    except FastflowError:
        return f"{how} before the run's store was created in {run_dir}; nothing was measured"
    if status == "complete":
        return (f"{how} after the scan had finished: its {n_points} points are in {run_dir}; what did not "
                f"finish is the evaluation or the publishing (rebuild with: fastflow recon {run_dir} --method idw)")
    return (f"{how}: the {n_points} points measured so far are saved in {run_dir}; "
            f"continue with: fastflow scan --resume {run_dir}")


def _print_report(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from fastflow.runs import open_instructions, time_lines

    console = Console(highlight=False)
    table = Table(title=f"{summary['sample']} scanned with {summary['sampler']}", title_justify="left")
    from fastflow.runs import estimate_text

    for col in ("coverage", "points", "NRMSE", "NRMSE estimate (upper)", "SSIM", "PSNR (dB)", "time (s)", "saving"):
        table.add_column(col, justify="right")
    for row in summary["snapshots"]:
        table.add_row(
            f"{row['coverage']:.1%}", str(row["n_points"]), _fmt(row.get("nrmse"), ".4f"), estimate_text(row),
            _fmt(row.get("ssim"), ".4f"), _fmt(row.get("psnr"), ".2f"), _fmt(row.get("time_s"), ".1f"),
            _fmt(row.get("saving"), ".1%"),
        )
    console.print(table)
    if summary.get("evaluation_metrics"):
        scores = Table(title="rebuilt after the scan (first points up to each coverage)", title_justify="left")
        for col in ("method", "coverage", "NRMSE", "SSIM", "PSNR (dB)"):
            scores.add_column(col, justify="right")
        for row in summary["evaluation_metrics"]:
            scores.add_row(row["method"], f"{row['coverage']:.1%}", _fmt(row.get("nrmse"), ".4f"),
                           _fmt(row.get("ssim"), ".4f"), _fmt(row.get("psnr"), ".2f"))
        console.print(scores)
    typer.echo(
        f"stopped: {summary['stop_reason']} at {summary['coverage']:.1%} ({summary['n_points']} points); "
        f"simulated acquisition {summary['acquisition_time_s']:.1f} s, stage path {summary['path_length']:.0f}, "
        f"wall time {summary['wall_time_s']:.1f} s"
    )
    for i, line in enumerate(time_lines(summary)):
        typer.echo(("time:    " if i == 0 else "         ") + line)
    if summary.get("regions"):
        r, cross = summary["regions"], summary.get("no_go_crossing") or {}
        typer.echo(f"regions: {r['allowed']} allowed pixels (the coverage counts these), {r['no_go']} no-go, "
                   f"{r['outside_roi']} outside the region of interest; {cross.get('points', 0)} points measured "
                   f"in no-go regions, stage route over them {cross.get('length_px', 0.0):.0f} px in "
                   f"{cross.get('legs', 0)} legs")
    if summary.get("controls"):
        typer.echo("controls: " + "; ".join(f"{c['action']} {c['status']} at {c['n_points']} points"
                                            for c in summary["controls"]))
    typer.echo(f"run id:  {summary['run_id']}")
    typer.echo(f"store:   {summary['store']}")
    if summary.get("figure"):
        typer.echo(f"figure:  {summary['figure']}")
    if summary.get("evaluation"):
        typer.echo(f"scores:  {summary['evaluation']} (each method at each snapshot)")
    tiled = summary.get("tiled") or {}
    if tiled:
        where = tiled.get("uri") or f"the local catalog of {tiled.get('catalog')}"
        typer.echo(f"tiled:   published as {tiled['key']!r} to {where}")
    typer.echo("open it:")
    for line in open_instructions(summary):
        typer.echo(f"  {line}")
    if summary.get("stop_reason") == "interrupted":
        typer.echo(f"resume:  fastflow scan --resume {summary['run_id']}")


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "inf" if value == math.inf else "-"
    return format(value, spec)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    _stop_on_sigterm()
    try:
        rc = app(standalone_mode=False)
    except FastflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("terminated (SIGTERM)" if _SIGNALS else "aborted", err=True)
        sys.exit(_interrupt_status())
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
