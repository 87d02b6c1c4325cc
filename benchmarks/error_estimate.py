"""Error estimate (issue 15): calibrate :mod:`fastflow.errorest` on training images, check it on held-out ones.

1. **Calibration.** Each training image (the ERD model's training and validation images, longer side
   192 px; noise-free, and once more with Poisson noise of peak 50 and once with Gaussian noise of sigma
   0.03) is scanned by ``fast``, ``random`` and ``halton`` to 40 % coverage on the simulated instrument;
   at each coverage of ``COVERAGES`` the cross-validation features and the true NRMSE of the IDW and the
   biharmonic reconstructions are recorded. :func:`fastflow.errorest.fit_calibration` fits them.
2. **Check.** The same on the held-out cases of :func:`fastflow.benchmark.held_out_cases` (none of them
   trained on): the share of snapshots from 5 % coverage on whose estimate is within 25 % of the truth.
3. **Stop rule.** On each held-out case, ``fast`` and ``halton`` scan in steps of 0.5 % coverage with IDW
   (the scan's default). For targets equal to the true error at 10 % and at 20 % coverage, the table
   compares the coverage at which the true error first reaches the target with the one at which the
   upper estimate does (what ``--target-nrmse`` stops at): the issue asks for a stop within one batch of
   the crossing or later, never more than 20 % earlier.

``--write`` stores the calibration, with a card of these figures, as the file fastflow ships
(``fastflow/data/error-estimate.json``).

    python -u benchmarks/error_estimate.py --write fastflow/data/error-estimate.json --json rows.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np

from fastflow.benchmark import held_out_cases
from fastflow.erd.fit import DEFAULT_TRAINING, DEFAULT_VALIDATION, load_image_set
from fastflow.errorest import (FAMILIES, NEIGHBOURS, UPPER_QUANTILE, ErrorModel, calibration_rows, check_rows,
                               fit_calibration, write_calibration)

COVERAGES = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4)
SAMPLERS = ("fast", "random", "halton")
METHODS = ("idw", "biharmonic")
TRAINING_NOISE = (None, "poisson:50", "gaussian:0.03")
TRAINING_SIDE = 192
STOP_STEP = 0.005
MIN_COVERAGE = 0.05


def stop_check(model: ErrorModel, name: str, image: np.ndarray, noise: str | None, sampler: str) -> list[dict[str, Any]]:
    """True and estimated first crossings of two targets on one fine-stepped IDW scan."""
    steps = np.round(np.arange(0.01, max(COVERAGES) + 1e-9, STOP_STEP), 4)
    rows = calibration_rows(image, sampler, steps, methods=("idw",), noise=noise)
    true = np.array([r["true_idw"] for r in rows])
    covs = np.array([r["coverage"] for r in rows])
    _, upper = model.from_features(rows, method="idw", family=rows[0]["family"])
    low = model.coverage_range[0]
    out = []
    for at in (0.1, 0.2):
        target = float(true[np.argmin(np.abs(covs - at))])
        c_true = float(covs[np.argmax(true <= target)])
        hits = np.flatnonzero((upper <= target) & (covs >= low - 1e-9))
        c_stop = float(covs[hits[0]]) if len(hits) else float("nan")
        batch = 50 / image.size
        out.append({"image": name, "sampler": sampler, "target": target, "c_true": c_true, "c_stop": c_stop,
                    "ok": bool(np.isnan(c_stop) or c_stop >= c_true - batch - 1e-9),
                    "early_ok": bool(np.isnan(c_stop) or c_stop >= 0.8 * c_true)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--write", help="write the calibration file here")
    parser.add_argument("--skip-stop", action="store_true", help="leave out the stop-rule check")
    args = parser.parse_args()

    t_start = time.perf_counter()
    training_names = list(DEFAULT_TRAINING) + list(DEFAULT_VALIDATION)
    training = [(f"{n}{'+' + noise if noise else ''}", im, noise)
                for n, im in load_image_set(training_names, TRAINING_SIDE).items() for noise in TRAINING_NOISE]
    held_out = [(n, np.asarray(make(), float), noise) for n, (make, noise) in held_out_cases().items()]
    rows: dict[str, list[dict[str, Any]]] = {"training": [], "held_out": [], "stop": []}
    for part, cases in (("training", training), ("held_out", held_out)):
        for name, image, noise in cases:
            for sampler in SAMPLERS:
                t0 = time.perf_counter()
                got = calibration_rows(image, sampler, COVERAGES, methods=METHODS, noise=noise)
                rows[part] += [{"image": name, **r} for r in got]
                print(f"{part:9s} {name:26s} {sampler:7s} {time.perf_counter() - t0:6.1f} s", flush=True)
        if part == "training":
            fits = fit_calibration(rows["training"], METHODS, min_coverage=MIN_COVERAGE)
            model = ErrorModel(fits=fits, coverage_range=(MIN_COVERAGE, max(COVERAGES)), card={})

    checks: dict[str, Any] = {}
    print("\n| method | samplers | held-out snapshots within 25 % | median rel. error | largest | upper below truth |")
    print("|---|---|---|---|---|---|")
    for method in METHODS:
        for family in FAMILIES:
            c = check_rows(model, rows["held_out"], method, family, MIN_COVERAGE)
            checks[f"{method}/{family}"] = c
            print(f"| {method} | {family} | {c['within_25pct']:.0%} | {c['median_rel_error']:.1%} "
                  f"| {c['max_rel_error']:.0%} | {c['upper_below_truth']:.0%} |")
    print("\nper held-out image (IDW; share within 25 %, median relative error):")
    for name, *_ in held_out:
        for family in FAMILIES:
            c = check_rows(model, [r for r in rows["held_out"] if r["image"] == name], "idw", family, MIN_COVERAGE)
            print(f"  {name:16s} {family:9s} {c['within_25pct']:4.0%} {c['median_rel_error']:6.1%}")

    if not args.skip_stop:
        print("\n| image | sampler | target NRMSE | true error reaches it at | upper estimate at | within a batch or later | not > 20 % early |")
        print("|---|---|---|---|---|---|---|")
        for name, image, noise in held_out:
            for sampler in ("fast", "halton"):
                for r in stop_check(model, name, image, noise, sampler):
                    rows["stop"].append(r)
                    at = "not by 40 %" if np.isnan(r["c_stop"]) else f"{r['c_stop']:.1%}"
                    print(f"| {name} | {sampler} | {r['target']:.4f} | {r['c_true']:.1%} | {at} "
                          f"| {'yes' if r['ok'] else 'NO'} | {'yes' if r['early_ok'] else 'NO'} |", flush=True)
        checks["stop_rule"] = {"cases": len(rows["stop"]),
                               "within_a_batch_or_later": float(np.mean([r["ok"] for r in rows["stop"]])),
                               "not_20pct_early": float(np.mean([r["early_ok"] for r in rows["stop"]])),
                               "median_late_ratio": float(np.nanmedian([r["c_stop"] / r["c_true"] for r in rows["stop"]]))}
        print(f"\nstop rule: {checks['stop_rule']}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.write:
        from importlib.metadata import version

        import scipy

        card = {"description": "calibration of fastflow's NRMSE estimate (fastflow.errorest), by "
                               "benchmarks/error_estimate.py",
                "training_images": training_names, "training_side_px": TRAINING_SIDE,
                "training_noise": [n or "none" for n in TRAINING_NOISE], "samplers": list(SAMPLERS),
                "coverages": list(COVERAGES), "batch_size": 50, "neighbours": NEIGHBOURS,
                "upper_quantile": UPPER_QUANTILE, "min_coverage": MIN_COVERAGE,
                "held_out_images": [n for n, *_ in held_out], "held_out_checks": checks,
                "fastflow": version("fastflow"), "numpy": np.__version__, "scipy": scipy.__version__,
                "python": platform.python_version(), "run_time_s": round(time.perf_counter() - t_start)}
        path = write_calibration(args.write, fits, (MIN_COVERAGE, max(COVERAGES)), card)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
