"""The `fastflow` command, run as a real subprocess: a happy path and every bad input of the foundation issue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr


def fastflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastflow.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(autouse=True, scope="module")
def _one_prefect_api(prefect_api):
    """`fastflow scan` runs a Prefect flow: every subprocess reports to the session's API server."""
    yield


@pytest.fixture(scope="module")
def smooth_npy(tmp_path_factory) -> Path:
    yy, xx = np.mgrid[0:40, 0:56]
    image = np.exp(-((yy - 20) ** 2 + (xx - 25) ** 2) / 200.0) + 0.3 * (xx / 56)
    path = tmp_path_factory.mktemp("img") / "smooth.npy"
    np.save(path, image)
    return path


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_scan_json_report_store_and_figure(smooth_npy, tmp_path):
    out = tmp_path / "run"
    result = fastflow("scan", "--sample", str(smooth_npy), "--sampler", "halton", "--stop-coverage", "0.3",
                      "--snapshots", "0.1,0.2", "--batch-size", "25", "--out", str(out), "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)      # stdout holds exactly one JSON object
    n_total = 40 * 56
    assert report["stop_reason"] == "coverage reached"
    assert report["n_points"] == round(0.3 * n_total) and abs(report["coverage"] - 0.3) < 1e-3
    assert [round(s["coverage"], 3) for s in report["snapshots"]] == [0.1, 0.2, 0.3]
    nrmse = [s["nrmse"] for s in report["snapshots"]]
    assert nrmse[-1] < nrmse[0] < 0.2          # a smooth image is rebuilt well, better with more points
    assert report["acquisition_time_s"] > report["n_points"] * 0.01   # dwell alone is 10 ms per point
    assert report["run_id"] and Path(report["figure"]).stat().st_size > 10_000
    ds = xr.open_zarr(report["store"], consolidated=False)
    assert ds.sizes["point"] == report["n_points"]
    assert ds.attrs["run_id"] == report["run_id"] and ds.attrs["sampler"]["name"] == "halton"
    assert ds.attrs["stop_reason"] == "coverage reached" and ds.attrs["status"] == "complete"
    assert json.loads((out / "report.json").read_text())["run_id"] == report["run_id"]


def test_scan_stops_on_a_target_error(smooth_npy, tmp_path):
    result = fastflow("scan", "--sample", str(smooth_npy), "--sampler", "halton", "--stop-coverage", "0.5",
                      "--target-nrmse", "0.05", "--snapshots", "0.05", "--batch-size", "25", "--evaluate", "none",
                      "--out", str(tmp_path / "run"), "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stop_reason"] == "target error reached" and report["coverage"] < 0.5
    assert report["error_estimate"]["upper"] <= 0.05
    last = report["snapshots"][-1]
    assert last["nrmse_upper"] <= 0.05 and last["nrmse"] is not None       # the truth is reported beside it
    attrs = xr.open_zarr(report["store"], consolidated=False).attrs
    assert attrs["stop_rules"]["target_nrmse"] == 0.05 and attrs["stop_reason"] == "target error reached"
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--target-nrmse", "0"), "target NRMSE")


def test_scan_text_report_default_folder(smooth_npy, tmp_path):
    result = fastflow("scan", "--sample", str(smooth_npy), "--sampler", "raster", "--stop-coverage", "0.1",
                      "--evaluate", "none")
    assert result.returncode == 0, result.stderr
    assert "NRMSE" in result.stdout and "coverage reached" in result.stdout
    store_line = next(line for line in result.stdout.splitlines() if line.startswith("store:"))
    assert Path(store_line.split(maxsplit=1)[1]).is_dir()


def test_lists():
    samplers = fastflow("samplers")
    assert samplers.returncode == 0
    for name in ("raster", "random", "halton", "sobol", "spiral", "lissajous", "lines"):
        assert name in samplers.stdout
    samples = fastflow("samples")
    assert samples.returncode == 0 and "flakes" in samples.stdout and "camera" in samples.stdout


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda d: np.zeros((8, 8, 3)), ["2-D"]),
        (lambda d: np.zeros((0, 8)), ["empty"]),
        (lambda d: np.where(np.eye(8) > 0, np.nan, 1.0), ["NaN"]),
        (lambda d: np.where(np.eye(8) > 0, np.inf, 1.0), ["inf"]),
    ],
    ids=["3-D", "empty", "nan", "inf"],
)
def test_bad_images(tmp_path, make, fragments):
    path = tmp_path / "bad.npy"
    np.save(path, make(tmp_path))
    out = tmp_path / "run"
    assert_user_error(fastflow("scan", "--sample", str(path), "--out", str(out)), *fragments)
    assert not out.exists()                     # nothing was created


