"""Simulated scans scored against a known image: how good is a sampler at each coverage?

No store and no instrument timing: the sampler asks, the image answers exactly (or with the simulated
instrument's noise), and at each requested coverage the measured pixels are reconstructed and scored with
:mod:`fastflow.metrics`. The FAST paper scores biharmonic inpainting of the measured pixels
(``recon="biharmonic"``); IDW is much faster and ranks samplers the same way in our runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.images import check_image
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.metrics import evaluate
from fastflow.recon import reconstruct
from fastflow.sampling.protocol import BaseSampler


def simulate(
    sampler: BaseSampler,
    image: np.ndarray,
    coverages: Sequence[float],
    *,
    batch_size: int = 50,
    recon: str = "idw",
    noise: str | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run ``sampler`` on ``image`` and score the reconstruction at each coverage.

    Returns one row per coverage: ``coverage``, ``n_points`` and the metrics of :func:`fastflow.metrics.evaluate`.
    Batches are shortened so that every coverage is hit exactly.
    """
    truth = check_image(image)
    if tuple(truth.shape) != sampler.grid.shape:
        raise InputError(f"image shape {truth.shape} does not match the sampler's grid {sampler.grid.shape}")
    instrument = SimulatedInstrument(truth, sampler.grid, noise=noise, seed=seed)
    targets = sorted({max(1, round(c * truth.size)) for c in coverages})
    indices, values, rows = [], [], []
    for target in targets:
        while sampler.n_measured < target and not sampler.done:
            batch = sampler.ask(min(batch_size, target - sampler.n_measured))
            if len(batch) == 0:
                break
            measured = instrument.measure(batch)
            sampler.tell(batch, measured.values)
            indices.append(batch)
            values.append(measured.values[:, 0])
        idx, val = np.concatenate(indices), np.concatenate(values)
        estimate = reconstruct(sampler.grid, idx, val, method=recon)
        rows.append({"coverage": sampler.n_measured / truth.size, "n_points": int(len(idx)),
                     **evaluate(truth, estimate)})
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

    Returns
    -------
    dict
        ``coverage``, ``n_points``, ``method``, ``image`` and the metrics (empty without a truth).

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
    if chunk is not None and method == "idw":
        image = idw_chunked(grid, indices, values, chunk=chunk).compute()
    else:
        image = reconstruct(grid, indices, values, method=method)
    if truth is None:
        truth = run_truth(store.attrs)
    metrics = evaluate(truth, image) if truth is not None else {}
    return {"coverage": n / grid.size, "n_points": n, "method": method, "image": image, **metrics}


def write_evaluation(run_dir: Any, results: Sequence[dict[str, Any]]) -> str:
    """Write evaluation results of one run as ``evaluation.zarr`` in its folder (replacing an older one).

    The dataset is indexed by ``coverage`` and holds, per method, ``image_<method>(coverage, y, x)`` and
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
    metric_names = sorted({k for r in results for k in r if k not in ("coverage", "n_points", "method", "image")})
    variables: dict[str, np.ndarray] = {}
    for method in methods:
        variables[f"image_{method}"] = np.full((len(coverages), *shape), np.nan)
        variables.update({f"{name}_{method}": np.full(len(coverages), np.nan) for name in metric_names})
    points = np.zeros(len(coverages), dtype=np.int64)
    for r in results:
        j = coverages.index(round(float(r["coverage"]), 12))
        variables[f"image_{r['method']}"][j] = r["image"]
        points[j] = r["n_points"]
        for name in metric_names:
            variables[f"{name}_{r['method']}"][j] = r.get(name, np.nan)
    ds = xr.Dataset(
        {"n_points": (("coverage",), points),
         **{name: (("coverage", "y", "x") if name.startswith("image_") else ("coverage",), v)
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
                   encoding={f"image_{m}": {"chunks": chunks} for m in methods})
        old = run_dir / ".evaluation-old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        (tmp / EVALUATION_NAME).rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
