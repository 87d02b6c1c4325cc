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

DEFAULT_RUNS_DIR = "fastflow-runs"


def _runs_root() -> Path:
    return Path(os.environ.get("FASTFLOW_DATA_DIR", DEFAULT_RUNS_DIR))


@app.command()
def scan(
    sample: Annotated[str, typer.Option(help="Bundled sample name (see `fastflow samples`) or a .tif/.tiff/.npy/.png file.")] = "flakes",
    sampler: Annotated[str, typer.Option(help="Sampler name (see `fastflow samplers`).")] = "halton",
    stop_coverage: Annotated[str, typer.Option(help="Stop when this fraction of pixels is measured, in (0, 1].")] = "0.2",
    out: Annotated[Optional[Path], typer.Option(help="New folder for this run (default: ./fastflow-runs/RUN_ID, or $FASTFLOW_DATA_DIR/RUN_ID).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (sampler, noise).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Points measured per step.")] = 50,
    snapshots: Annotated[str, typer.Option(help="Coverages at which to store a reconstruction and metrics, e.g. 0.05,0.1.")] = "0.05,0.1,0.15,0.2",
    noise: Annotated[str, typer.Option(help="Simulated detector noise: none, poisson:PEAK_COUNTS or gaussian:SIGMA (fraction of the image range).")] = "none",
    recon: Annotated[str, typer.Option(help="Reconstruction for snapshots and the final image (idw, biharmonic).")] = "idw",
    time_budget: Annotated[Optional[float], typer.Option(help="Stop when the simulated acquisition time reaches this many seconds.")] = None,
    pixel_size: Annotated[float, typer.Option(help="Pixel size of the simulated grid.")] = 1.0,
    units: Annotated[str, typer.Option(help="Units of the pixel size.")] = "px",
    dwell: Annotated[float, typer.Option(help="Simulated dwell time per point, seconds.")] = 0.01,
    speed: Annotated[float, typer.Option(help="Simulated stage speed, units per second.")] = 100.0,
    settle: Annotated[float, typer.Option(help="Simulated settle time after each move, seconds.")] = 0.005,
    report: Annotated[str, typer.Option(help="Report format: text, or json (one JSON object on stdout).")] = "text",
    figure: Annotated[bool, typer.Option(help="Write a PNG figure of the run.")] = True,
    route: Annotated[Optional[bool], typer.Option("--route/--no-route", help="Visit each batch along a short route (default: for samplers whose batches are sets).")] = None,
    model: Annotated[Optional[Path], typer.Option(help="FAST: ERD model file (default: the model shipped with fastflow).")] = None,
    initial_coverage: Annotated[float, typer.Option(help="FAST: coverage of the initial Halton scan.")] = 0.01,
    diversity: Annotated[Optional[float], typer.Option(help="FAST: spread of each batch (0 = plain top-ERD) [default: the sampler's].")] = None,
    proximity: Annotated[Optional[float], typer.Option(help="FAST: discount of pixels close to measurements, in mean spacings (0 = off) [default: the sampler's].")] = None,
    explore: Annotated[Optional[float], typer.Option(help="FAST: share of each batch from the continued low-discrepancy pattern [default: the sampler's].")] = None,
    erd_stop: Annotated[Optional[float], typer.Option(help="FAST: stop when the total ERD falls below this fraction of its start.")] = None,
) -> None:
    """Run a scan of a sample on the simulated instrument and store it."""
    from fastflow.figures import scan_figure
    from fastflow.grid import ScanGrid
    from fastflow.images import load_sample
    from fastflow.instruments.simulated import SimulatedInstrument, parse_noise
    from fastflow.recon import available_methods
    from fastflow.sampling.registry import make_sampler
    from fastflow.sampling.protocol import check_coverage
    from fastflow.scan import StopRules, new_run_id, parse_fractions, run_scan
    from fastflow.store import ScanStore, jsonable

    # 1. validate everything before anything is created
    if report not in ("text", "json"):
        raise InputError(f"--report must be text or json; got {report!r}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer; got {batch_size}")
    if recon not in available_methods():
        raise InputError(f"unknown reconstruction {recon!r}; available: {', '.join(available_methods())}")
    stop = StopRules(coverage=check_coverage(stop_coverage, "--stop-coverage"), time_budget=time_budget)
    snaps = parse_fractions(snapshots, "--snapshots")
    parse_noise(noise)
    image, sample_meta = load_sample(sample)
    grid = ScanGrid(image.shape, pixel_size=(pixel_size, pixel_size), units=units)
    options: dict[str, Any] = {}
    if sampler.strip().lower() == "fast":
        options = {"model": model, "initial_coverage": initial_coverage, "erd_stop": erd_stop}
        options.update({k: v for k, v in (("diversity", diversity), ("proximity", proximity), ("explore", explore))
                        if v is not None})
    elif model is not None:
        raise InputError("--model applies to --sampler fast only")
    the_sampler = make_sampler(sampler, grid, coverage=stop.coverage, seed=seed, **options)
    instrument = SimulatedInstrument(
        image, grid, noise=noise, dwell=dwell, speed=speed, settle=settle, seed=seed
    )
    run_id = new_run_id()
    run_dir = Path(out) if out is not None else _runs_root() / run_id
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise InputError(f"output folder {run_dir} already exists and is not empty; choose a new --out")

    # 2. run
    store = ScanStore.create(
        run_dir / "scan.zarr",
        grid,
        channels=instrument.channels,
        with_metrics=True,
        attrs={
            "run_id": run_id,
            "sample": sample_meta,
            "sampler": the_sampler.params(),
            "instrument": instrument.describe(),
            "seed": seed,
            "batch_size": batch_size,
            "stop_rules": {"coverage": stop.coverage, "time_budget_s": stop.time_budget},
            "reconstruction_method": recon,
            "software": _versions(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
    )
    bar = _Bar()
    try:
        result = run_scan(
            the_sampler, instrument, store, stop=stop, batch_size=batch_size, snapshots=snaps,
            truth=image, recon_method=recon, route=route, progress=bar.update_to,
        )
    except KeyboardInterrupt:
        bar.close()
        store.close(stop_reason="interrupted", status="interrupted")
        typer.echo(f"interrupted: {store.n_points} points saved in {store.path}", err=True)
        raise typer.Exit(130) from None
    except BaseException as exc:
        bar.close()
        try:
            store.update_attrs(status="failed", error=str(exc))
        finally:
            store.release()
        raise
    bar.close()
    store.close(stop_reason=result.stop_reason)
    fig_path = None
    if figure:
        m = store.measurements()
        fig_path = scan_figure(
            run_dir / "scan.png", result.reconstruction, m["indices"], truth=image,
            title=f"{sample_meta['sample']} | {the_sampler.name} | {result.coverage:.1%} | {recon}",
        )
    summary = {
        "run_id": run_id,
        "store": str(store.path),
        "figure": fig_path,
        "sample": sample_meta["sample"],
        "sampler": the_sampler.name,
        **result.summary(),
    }
    (run_dir / "report.json").write_text(json.dumps(jsonable(summary), indent=2))
    if report == "json":
        typer.echo(json.dumps(jsonable(summary)))
    else:
        _print_report(summary)


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
        m.save(out / f"erd-c{value:g}.npz")
    model.save(out / "erd-model.npz")
    (out / "model-card.json").write_text(card_json(model))
    typer.echo(f"chosen c = {model.card['c']:g}; model: {out / 'erd-model.npz'}")
    typer.echo(model.describe())


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError(f"{what} needs at least one value")
    return items


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


# -- helpers ----------------------------------------------------------------------------------------
class _Bar:
    """A tqdm progress bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=None, unit="pt", file=sys.stderr, disable=None, desc="scanning", dynamic_ncols=True)

    def update_to(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("fastflow", "numpy", "scipy", "scikit-image", "zarr", "xarray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _print_report(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=f"{summary['sample']} scanned with {summary['sampler']}", title_justify="left")
    for col in ("coverage", "points", "NRMSE", "SSIM", "PSNR (dB)"):
        table.add_column(col, justify="right")
    for row in summary["snapshots"]:
        table.add_row(
            f"{row['coverage']:.1%}", str(row["n_points"]), _fmt(row.get("nrmse"), ".4f"),
            _fmt(row.get("ssim"), ".4f"), _fmt(row.get("psnr"), ".2f"),
        )
    console.print(table)
    typer.echo(
        f"stopped: {summary['stop_reason']} at {summary['coverage']:.1%} ({summary['n_points']} points); "
        f"simulated acquisition {summary['acquisition_time_s']:.1f} s, stage path {summary['path_length']:.0f}, "
        f"wall time {summary['wall_time_s']:.1f} s"
    )
    typer.echo(f"run id:  {summary['run_id']}")
    typer.echo(f"store:   {summary['store']}")
    if summary.get("figure"):
        typer.echo(f"figure:  {summary['figure']}")
    typer.echo(f"open it: python -c \"import xarray; print(xarray.open_zarr('{summary['store']}', consolidated=False))\"")


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "inf" if value == math.inf else "-"
    return format(value, spec)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        rc = app(standalone_mode=False)
    except FastflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