def test_path_that_is_not_an_image(tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("this is not a png")
    assert_user_error(fastflow("scan", "--sample", str(fake), "--out", str(tmp_path / "r")), "photo.png")


@pytest.mark.parametrize("coverage", ["0", "-0.1", "1.5", "nan", "abc"])
def test_bad_coverage(smooth_npy, tmp_path, coverage):
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--stop-coverage", coverage,
                               "--out", str(tmp_path / "r")), "coverage")
    assert not (tmp_path / "r").exists()


def test_unknown_sampler_and_sample(smooth_npy, tmp_path):
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--sampler", "zigzag"), "zigzag", "halton")
    assert_user_error(fastflow("scan", "--sample", "no-such-sample"), "no-such-sample", "flakes")


def test_existing_output_is_never_overwritten(smooth_npy, tmp_path):
    out = tmp_path / "run"
    first = fastflow("scan", "--sample", str(smooth_npy), "--stop-coverage", "0.05", "--out", str(out),
                     "--report", "json", "--evaluate", "none")
    assert first.returncode == 0, first.stderr
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    second = fastflow("scan", "--sample", str(smooth_npy), "--stop-coverage", "0.1", "--out", str(out))
    assert_user_error(second, str(out), "not empty")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert xr.open_zarr(out / "scan.zarr", consolidated=False).attrs["run_id"] == json.loads(first.stdout)["run_id"]


def test_other_bad_options(smooth_npy, tmp_path):
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--noise", "loud:3"), "noise")
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--snapshots", "0.1,2"), "snapshots")
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--batch-size", "0"), "batch")
    assert_user_error(fastflow("scan", "--sample", str(smooth_npy), "--recon", "magic"), "magic")


def test_fast_scan_with_shipped_model(tmp_path):
    image = tmp_path / "flakes.npy"
    from fastflow.phantoms import flakes

    np.save(image, flakes((60, 45), seed=9))
    result = fastflow("scan", "--sample", str(image), "--sampler", "fast", "--stop-coverage", "0.15",
                      "--batch-size", "20", "--snapshots", "0.05", "--out", str(tmp_path / "run"), "--report", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sampler"] == "fast" and report["stop_reason"] == "coverage reached"
    ds = xr.open_zarr(report["store"], consolidated=False)
    assert ds.attrs["sampler"]["name"] == "fast" and len(ds.attrs["sampler"]["model_hash"]) == 64
    assert ds.attrs["sampler"]["target_coverage"] == 0.15 and ds.attrs["sampler"]["initial"] == "interlaced"
    assert report["path_length"] > 0


def test_train_then_scan_with_the_trained_model(tmp_path):
    out = tmp_path / "models"
    result = fastflow("train", "--out", str(out), "--images", "camera,grains:3", "--validation-images", "particles:4",
                      "--c", "2,8", "--rows", "300", "--max-iter", "5", "--max-side", "64")
    assert result.returncode == 0, result.stderr
    assert "chosen c" in result.stdout
    for name in ("erd-model.safetensors", "erd-c2.safetensors", "erd-c8.safetensors", "model-card.json"):
        assert (out / name).is_file()
    card = json.loads((out / "model-card.json").read_text())
    assert card["training_images"] == ["camera", "grains:3"] and set(card["selection"]["scores"]) == {"2", "8"}
    scan = fastflow("scan", "--sample", "coins", "--sampler", "fast", "--model", str(out / "erd-model.safetensors"),
                    "--stop-coverage", "0.03", "--out", str(tmp_path / "run"), "--report", "json", "--evaluate", "none")
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)["n_points"] == round(0.03 * 303 * 384)


def test_bad_model_and_training_inputs(tmp_path):
    fake = tmp_path / "model.npz"
    fake.write_bytes(b"\x00" * 100)
    assert_user_error(fastflow("scan", "--sampler", "fast", "--model", str(fake)), "model.npz")
    assert_user_error(fastflow("scan", "--sampler", "halton", "--model", str(fake)), "--model")
    assert_user_error(fastflow("scan", "--sampler", "fast", "--initial", "sobol"), "initial", "halton")
    assert_user_error(fastflow("train", "--out", str(tmp_path / "m"), "--c", "2,-1"), "--c")
    assert_user_error(fastflow("train", "--out", str(tmp_path / "m"), "--images", "camera",
                               "--validation-images", "camera"), "camera")


def test_convert_model_turns_an_old_npz_into_a_model_file(tmp_path):
    from fastflow.erd import ERDModel
    from fastflow.sampling.slads import default_model_path

    model = ERDModel.load(default_model_path())
    old = tmp_path / "old.npz"
    np.savez(old, format=np.array("fastflow-erd-model"), format_version=np.array(1),
             card_json=np.array(json.dumps(model.card)), **dict(model.named_arrays()))
    new = tmp_path / "new.safetensors"
    result = fastflow("convert-model", str(old), str(new))
    assert result.returncode == 0, result.stderr
    assert ERDModel.load(new).content_hash() == model.content_hash()
    assert_user_error(fastflow("convert-model", str(old), str(new)), "already exists")
    assert_user_error(fastflow("scan", "--sampler", "fast", "--model", str(old)), "convert-model")
