"""Scan runs: one validated configuration, one folder per run, start, resume and finish.

The command line and the Prefect flows go through the same three steps, so a scan behaves the same
whichever way it is started:

1. :meth:`ScanConfig.check` validates every parameter (and loads the sample, the sampler and its model)
   before anything is created or moved;
2. :func:`create_run` makes the run folder and its scan store, recording the configuration in the store;
3. :func:`acquire` opens the store for appending, rebuilds sampler and instrument from the recorded
   configuration and runs the scan loop. If the store already holds points (a killed or failed run),
   they are replayed and the scan continues: nothing is lost or measured twice. Calling it again after a
   failure is therefore always safe, which is what :func:`resume` and task retries do.

A run folder holds ``scan.zarr`` (the store), ``report.json`` and ``scan.png``.

Examples
--------
>>> config = ScanConfig(sample="flakes", sampler="halton", coverage=0.02, snapshots=[0.01, 0.02])
>>> run_dir = create_run(config, "/tmp/example-run")          # doctest: +SKIP
>>> summary = acquire(run_dir)                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.controls import ControlInbox
from fastflow.errors import InputError, StoreError, is_interruption
from fastflow.grid import ScanGrid
from fastflow.regions import ALLOWED, NO_GO, Regions, route_crossing
from fastflow.scan import StopRules, new_run_id, parse_fractions, run_scan
from fastflow.store import ScanStore, is_scan_store, jsonable
from fastflow.timing import JUMP_PX, TimeModel, load_time_model, preset

DEFAULT_RUNS_DIR = "fastflow-runs"
STORE_NAME = "scan.zarr"
REPORT_NAME = "report.json"
FIGURE_NAME = "scan.png"

#: Where a scan's values come from.
INSTRUMENTS = ("simulated", "epics")

#: Options of the FAST sampler that a configuration may carry.
FAST_OPTIONS = ("model", "initial_coverage", "initial", "diversity", "proximity", "explore", "erd_stop", "fill", "fill_floor",
                "fill_gain", "cost", "segments")


def runs_root() -> Path:
    """The folder that holds every run: ``$FASTFLOW_DATA_DIR`` (if set and not empty), or ``./fastflow-runs``."""
    return Path(os.environ.get("FASTFLOW_DATA_DIR") or DEFAULT_RUNS_DIR)


def find_store(path: str | os.PathLike) -> Path:
    """The scan store of a run: ``path`` itself if it is a store, else ``path/scan.zarr``.

    Raises
    ------
    InputError
        If ``path`` is neither a run folder nor a scan store.
    """
    path = Path(path)
    if is_scan_store(path):
        return path
    if is_scan_store(path / STORE_NAME):
        return path / STORE_NAME
    if not path.exists():
        raise InputError(f"{path} does not exist; pass a run folder (DATA_DIR/RUN_ID) or its {STORE_NAME}")
    raise InputError(
        f"{path} is not a fastflow run: it holds no {STORE_NAME} scan store; "
        f"pass a run folder (DATA_DIR/RUN_ID) or its {STORE_NAME}"
    )


@dataclass
class ScanConfig:
    """Everything a scan on the simulated instrument needs; JSON-ready, recorded in the store.

    Parameters
    ----------
    sample : str, optional
        Bundled sample name or image file: the simulated instrument's sample and the truth for metrics. With
        ``instrument="epics"`` it is optional: the truth (metrics) and the grid shape, when known.
    sampler : str
        Sampler name (:func:`fastflow.sampling.registry.available_samplers`).
    coverage : float
        Stop when this fraction of pixels is measured, in (0, 1].
    batch_size : int
        Points per step.
    snapshots : list of float
        Coverages at which a reconstruction and metrics are stored.
    recon : str
        Reconstruction of snapshots and of the final image.
    seed : int
        Seed of the sampler and of the instrument noise.
    time_budget : float, optional
        Stop when the simulated acquisition time reaches this many seconds.
    target_nrmse : float, optional
        Stop when the reconstruction's estimated NRMSE (its upper estimate, :mod:`fastflow.errorest`) is at
        or below this.
    noise : str
        ``none``, ``poisson:PEAK`` or ``gaussian:SIGMA``.
    pixel_size, units : float, str
        Physical grid.
    timing : str, optional
        The instrument's time model: a preset name (``fastflow timing presets``) or a JSON file (e.g.
        written by ``fastflow timing fit``). The simulated instrument measures with it (default the ``demo``
        preset, :mod:`fastflow.timing`); on EPICS it is the beamline's model, which FAST's cost weighs and
        by which a list-mode map with a ``list.fly`` PV flies straight runs (default none: points only).
    dwell, speed, settle : float, optional
        Override the time model's dwell (s), stage speed (the model's units per s) and settle time (s).
    route : bool, optional
        Visit each batch along a short route (default: for samplers whose batches are sets).
    overlap : bool
        Choose batch k+1 while batch k is measured (see :func:`fastflow.scan.run_scan`).
    sampler_options : dict
        Options of the sampler; for ``fast``: model, initial_coverage, initial, diversity, proximity, explore, erd_stop,
        fill, fill_floor, fill_gain, and ``cost``: the time model its choices weigh (:func:`fast_cost`).
    instrument : {"simulated", "epics"}
        Where the values come from.
    pv_map : str, optional
        EPICS: the PV map file (:mod:`fastflow.instruments.pvmap`).
    shape : list of int, optional
        EPICS: grid shape ``[ny, nx]`` (default: the sample's shape).
    origin : list of float, optional
        Physical position of pixel (0, 0) (default ``[0, 0]``).
    roi : str, optional
        Region of interest: measure only inside it (a mask file, a JSON polygon file or an inline polygon
        ``"x,y; x,y; x,y"`` in grid pixels; :func:`fastflow.regions.region_mask`). Coverage counts its pixels.
    no_go : list of str
        No-go regions, in the same forms: never measured.
    """

    sample: str | None = "flakes"
    sampler: str = "fast"
    coverage: float = 0.2
    batch_size: int = 50
    snapshots: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2])
    recon: str = "idw"
    seed: int = 0
    time_budget: float | None = None
    target_nrmse: float | None = None
    noise: str = "none"
    pixel_size: float = 1.0
    units: str = "px"
    timing: str | None = None
    dwell: float | None = None
    speed: float | None = None
    settle: float | None = None
    route: bool | None = None
    overlap: bool = False
    sampler_options: dict[str, Any] = field(default_factory=dict)
    instrument: str = "simulated"
    pv_map: str | None = None
    shape: list[int] | None = None
    origin: list[float] | None = None
    roi: str | None = None
    no_go: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanConfig:
        """A configuration from a mapping; unknown keys are refused with their names."""
        if not isinstance(data, Mapping):
            raise InputError(f"a scan configuration must be a mapping; got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown scan parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return jsonable(dataclasses.asdict(self))

    def check(self) -> ScanSetup:
        """Validate every parameter and build what the scan needs, without touching the disk.

        Returns
        -------
        ScanSetup

        Raises
        ------
        InputError
            Naming the parameter that is wrong and what it should be.
        """
        return _setup(self)


@dataclass
class ScanSetup:
    """A validated configuration with its sample image, grid, sampler and stop rules."""

    config: ScanConfig
    image: np.ndarray | None
    sample_meta: dict[str, Any]
    grid: ScanGrid
    sampler: Any
    stop: StopRules
    snapshots: list[float]
    regions: Regions

    def instrument(self, start: Any = None, seed_offset: int = 0) -> Any:
        """The instrument of the run.

        Simulated: its stage at ``start`` and its noise seeded with ``seed + seed_offset`` (a resumed run
        does not repeat the noise of the points before). EPICS: connected to the PVs of the map (the stage
        is wherever it is).
        """
        c = self.config
        if c.instrument == "epics":
            from fastflow.instruments.epics import EpicsInstrument

            return EpicsInstrument(self.grid, c.pv_map, timing=time_model(c) if c.timing else None)
        from fastflow.instruments.simulated import SimulatedInstrument

        return SimulatedInstrument(self.image, self.grid, noise=c.noise, timing=time_model(c),
                                   seed=c.seed + seed_offset, start=start)


def time_model(config: ScanConfig) -> TimeModel:
    """The simulated instrument's time model of a configuration: its ``timing`` (the ``demo`` preset by
    default) with any ``dwell``, ``speed`` and ``settle`` given on top."""
    base = load_time_model(config.timing) if config.timing else preset("demo")
    overrides = {k: getattr(config, k) for k in ("dwell", "speed", "settle") if getattr(config, k) is not None}
    return dataclasses.replace(base, **overrides) if overrides else base


def fast_cost(config: ScanConfig) -> TimeModel | None:
    """The time model FAST weighs its choices with: its ``cost`` option, ``"auto"`` when unset.

    ``"auto"``: the instrument's model (:func:`time_model`): the simulated instrument's, or the ``timing`` given
    for an EPICS beamline; without one an EPICS instrument declares none before it has measured, so FAST is
    point-wise there unless a model is given. ``"off"``: point-wise FAST
    (the method of the paper). A preset name or a JSON file (e.g. ``fastflow timing fit RUN --out F`` of an
    earlier run on the same beamline): that model. Where the model makes far points cheap (dwell-bound), the
    cost-aware choice is point-wise FAST anyway (:func:`fastflow.sampling.slads.make_fast_sampler`).
    """
    spec = config.sampler_options.get("cost", "auto")
    if not isinstance(spec, (str, dict)):
        raise InputError(f"the FAST cost option must be auto, off, a time-model preset or file; got {spec!r}")
    if isinstance(spec, str) and spec.strip().lower() == "off":
        return None
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return time_model(config) if config.instrument == "simulated" or config.timing else None
    return load_time_model(spec)


def _reconstruction_model(method: str) -> dict[str, Any]:
    """Provenance of a learned reconstruction's model (file and content hash); nothing for other methods."""
    if method != "learned":
        return {}
    from fastflow.recon.learned import LearnedModel, default_model_path

    model = LearnedModel.load(None)
    return {"reconstruction_model": {"file": str(default_model_path()), "content_hash": model.content_hash}}


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _setup(config: ScanConfig) -> ScanSetup:
    from fastflow.images import load_sample
    from fastflow.instruments.simulated import parse_noise
    from fastflow.recon import check_methods
    from fastflow.sampling.registry import make_sampler

    c = config
    c.batch_size = _integer(c.batch_size, "batch size", 1)
    c.seed = _integer(c.seed, "seed", 0)
    check_methods(c.recon)
    stop = StopRules(coverage=c.coverage, time_budget=c.time_budget, target_nrmse=c.target_nrmse)
    c.coverage = stop.coverage
    snapshots = parse_fractions(c.snapshots, "snapshots (coverages)")
    c.snapshots = snapshots
    parse_noise(c.noise)
    if c.route is not None and not isinstance(c.route, bool):
        raise InputError(f"route must be true, false or unset; got {c.route!r}")
    if not isinstance(c.overlap, bool):
        raise InputError(f"overlap must be true or false; got {c.overlap!r}")
    if not isinstance(c.sampler_options, Mapping):
        raise InputError(f"sampler options must be a mapping; got {c.sampler_options!r}")
    options = {k: v for k, v in c.sampler_options.items() if v is not None}
    if c.sampler.strip().lower() == "fast":
        unknown = sorted(set(options) - set(FAST_OPTIONS))
        if unknown:
            raise InputError(f"unknown FAST option(s) {', '.join(unknown)}; known: {', '.join(FAST_OPTIONS)}")
        if options.get("model") is not None:
            options["model"] = str(Path(options["model"]).expanduser().resolve())
        cost = options.get("cost")
        if isinstance(cost, str) and Path(cost).expanduser().suffix:   # a file: absolute, for a resume elsewhere
            options["cost"] = str(Path(cost).expanduser().resolve())
    elif options:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(options))
        raise InputError(f"{flags} (sampler options {', '.join(sorted(options))}) apply to --sampler fast only")
    c.sampler_options = options
    if c.instrument not in INSTRUMENTS:
        raise InputError(f"unknown instrument {c.instrument!r}; use one of {', '.join(INSTRUMENTS)}")
    image, sample_meta = None, {"sample": None, "source": None, "path": None}
    if c.sample is not None:
        image, sample_meta = load_sample(c.sample)
        if sample_meta.get("path"):
            c.sample = sample_meta["path"]        # absolute, so that a resume from elsewhere finds it
    if c.instrument == "simulated":
        if image is None:
            raise InputError("the simulated instrument needs a sample (a bundled name or an image file)")
        if c.pv_map is not None:
            raise InputError("--pv-map applies to --instrument epics only")
    else:
        from fastflow.instruments.pvmap import PvMap

        if c.pv_map is None:
            raise InputError("--instrument epics needs --pv-map FILE (see `fastflow ioc --write-pv-map`)")
        c.pv_map = str(Path(c.pv_map).expanduser().resolve())
        PvMap.load(c.pv_map)                      # a clear error for a missing or invalid map
    if c.timing:
        timing_file = Path(str(c.timing)).expanduser()
        if timing_file.suffix:             # a file: absolute, so that a resume from elsewhere finds it
            c.timing = str(timing_file.resolve())
        load_time_model(c.timing)          # a clear error for an unknown preset or a bad file, before anything runs
    shape = c.shape if c.shape is not None else (None if image is None else list(image.shape))
    if shape is None:
        raise InputError("--instrument epics needs the grid shape: --shape NY,NX (or a --sample to take it from)")
    if image is not None and tuple(shape) != image.shape:
        raise InputError(f"grid shape {tuple(shape)} differs from the sample's {image.shape}")
    try:
        grid = ScanGrid(tuple(int(n) for n in shape), pixel_size=(float(c.pixel_size), float(c.pixel_size)),
                        origin=tuple(float(v) for v in (c.origin or (0.0, 0.0))), units=str(c.units))
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad grid: {exc}") from None
    c.shape, c.origin = list(grid.shape), list(grid.origin)
    regions = _regions(c, grid)
    if c.sampler.strip().lower() == "fast":
        options = {**options, "cost": fast_cost(c)}
    sampler = make_sampler(c.sampler, grid, coverage=stop.coverage, seed=c.seed, **options)
    if regions.active:
        sampler.restrict(~regions.allowed)
    setup = ScanSetup(c, image, sample_meta, grid, sampler, stop, snapshots, regions)
    if c.instrument == "simulated":
        setup.instrument()                        # validates the time model
    return setup


