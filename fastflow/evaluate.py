"""Simulated scans scored against a known image: how good is a sampler at each coverage?

No store: the sampler asks, the simulated instrument answers exactly (or with its noise) and keeps the
clock of its time model, and at each requested coverage the measured pixels are reconstructed and scored
with :mod:`fastflow.metrics`. Batches of samplers whose batches are sets are routed from the stage, as the
scan loop routes them. The FAST paper scores biharmonic inpainting of the measured pixels
(``recon="biharmonic"``); IDW is much faster and ranks samplers the same way in our runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.images import check_image
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.metrics import evaluate, uncertainty_scores
from fastflow.recon import reconstruct, reconstruct_with_uncertainty
from fastflow.route import order_route
from fastflow.sampling.protocol import BaseSampler
from fastflow.timing import TimeModel


def simulate(
    sampler: BaseSampler,
    image: np.ndarray,
    coverages: Sequence[float],
    *,
    batch_size: int = 50,
    recon: str = "idw",
    noise: str | None = None,
    seed: int = 0,
    timing: TimeModel | None = None,
    route: bool | None = None,
    keep_path: bool = False,
    observe: Callable[[np.ndarray, np.ndarray], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run ``sampler`` on ``image`` and score the reconstruction at each coverage.

    ``timing`` is the simulated instrument's time model (default: its default, the ``demo`` preset's
    numbers); ``route`` visits each batch along a short route from the stage (default: for samplers whose
    batches are sets, as :func:`fastflow.scan.run_scan` does).

    Returns one row per coverage: ``coverage``, ``n_points``, ``time_s`` (the instrument's clock) and the
    metrics of :func:`fastflow.metrics.evaluate`; with ``keep_path`` also ``path``, the ``(n, 2)`` grid indices
    in visiting order (to time the same path on other instruments); with ``observe``, whatever
    ``observe(indices, values)`` returns for the points measured so far (e.g. the features of
    :mod:`fastflow.errorest`). Batches are shortened so that every
    coverage is hit exactly.
    """
    truth = check_image(image)
    if tuple(truth.shape) != sampler.grid.shape:
        raise InputError(f"image shape {truth.shape} does not match the sampler's grid {sampler.grid.shape}")
    grid = sampler.grid
    instrument = SimulatedInstrument(truth, grid, noise=noise, seed=seed, timing=timing)
    if route is None:
        route = not getattr(sampler, "ordered", True)
    targets = sorted({max(1, round(c * truth.size)) for c in coverages})
    indices, values, rows = [], [], []
    for target in targets:
        while sampler.n_measured < target and not sampler.done:
            batch = sampler.ask(min(max(batch_size, sampler.min_batch), target - sampler.n_measured))
            if len(batch) == 0:
                break
            if route:
                here = grid.to_position(indices[-1][-1:])[0] if indices else np.asarray(grid.origin)
                batch = batch[order_route(grid.to_position(batch), here)]
            measured = instrument.measure(batch)
            sampler.tell(batch, measured.values)
            indices.append(batch)
            values.append(measured.values[:, 0])
        idx, val = np.concatenate(indices), np.concatenate(values)
        estimate = reconstruct(sampler.grid, idx, val, method=recon)
        rows.append({"coverage": sampler.n_measured / truth.size, "n_points": int(len(idx)),
                     "time_s": instrument.elapsed, **evaluate(truth, estimate),
                     **({"path": idx} if keep_path else {}), **(observe(idx, val) if observe else {})})
    return rows


EVALUATION_NAME = "evaluation.zarr"


def run_truth(attrs: dict[str, Any]) -> np.ndarray | None:
    """The ground truth of a run (its configured sample image: the simulated instrument's sample, or the
    image a simulated beamline serves), or ``None`` if unknown."""
    from fastflow.images import load_sample

    config = attrs.get("config") or {}
    if not config.get("sample"):
        return None
    image, _ = load_sample(config["sample"])
    return check_image(image)


