"""Regions (a region of interest, no-go regions) and operator controls, with real scans on the simulated instrument."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import xarray as xr
from skimage.io import imsave

from fastflow.controls import ControlInbox, send_control
from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.instruments.simulated import SimulatedInstrument
from fastflow.phantoms import flakes
from fastflow.regions import ALLOWED, NO_GO, OUTSIDE_ROI, Regions, parse_polygon, region_mask, route_crossing
from fastflow.runs import ScanConfig, acquire, create_run
from fastflow.sampling.registry import available_samplers, make_sampler
from fastflow.scan import STOP_OPERATOR, StopRules, run_scan
from fastflow.store import ScanStore

SHAPE = (48, 64)
ROI = "4,2; 60,2; 60,44; 4,44"          # x, y in grid pixels
NO_GO_REGION = "20,10; 44,10; 32,34"
TOP = "0,0; 127,0; 127,47; 0,47"          # the top half of the 96x128 sample below


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A small flakes image as a sample file (96 rows, 128 columns)."""
    path = tmp_path_factory.mktemp("sample") / "flakes.npy"
    np.save(path, flakes((96, 128), seed=4))
    return str(path)


def test_an_inline_polygon_covers_the_pixel_centres_inside_it():
    mask = region_mask("1,0; 6,0; 6,2; 1,2", (5, 8))
    assert mask.sum() == 6 * 3
    assert mask[0, 1] and mask[2, 6] and not mask[3, 1] and not mask[0, 0] and not mask[0, 7]


def test_regions_from_mask_files_and_polygon_files(tmp_path):
    truth = np.zeros(SHAPE, dtype=bool)
    truth[10:20, 30:50] = True
    imsave(tmp_path / "mask.png", (truth * 255).astype(np.uint8), check_contrast=False)
    np.save(tmp_path / "mask.npy", truth)
    (tmp_path / "one.json").write_text(json.dumps([[30, 10], [49, 10], [49, 19], [30, 19]]))
    (tmp_path / "many.json").write_text(json.dumps({"polygons": [[[30, 10], [49, 10], [49, 19], [30, 19]],
                                                                 [[0, 0], [2, 0], [2, 2]]]}))
    for name in ("mask.png", "mask.npy", "one.json"):
        np.testing.assert_array_equal(region_mask(tmp_path / name, SHAPE), truth)
    many = region_mask(tmp_path / "many.json", SHAPE)
    assert many[truth].all() and many[0, 0] and many.sum() == truth.sum() + 6


def test_bad_regions_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="at least three"):
        parse_polygon("1,2; 3,4")
    with pytest.raises(InputError, match="at least three"):
        parse_polygon("1,2; 3,x; 5,6")
    with pytest.raises(InputError, match="does not exist"):
        region_mask(tmp_path / "missing.png", SHAPE)
    np.save(tmp_path / "small.npy", np.ones((4, 4), dtype=bool))
    with pytest.raises(InputError, match="grid is 48x64"):
        region_mask(tmp_path / "small.npy", SHAPE)
    (tmp_path / "bad.json").write_text('{"shapes": []}')
    with pytest.raises(InputError, match="polygons"):
        region_mask(tmp_path / "bad.json", SHAPE)
    with pytest.raises(InputError, match="no pixel to measure"):
        Regions(SHAPE, roi=ROI, no_go=["0,0; 63,0; 63,47; 0,47"])


def test_codes_mark_the_outside_of_the_roi_and_the_no_go_pixels():
    regions = Regions(SHAPE, roi=ROI, no_go=[NO_GO_REGION])
    assert regions.codes[0, 0] == OUTSIDE_ROI and regions.codes[20, 32] == NO_GO and regions.codes[40, 10] == ALLOWED
    summary = regions.summary()
    assert summary["allowed_pixels"] + summary["no_go_pixels"] + summary["outside_roi_pixels"] == np.prod(SHAPE)
    assert summary["allowed_pixels"] == int(regions.allowed.sum())


def test_route_crossing_measures_the_travel_over_no_go_pixels():
    no_go = np.zeros((10, 20), dtype=bool)
    no_go[:, 8:10] = True                        # a two-pixel wide band, columns 8 and 9
    route = np.array([[2, 2], [2, 15], [5, 15], [5, 16]])
    crossing = route_crossing(route, no_go)
    assert crossing["legs"] == 1 and crossing["points"] == 0
    assert crossing["length_px"] == pytest.approx(2.0, abs=0.3)
    assert route_crossing(route, np.zeros_like(no_go)) == {"length_px": 0.0, "legs": 0, "points": 0}
    assert route_crossing(np.array([[3, 8]]), no_go)["points"] == 1