def _regions(c: ScanConfig, grid: ScanGrid) -> Regions:
    """The configuration's regions on ``grid``; region files become absolute paths (a resume finds them)."""
    if isinstance(c.no_go, str):
        c.no_go = [c.no_go]
    if not isinstance(c.no_go, (list, tuple)) or not all(isinstance(v, str) for v in c.no_go):
        raise InputError(f"no-go regions must be a list of strings (files or polygons); got {c.no_go!r}")
    if c.roi is not None and not isinstance(c.roi, str):
        raise InputError(f"the region of interest must be a string (a file or a polygon); got {c.roi!r}")

    def absolute(spec: str) -> str:
        path = Path(spec).expanduser()
        return str(path.resolve()) if path.suffix and path.is_file() else spec

    c.roi = None if c.roi is None else absolute(c.roi)
    c.no_go = [absolute(v) for v in c.no_go]
    return Regions(grid.shape, roi=c.roi, no_go=c.no_go)


def find_run(run: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The folder of a run given its id (looked up under ``root``) or its path.

    Raises
    ------
    InputError
        If no run folder with a scan store is found.
    """
    candidates = [Path(run)]
    if root is not None or not Path(run).is_absolute():
        candidates.append(Path(root if root is not None else runs_root()) / str(run))
    for path in candidates:
        if path.name == STORE_NAME:
            path = path.parent
        if is_scan_store(path / STORE_NAME):
            return path
    raise InputError(f"no run {str(run)!r}: no {STORE_NAME} in {' or '.join(str(p) for p in candidates)}")


def create_run(config: ScanConfig, run_dir: str | os.PathLike | None = None, *,
               run_id: str | None = None, extra_attrs: Mapping[str, Any] | None = None) -> Path:
    """Validate ``config`` and create the run folder with an empty scan store.

    Parameters
    ----------
    config : ScanConfig
        Checked first; nothing is created if it is invalid.
    run_dir : path-like, optional
        A new or empty folder (default: ``runs_root() / run_id``).
    run_id : str, optional
        Default: a new sortable id.
    extra_attrs : mapping, optional
        More provenance for the store (e.g. the flow run id).

    Returns
    -------
    Path
        The run folder.
    """
    setup = config.check()
    run_id = run_id or new_run_id()
    run_dir = Path(run_dir) if run_dir is not None else runs_root() / run_id
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise InputError(f"output folder {run_dir} already exists and is not empty; choose a new one")
    instrument = setup.instrument()               # EPICS: connects now, so a dead IOC stops us before the store exists
    try:
        described, channels = instrument.describe(), tuple(instrument.channels)
    finally:
        _close(instrument)
    store = ScanStore.create(
        run_dir / STORE_NAME,
        setup.grid,
        channels=channels,
        with_metrics=True,
        attrs={
            "run_id": run_id,
            "config": config.to_dict(),
            "sample": setup.sample_meta,
            "sampler": setup.sampler.params(),
            "instrument": described,
            "seed": config.seed,
            "batch_size": config.batch_size,
            "stop_rules": setup.stop.to_attrs(),
            "reconstruction_method": config.recon,
            **_reconstruction_model(config.recon),
            "software": software_versions(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            **dict(extra_attrs or {}),
        },
    )
    if setup.regions.active:
        store.set_region(setup.regions.codes)
        store.update_attrs(regions=setup.regions.summary())
    store.release()
    return run_dir


def run_config(run_dir: str | os.PathLike) -> ScanConfig:
    """The configuration recorded in a run's store."""
    attrs = ScanStore.open(Path(run_dir) / STORE_NAME).attrs
    if "config" not in attrs:
        raise StoreError(f"run {run_dir} has no recorded configuration (made by an older fastflow?)")
    return ScanConfig.from_dict(attrs["config"])


def acquire(
    run_dir: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
    figure: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the scan of a run folder until a stop rule holds, and write its report.

    Points already in the store are replayed into the sampler and never measured again; the instrument
    starts at the last stored position and the clock continues.

    Parameters
    ----------
    run_dir : path-like
        A folder made by :func:`create_run`.
    progress : callable, optional
        ``progress(n_measured, n_target)`` after each batch.
    figure : bool
        Write ``scan.png``.

    Returns
    -------
    dict
        The JSON-ready report (also written to ``report.json``).

    Raises
    ------
    InputError
        If the run is already complete.
    StoreError, InstrumentError
        Whatever stopped the scan; the store then holds every point measured before, with
        ``status="failed"`` and the error in its attrs.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    done = ScanStore.open(run_dir / STORE_NAME)
    if done.attrs.get("status") == "complete":
        raise InputError(f"run {run_dir.name} is already complete ({done.n_points} points); nothing to resume")
    store = ScanStore.open(run_dir / STORE_NAME, "a")
    try:
        setup = config.check()
        start, offset = None, 0
        if store.n_points:
            m = store.measurements()
            start, offset = m["positions"][-1], store.n_points
        codes = store.region()                 # the regions given at the start and any drawn since
        if codes.any():
            setup.sampler.restrict(codes != ALLOWED)
        if "stop_rules" in store.attrs and store.attrs.get("controls"):   # a stop rule changed by the operator
            rules = store.attrs["stop_rules"]
            setup.stop.coverage, setup.stop.time_budget = rules["coverage"], rules.get("time_budget_s")
            setup.stop.target_nrmse = rules.get("target_nrmse")
        instrument = setup.instrument(start=start, seed_offset=offset)
        try:
            result = run_scan(setup.sampler, instrument, store, stop=setup.stop, batch_size=config.batch_size,
                              snapshots=setup.snapshots, truth=setup.image, recon_method=config.recon,
                              route=config.route, progress=progress, overlap=config.overlap,
                              control=ControlInbox(run_dir))
        finally:
            _close(instrument)
        crossing = None
        codes = store.region()
        if (codes == NO_GO).any():
            crossing = route_crossing(store.measurements()["indices"], codes == NO_GO)
            store.update_attrs(no_go_crossing=crossing)
    except BaseException as exc:
        if is_interruption(exc):     # Ctrl-C, SIGTERM (a scheduler, systemd, a Prefect cancellation)
            try:
                store.close(stop_reason="interrupted", status="interrupted")
            except Exception:        # the disk failed while recording it: the stored points stay resumable
                store.release()
            raise exc
        try:
            store.update_attrs(status="failed", error=str(exc))
        finally:
            store.release()
        raise
    store.close(stop_reason=result.stop_reason)
    fig_path = None
    if figure:
        from fastflow.figures import scan_figure

        fig_path = scan_figure(
            run_dir / FIGURE_NAME, result.reconstruction, store.measurements()["indices"], truth=setup.image,
            title=(f"{setup.sample_meta['sample'] or config.instrument} | {setup.sampler.name} | "
                   f"{result.coverage:.1%} | {config.recon}"),
        )
    summary = jsonable({
        "run_id": store.attrs["run_id"],
        "run_dir": str(run_dir),
        "store": str(store.path),
        "figure": fig_path,
        "sample": setup.sample_meta["sample"],
        "instrument": config.instrument,
        "sampler": setup.sampler.name,
        **result.summary(),
        "allowed_pixels": setup.sampler.n_allowed,
        **({"regions": store.attrs.get("region_pixels"), "no_go_crossing": crossing} if codes.any() else {}),
        **({"controls": store.attrs["controls"]} if store.attrs.get("controls") else {}),
        **{k: store.attrs.get(k) for k in ("time_model", "time_costs", "time_model_fit") if k in store.attrs},
    })
    (run_dir / REPORT_NAME).write_text(json.dumps(summary, indent=2))
    return summary


def _close(instrument: Any) -> None:
    close = getattr(instrument, "close", None)
    if close is not None:
        close()


def software_versions() -> dict[str, str]:
    """Versions of Python, fastflow and the libraries that shape a result."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("fastflow", "numpy", "scipy", "scikit-image", "scikit-learn", "zarr", "xarray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def time_lines(report: dict[str, Any]) -> list[str]:
    """What the scan's time was worth: a full raster's time on the same instrument, the saving, the regime."""
    raster, saving = report.get("raster_time_s"), report.get("saving")
    if not raster:
        return []
    model = report.get("time_model") or {}
    how = "fitted to the measured timestamps" if report.get("time_model_fit") else f"time model {model.get('name')!r}"
    verdict = (f"saved {saving:.1%} of it" if saving >= 0 else f"took {1 - saving:.2f}x as long")
    lines = [f"A full {model.get('raster', 'step')} raster on this instrument ({how}) takes {raster:.1f} s; "
             f"this scan {report['acquisition_time_s']:.1f} s: {verdict}."]
    costs = report.get("time_costs") or {}
    if costs:
        lines.append(f"The instrument is {costs['regime']}: a point {JUMP_PX} px from the last costs "
                     f"{costs['jump_vs_raster']:.1f} raster pixels, so scattered points save time only below "
                     f"{costs['break_even_coverage']:.1%} coverage.")
    return lines


def estimate_text(row: dict[str, Any]) -> str:
    """A snapshot's error estimate as ``0.031 (0.040)``: the estimate and its upper bound; ``-`` if none."""
    if row.get("nrmse_estimate") is None:
        return "-"
    return f"{row['nrmse_estimate']:.4f} ({_num(row.get('nrmse_upper'), '.4f')})"


def stop_rule_text(rules: dict[str, Any]) -> str:
    """The stop rules of a store's ``stop_rules`` attribute, in words."""
    text = f"coverage {rules.get('coverage')}, time budget {rules.get('time_budget_s') or 'none'}"
    return text + (f", target NRMSE {rules['target_nrmse']}" if rules.get("target_nrmse") else "")


def scan_markdown(report: dict[str, Any]) -> str:
    """A short markdown summary: what was measured, how well, where the data is and how to open it."""
    lines = [f"# Run {report['run_id']}",
             f"{report['sample']} scanned with {report['sampler']}: stopped ({report['stop_reason']}) at "
             f"{report['coverage']:.1%} coverage, {report['n_points']} points, simulated acquisition "
             f"{report['acquisition_time_s']:.1f} s.", "",
             "| coverage | points | NRMSE | NRMSE estimate (upper) | SSIM | time (s) | saving |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["snapshots"]:
        lines.append(f"| {row['coverage']:.1%} | {row['n_points']} | {_num(row.get('nrmse'), '.4f')} "
                     f"| {estimate_text(row)} | {_num(row.get('ssim'), '.4f')} | {_num(row.get('time_s'), '.1f')} "
                     f"| {_num(row.get('saving'), '.1%')} |")
    lines += ["", *(" ".join(time_lines(report)),)] if report.get("raster_time_s") else []
    lines += ["", f"Store: `{report['store']}`", "", "Open it:", "```python", *open_instructions(report), "```"]
    return "\n".join(lines)


def progress_markdown(run_dir: str | os.PathLike, done: int, total: int, wall_s: float) -> str:
    """A markdown summary of a running scan, for a dashboard: coverage, points, the latest error, the time
    left (from the rate of points so far), the stop rule, pause state, regions and operator controls.

    Reads only the store's committed metadata, so calling it while the scan writes is safe and cheap.
    """
    store = ScanStore.open(Path(run_dir) / STORE_NAME)
    attrs = store.attrs
    rate = done / wall_s if wall_s > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    table = store.snapshot_table()
    error = next((row for row in reversed(table) if row.get("nrmse") is not None), None)
    rules = attrs.get("stop_rules", {})
    state = "paused" if attrs.get("paused") else attrs.get("status", "running")
    lines = [f"# Run {attrs.get('run_id', Path(run_dir).name)}: {state}", "",
             "| | |", "|---|---|",
             f"| points | {done} of {total} ({done / max(total, 1):.1%}) |",
             f"| time left | {_duration(left)} at {rate:.0f} points/s |",
             f"| stop rule | {stop_rule_text(rules)} |"]
    if error is not None:
        lines.append(f"| NRMSE at {error['coverage']:.1%} | {error['nrmse']:.4f} |")
    estimate = next((row for row in reversed(table) if row.get("nrmse_estimate") is not None), None)
    if estimate is not None:
        lines.append(f"| NRMSE estimate (upper) at {estimate['coverage']:.1%} | {estimate_text(estimate)} |")
    if attrs.get("region_pixels"):
        r = attrs["region_pixels"]
        lines.append(f"| regions | {r['allowed']} allowed pixels, {r['no_go']} no-go, {r['outside_roi']} outside the ROI |")
    if attrs.get("controls"):
        last = attrs["controls"][-1]
        lines.append(f"| controls | {len(attrs['controls'])}, last: {last['action']} {last.get('status', '')} |")
    served = os.environ.get("FASTFLOW_TILED_URI")      # a facility server that mounts the live view
    view = (f"[live view]({served.rstrip('/')}/view/?run={Path(run_dir).name})" if served else
            f"live view: `fastflow serve {Path(run_dir).parent}`, then "
            f"http://127.0.0.1:8000/view/?run={Path(run_dir).name}")
    lines += ["", f"Watch it: {view}.", "",
              f"Store: `{store.path}`. Steer it with `fastflow control {Path(run_dir)} pause|resume|stop`."]
    return "\n".join(lines)


def _num(value: Any, spec: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def open_instructions(report: dict[str, Any]) -> list[str]:
    """Python lines that open the run, from Tiled when it was published, else from the store."""
    tiled = report.get("tiled") or {}
    if tiled.get("uri"):
        return ["from tiled.client import from_uri",
                f"ds = from_uri({tiled['uri']!r}, api_key=API_KEY)[{tiled['key']!r}].read()"]
    if tiled.get("catalog"):
        return [f"# after `fastflow serve {tiled['catalog']} --api-key KEY` in another terminal:",
                "from tiled.client import from_uri",
                f"ds = from_uri('http://127.0.0.1:8000', api_key='KEY')[{tiled['key']!r}].read()"]
    return ["import xarray", f"ds = xarray.open_zarr({report['store']!r}, consolidated=False)"]