def evaluate_run(
    store_path: Any,
    coverage: float,
    method: str = "idw",
    *,
    truth: np.ndarray | None = None,
    chunk: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Rebuild a stored run's image from its first points up to ``coverage``, and score it.

    Parameters
    ----------
    store_path : path-like
        A scan store (``scan.zarr``) or its run folder.
    coverage : float
        Fraction of the grid; the first ``round(coverage * N)`` points in acquisition order are used,
        i.e. the image as it was when the scan passed that coverage.
    method : str
        A reconstruction method (:func:`fastflow.recon.available_methods`).
    truth : ndarray, optional
        Ground truth for the metrics (default: the run's sample, when it was simulated).
    chunk : int, optional
        For ``idw``: compute the image as a dask array in blocks of this side (parallel on the current
        Dask client, if any). Other methods need the whole image and ignore it.
    **options
        Passed to the method (e.g. ``model`` for ``learned``).

    Returns
    -------
    dict
        ``coverage``, ``n_points``, ``method``, ``image``, ``sigma`` (the uncertainty map, for methods that
        estimate one) and the metrics (empty without a truth; with an uncertainty also those of
        :func:`fastflow.metrics.uncertainty_scores`).

    Raises
    ------
    InputError
        If the run has fewer points than ``coverage`` asks for.
    """
    from fastflow.recon import idw_chunked
    from fastflow.runs import find_store
    from fastflow.sampling.protocol import check_coverage
    from fastflow.store import ScanStore

    store = ScanStore.open(find_store(store_path))
    coverage = check_coverage(coverage, "evaluation coverage")
    grid = store.grid
    n = max(1, round(coverage * grid.size))
    if n > store.n_points:
        raise InputError(f"run {store.attrs.get('run_id')} reached {store.n_points / grid.size:.2%} coverage; "
                         f"cannot evaluate it at {coverage:.2%}")
    m = store.measurements()
    indices, values = m["indices"][:n], m["values"][:n, 0]
    sigma = None
    if chunk is not None and method == "idw" and not options:
        image = idw_chunked(grid, indices, values, chunk=chunk).compute()
    else:
        image, sigma = reconstruct_with_uncertainty(grid, indices, values, method=method, **options)
    if truth is None:
        truth = run_truth(store.attrs)
    metrics = evaluate(truth, image) if truth is not None else {}
    if truth is not None and sigma is not None:
        measured = np.zeros(grid.shape, dtype=bool)
        measured[indices[:, 0], indices[:, 1]] = True
        metrics.update(uncertainty_scores(truth, image, sigma, ~measured))
    result = {"coverage": n / grid.size, "n_points": n, "method": method, "image": image, **metrics}
    if sigma is not None:
        result["sigma"] = sigma
    return result


def write_evaluation(run_dir: Any, results: Sequence[dict[str, Any]]) -> str:
    """Write evaluation results of one run as ``evaluation.zarr`` in its folder (replacing an older one).

    The dataset is indexed by ``coverage`` and holds, per method, ``image_<method>(coverage, y, x)``,
    ``sigma_<method>(coverage, y, x)`` for methods that estimate their uncertainty, and
    ``<metric>_<method>(coverage)`` (NaN where a method was not evaluated at a coverage); attribute
    ``methods`` lists them. Method names are in variable names rather than in a string coordinate, which
    xarray does not index reliably when read back from Zarr v3. It is written to a temporary folder first
    and moved into place, so a reader never sees half of it.

    Returns
    -------
    str
        Path of the written store.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import xarray as xr

    if not results:
        raise InputError("no evaluation results to write")
    run_dir = Path(run_dir)
    methods = sorted({r["method"] for r in results})
    coverages = sorted({round(float(r["coverage"]), 12) for r in results})
    shape = np.shape(results[0]["image"])
    maps = ("image", "sigma")
    metric_names = sorted({k for r in results for k in r if k not in ("coverage", "n_points", "method", *maps)})
    variables: dict[str, np.ndarray] = {}
    for method in methods:
        variables[f"image_{method}"] = np.full((len(coverages), *shape), np.nan)
        if any("sigma" in r for r in results if r["method"] == method):
            variables[f"sigma_{method}"] = np.full((len(coverages), *shape), np.nan)
        variables.update({f"{name}_{method}": np.full(len(coverages), np.nan) for name in metric_names})
    points = np.zeros(len(coverages), dtype=np.int64)
    for r in results:
        j = coverages.index(round(float(r["coverage"]), 12))
        variables[f"image_{r['method']}"][j] = r["image"]
        if "sigma" in r:
            variables[f"sigma_{r['method']}"][j] = r["sigma"]
        points[j] = r["n_points"]
        for name in metric_names:
            variables[f"{name}_{r['method']}"][j] = r.get(name, np.nan)
    ds = xr.Dataset(
        {"n_points": (("coverage",), points),
         **{name: (("coverage", "y", "x") if name.startswith(("image_", "sigma_")) else ("coverage",), v)
            for name, v in variables.items()}},
        coords={"coverage": coverages},
        attrs={"description": "reconstructions of the run's first points at each coverage, by method",
               "methods": methods, "metrics": metric_names},
    )
    chunks = (1, min(shape[0], 512), min(shape[1], 512))
    final = run_dir / EVALUATION_NAME
    tmp = Path(tempfile.mkdtemp(prefix=".evaluation-", dir=run_dir))
    try:
        ds.to_zarr(tmp / EVALUATION_NAME, mode="w", consolidated=False, zarr_format=3,
                   encoding={name: {"chunks": chunks} for name in variables if name.startswith(("image_", "sigma_"))})
        old = run_dir / ".evaluation-old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        (tmp / EVALUATION_NAME).rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def read_evaluation(run_dir: Any) -> list[dict[str, Any]]:
    """The results stored in a run's ``evaluation.zarr`` (as :func:`evaluate_run` returns them), or [].

    Images and uncertainty maps are read into memory; a method's rows are those of the coverages where
    its image is not all NaN.
    """
    from pathlib import Path

    import xarray as xr

    path = Path(run_dir) / EVALUATION_NAME
    if not path.exists():
        return []
    with xr.open_zarr(path, consolidated=False) as ds:
        rows = []
        for method in ds.attrs.get("methods", []):
            for j, coverage in enumerate(ds["coverage"].values):
                image = ds[f"image_{method}"][j].values
                if np.isnan(image).all():
                    continue
                row: dict[str, Any] = {"coverage": float(coverage), "n_points": int(ds["n_points"][j]),
                                       "method": method, "image": image}
                if f"sigma_{method}" in ds:
                    row["sigma"] = ds[f"sigma_{method}"][j].values
                for name in ds.attrs.get("metrics", []):
                    value = float(ds[f"{name}_{method}"][j])
                    if np.isfinite(value):
                        row[name] = value
                rows.append(row)
    return rows


def apply_to_run(
    run: Any,
    method: str = "learned",
    *,
    coverages: Sequence[float] | None = None,
    data_dir: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Rebuild a stored run with one method at each coverage, and merge the results into its evaluation.

    Parameters
    ----------
    run : str or path
        A run id (under ``data_dir``) or a run folder.
    method : str
        A reconstruction method; ``learned`` also stores its uncertainty.
    coverages : sequence of float, optional
        Default: the run's snapshot coverages.
    data_dir : path, optional
        Where run ids are looked up.
    **options
        Passed to the method (``model`` for ``learned``).

    Returns
    -------
    dict
        ``run_dir``, ``evaluation`` (path) and ``rows`` (the new results, without the images).

    Raises
    ------
    InputError
        If the run is not found, a coverage is beyond what it reached, or the method is unknown.
    """
    from fastflow.recon import available_methods
    from fastflow.runs import STORE_NAME, find_run
    from fastflow.store import ScanStore

    if method not in available_methods():
        raise InputError(f"unknown reconstruction method {method!r}; available: {', '.join(available_methods())}")
    run_dir = find_run(run, data_dir)
    store = ScanStore.open(run_dir / STORE_NAME)
    covs = list(coverages) if coverages else sorted({float(c) for c in store.snapshots()[0]})
    if not covs:
        covs = [store.n_points / store.grid.size]
    truth = run_truth(store.attrs)
    new = [evaluate_run(run_dir, c, method, truth=truth, **options) for c in covs]
    kept = [r for r in read_evaluation(run_dir) if r["method"] != method]
    path = write_evaluation(run_dir, kept + new)
    rows = [{k: v for k, v in r.items() if k not in ("image", "sigma")} for r in new]
    return {"run_dir": str(run_dir), "evaluation": path, "rows": rows}