def _scan(sampler_name, tmp_path, *, coverage=0.2, regions=None, batch=32):
    grid = ScanGrid(SHAPE)
    sampler = make_sampler(sampler_name, grid, coverage=coverage, seed=1)
    if regions is not None:
        sampler.restrict(~regions.allowed)
    store = ScanStore.create(tmp_path / f"{sampler_name}.zarr", grid)
    if regions is not None:
        store.set_region(regions.codes)
    result = run_scan(sampler, SimulatedInstrument(flakes(SHAPE, seed=2), grid), store,
                      stop=StopRules(coverage=coverage), batch_size=batch)
    return sampler, store, result


@pytest.mark.parametrize("name", sorted(available_samplers()))
def test_every_sampler_honours_the_regions_and_counts_coverage_over_allowed_pixels(tmp_path, name):
    regions = Regions(SHAPE, roi=ROI, no_go=[NO_GO_REGION])
    sampler, store, result = _scan(name, tmp_path, regions=regions)
    idx = store.measurements()["indices"]
    assert len(idx) == result.n_points > 0
    assert (regions.codes[idx[:, 0], idx[:, 1]] == ALLOWED).all()           # 0 points outside what is allowed
    n_allowed = int(regions.allowed.sum())
    assert sampler.n_allowed == n_allowed
    assert result.coverage == pytest.approx(len(idx) / n_allowed)
    # the stop coverage is of the allowed pixels (a static pattern may end a little short of it)
    assert result.coverage <= 0.2 + 1 / n_allowed
    assert result.coverage >= (0.2 - 1 / n_allowed if result.stop_reason == "coverage reached" else 0.17)


def test_a_tiny_roi_still_gives_fast_enough_initial_points(tmp_path):
    regions = Regions(SHAPE, roi="30,20; 37,20; 37,27; 30,27")                # 64 pixels
    sampler, store, result = _scan("fast", tmp_path, coverage=0.5, regions=regions, batch=8)
    idx = store.measurements()["indices"]
    assert (regions.allowed[idx[:, 0], idx[:, 1]]).all()
    assert result.stop_reason == "coverage reached" and len(idx) == 32
    assert sampler.adaptive


def test_a_no_go_region_drawn_mid_scan_is_never_measured_afterwards(tmp_path, sample):
    """FAST, with the next batch already chosen (overlap) when the region arrives: it is dropped."""
    run_dir = tmp_path / "run"
    run = create_run(ScanConfig(sample=sample, sampler="fast", coverage=0.4, snapshots=[0.1], batch_size=40,
                                overlap=True), run_dir)
    inbox = ControlInbox(run)
    drawn = {}
    original = inbox.poll

    def poll():                        # draw the region once the scan is under way (a real file, as the view does)
        store = ScanStore.open(run / "scan.zarr")
        if "n" not in drawn and store.n_points >= 1000:
            drawn["n"] = store.n_points
            send_control(run, "no_go", source="test", region=TOP)
        return original()

    inbox.poll = poll
    from fastflow.runs import run_config

    setup = run_config(run).check()
    store = ScanStore.open(run / "scan.zarr", "a")
    result = run_scan(setup.sampler, setup.instrument(), store, stop=setup.stop, batch_size=40,
                      snapshots=setup.snapshots, overlap=True, control=inbox)
    store.close(stop_reason=result.stop_reason)
    m = ScanStore.open(run / "scan.zarr").measurements()
    late = np.arange(len(m["indices"])) >= drawn["n"]
    in_region = m["indices"][:, 0] < 48
    assert in_region[~late].any()                  # it measured there before
    assert not (in_region & late).any()            # and never after the region was drawn
    codes = ScanStore.open(run / "scan.zarr").region()
    assert (codes[:48] == NO_GO).all() and (codes[48:] == ALLOWED).all()
    assert result.stop_reason == "coverage reached"
    assert result.coverage == pytest.approx((m["indices"][:, 0] >= 48).sum() / (48 * 128))
    entry = ScanStore.open(run / "scan.zarr").attrs["controls"][0]
    assert entry["action"] == "no_go" and entry["status"] == "applied" and entry["pixels"] == 48 * 128


def test_controls_sent_before_a_run_starts_apply_in_order_and_are_recorded(tmp_path, sample):
    run = create_run(ScanConfig(sample=sample, sampler="halton", coverage=0.3, snapshots=[]), tmp_path / "run")
    send_control(run, "stop_rule", source="test", coverage=0.05)
    send_control(run, "no_go", source="test", region=TOP)
    (run / "controls" / "99999999999999999999-bad.json").write_text('{"action": "explode"}')
    with pytest.raises(InputError, match="unknown control"):
        send_control(run, "explode")
    with pytest.raises(InputError, match="takes no parameters"):
        send_control(run, "pause", coverage=0.2)
    with pytest.raises(InputError, match="coverage"):
        send_control(run, "stop_rule", coverage=1.5)
    report = acquire(run, figure=False)
    assert report["stop_reason"] == "coverage reached"
    assert report["allowed_pixels"] == 48 * 128
    assert report["coverage"] == pytest.approx(0.05, abs=1e-3)
    assert report["no_go_crossing"]["points"] == 0 and report["regions"]["no_go"] == 48 * 128
    actions = [(c["action"], c["status"]) for c in report["controls"]]
    assert actions == [("stop_rule", "applied"), ("no_go", "applied"), ("invalid", "refused")]
    assert report["controls"][0]["previous"]["coverage"] == 0.3
    assert all({"requested", "applied", "n_points", "source"} <= set(c) for c in report["controls"][:2])
    ds = xr.open_zarr(run / "scan.zarr", consolidated=False)
    assert int((ds["region"] == NO_GO).sum()) == 48 * 128
    assert not list((run / "controls").glob("*.json"))      # each read once, kept in controls/applied/


def test_pause_holds_the_scan_and_stop_ends_it_with_the_data_kept(tmp_path):
    run = create_run(ScanConfig(sample="flakes", sampler="raster", coverage=1.0, snapshots=[], batch_size=50),
                     tmp_path / "run")
    out: dict = {}
    scan = threading.Thread(target=lambda: out.update(acquire(run, figure=False)))
    scan.start()
    try:
        deadline = time.monotonic() + 120
        while ScanStore.open(run / "scan.zarr").n_points < 500:
            assert time.monotonic() < deadline and scan.is_alive()
            time.sleep(0.05)
        send_control(run, "pause", source="test")
        while not ScanStore.open(run / "scan.zarr").attrs.get("paused"):
            assert time.monotonic() < deadline and scan.is_alive()
            time.sleep(0.05)
        held = ScanStore.open(run / "scan.zarr").n_points
        time.sleep(1.0)
        assert ScanStore.open(run / "scan.zarr").n_points == held       # nothing measured while paused
        send_control(run, "stop", source="test")
    finally:
        scan.join(timeout=120)
    assert out["stop_reason"] == STOP_OPERATOR
    store = ScanStore.open(run / "scan.zarr")
    assert store.attrs["status"] == "complete" and store.n_points == held == out["n_points"]
    assert [c["action"] for c in store.attrs["controls"]] == ["pause", "stop"]
    assert np.isfinite(store.to_dataset()["reconstruction"].values).all()


def test_a_resumed_run_keeps_the_region_drawn_before_it_stopped(tmp_path, sample):
    run = create_run(ScanConfig(sample=sample, sampler="random", coverage=0.3, snapshots=[], batch_size=100),
                     tmp_path / "run")
    send_control(run, "no_go", source="test", region=TOP)

    def interrupt(done, total):
        if done >= 1000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        acquire(run, figure=False, progress=interrupt)
    assert ScanStore.open(run / "scan.zarr").attrs["status"] == "interrupted"
    report = acquire(run, figure=False)
    idx = ScanStore.open(run / "scan.zarr").measurements()["indices"]
    assert report["stop_reason"] in ("coverage reached", "sampler finished") and len(idx) > 1000
    assert (idx[:, 0] >= 48).all()                        # no point in the no-go half, before or after the resume
    assert report["allowed_pixels"] == 48 * 128
    assert report["coverage"] == pytest.approx(len(idx) / (48 * 128))


def test_the_control_command_sends_controls(tmp_path, sample):
    from tests.test_cli import fastflow

    run = create_run(ScanConfig(sample=sample, sampler="halton", coverage=0.05, snapshots=[]), tmp_path / "run")
    ok = fastflow("control", str(run), "stop-rule", "--coverage", "0.02")
    assert ok.returncode == 0 and "sent stop-rule" in ok.stdout
    bad = fastflow("control", str(run), "no-go")
    assert bad.returncode == 2 and "needs a region" in bad.stderr
    sent = [json.loads(p.read_text()) for p in sorted((run / "controls").glob("*.json"))]
    assert sent == [{**sent[0], "action": "stop_rule", "coverage": 0.02, "source": "cli"}]
    assert acquire(run, figure=False)["coverage"] == pytest.approx(0.02, abs=1e-3)
