"""Tests of the learned reconstruction: a tiny model trained in seconds, its file, its guarantees."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastflow import phantoms  # noqa: E402
from fastflow.errors import InputError  # noqa: E402
from fastflow.grid import ScanGrid  # noqa: E402
from fastflow.metrics import nrmse, uncertainty_scores  # noqa: E402
from fastflow.modelfile import ModelError, write_model_file  # noqa: E402
from fastflow.recon import biharmonic, reconstruct, reconstruct_with_uncertainty  # noqa: E402
from fastflow.recon.base import prepare_measurements  # noqa: E402
from fastflow.recon.learned import FORMAT_NAME, LearnedModel, learned, learned_with_uncertainty  # noqa: E402
from fastflow.recon.learned_check import MIN_REPRESENTED, check_windows, line_direction, self_check  # noqa: E402
from fastflow.recon.learned_data import (  # noqa: E402
    TrainingSet,
    chunk_samples,
    create_training_set,
    load_training_set,
    missing_chunks,
    write_chunk,
)
from fastflow.recon.learned_inputs import INPUT_CHANNELS  # noqa: E402
from fastflow.recon.masks import MASK_FAMILIES, scan_mask  # noqa: E402
from fastflow.stem import scan_noise  # noqa: E402


def _held_out(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy particles phantom (seed never used in training), a 15 % random mask and its measurements."""
    truth = phantoms.particles((96, 112), seed=seed, density=2e-3)
    noisy = scan_noise(truth, seed, dose=20)
    mask = scan_mask("random", truth.shape, 0.15, seed=seed)
    return truth, mask, noisy[mask]


def test_masks_of_every_family_have_the_asked_coverage():
    image = phantoms.flakes((48, 64), seed=2)
    for family in MASK_FAMILIES:
        for coverage in (0.01, 0.2):
            mask = scan_mask(family, image.shape, coverage, seed=3, image=image)
            assert mask.shape == image.shape and int(mask.sum()) == max(1, round(coverage * image.size)), family
    with pytest.raises(InputError, match="unknown mask family"):
        scan_mask("zigzag", (8, 8), 0.1)
    with pytest.raises(InputError, match="needs the image"):
        scan_mask("edges", (8, 8), 0.1)


def test_tiny_model_beats_biharmonic_on_held_out_phantoms(tiny_learned_model):
    ratios = []
    for seed in (7, 8, 9, 10):
        truth, mask, values = _held_out(seed)
        grid = ScanGrid(truth.shape)
        idx = np.argwhere(mask)
        image, sigma = learned_with_uncertainty(grid, idx, values, model=tiny_learned_model)
        ratios.append(nrmse(truth, image) / nrmse(truth, biharmonic(grid, idx, values)))
        scores = uncertainty_scores(truth, image, sigma, ~mask)
        assert scores["spearman"] > 0.2 and 0.6 < scores["coverage90"] <= 1.0, scores
    # about 0.98 here (0.95 with format 1's linear-only inputs: the tiny model has yet to learn to ignore the
    # cubic guess, which noise spoils); better than biharmonic on every image
    assert max(ratios) < 1.0 and np.mean(ratios) < 0.99, ratios


def test_measured_pixels_are_kept_exactly_and_have_no_uncertainty(tiny_learned_model):
    truth, mask, values = _held_out(8)
    grid = ScanGrid(truth.shape)
    idx = np.argwhere(mask)
    image, sigma = learned_with_uncertainty(grid, idx, values, model=tiny_learned_model)
    np.testing.assert_array_equal(image[mask], values)  # row-major, as np.argwhere gives them
    assert np.all(sigma[mask] == 0) and np.all(sigma[~mask] > 0)
    free, free_sigma = learned_with_uncertainty(grid, idx, values, model=tiny_learned_model, keep_measured=False)
    assert not np.array_equal(free[mask], values) and np.all(free_sigma > 0)
    np.testing.assert_array_equal(free[~mask], image[~mask])


def test_learned_is_deterministic_and_order_free(tiny_learned_model):
    truth, mask, values = _held_out(9)
    grid = ScanGrid(truth.shape)
    idx = np.argwhere(mask)
    first = learned(grid, idx, values, model=tiny_learned_model)
    order = np.random.default_rng(0).permutation(len(idx))
    np.testing.assert_array_equal(learned(grid, idx[order], values[order], model=tiny_learned_model), first)
    np.testing.assert_array_equal(learned(grid, idx, values, model=tiny_learned_model), first)


def test_tiled_completion_equals_one_tile_within_tolerance(tiny_learned_model):
    truth = phantoms.flakes((180, 150), seed=11)
    mask = scan_mask("halton", truth.shape, 0.1, seed=1)
    grid = ScanGrid(truth.shape)
    idx = np.argwhere(mask)
    whole = learned(grid, idx, truth[mask], model=tiny_learned_model, tile=256)
    tiled = learned(grid, idx, truth[mask], model=tiny_learned_model, tile=64, overlap=32)
    difference = np.abs(tiled - whole)
    spread = float(np.std(truth))
    assert difference.max() < 0.1 * spread and difference.mean() < 0.005 * spread


@pytest.mark.parametrize("shape", [(1, 40), (7, 300), (300, 9), (33, 33)])
def test_any_size_and_aspect(tiny_learned_model, shape):
    rng = np.random.default_rng(0)
    grid = ScanGrid(shape)
    n = max(2, grid.size // 10)
    flat = rng.choice(grid.size, n, replace=False)
    image = learned(grid, grid.unravel(flat), rng.random(n), model=tiny_learned_model)
    assert image.shape == shape and np.all(np.isfinite(image))


def test_dispatch_options_and_errors(tiny_learned_model, tiny_learned_model_path):
    truth, mask, values = _held_out(10)
    grid = ScanGrid(truth.shape)
    idx = np.argwhere(mask)
    by_name = reconstruct(grid, idx, values, method="learned", model=str(tiny_learned_model_path))
    np.testing.assert_array_equal(by_name, learned(grid, idx, values, model=tiny_learned_model))
    image, sigma = reconstruct_with_uncertainty(grid, idx, values, method="idw")
    assert sigma is None and image.shape == truth.shape
    full = learned(grid, np.argwhere(np.ones(truth.shape, bool)), truth.ravel(), model=tiny_learned_model)
    np.testing.assert_array_equal(full, truth)
    with pytest.raises(InputError, match="NaN"):
        learned(grid, idx, np.where(np.arange(len(values)) == 3, np.nan, values), model=tiny_learned_model)
    with pytest.raises(InputError, match="does not take option"):
        reconstruct(grid, idx, values, method="learned", k=3)


def test_model_file_round_trip_and_refusals(tiny_learned_model, tiny_learned_model_path, tmp_path):
    loaded = LearnedModel.load(tiny_learned_model_path)
    assert loaded.sigma_scale == tiny_learned_model.sigma_scale and loaded.content_hash
    assert "training" in loaded.card and "validation" in loaded.card and "library_versions" in loaded.card
    assert "learned reconstruction model" in loaded.describe()
    other = write_model_file(tmp_path / "erd.safetensors", {"w": np.ones(2)}, kind="fastflow-erd-model", version=2)
    with pytest.raises(ModelError, match="not a learned reconstruction model"):
        LearnedModel.load(other)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_learned_model_path.read_bytes()[:-100])
    with pytest.raises(ModelError, match="bad.safetensors"):
        LearnedModel.load(bad)
    with pytest.raises(ModelError, match="no such file"):
        learned(ScanGrid((8, 8)), [[0, 0]], [1.0], model=tmp_path / "absent.safetensors")
    # a format-1 model (trained on the linear first guess, no longer made) is refused, not fed other inputs
    from fastflow.nn.weights import save_network
    old = save_network(tmp_path / "v1.safetensors", tiny_learned_model.network, kind=FORMAT_NAME, version=1,
                       extra_arrays={"calibration.sigma_scale": np.array(1.0)})
    with pytest.raises(ModelError, match="format version 1; this fastflow reads version"):
        LearnedModel.load(old)


def test_training_set_store_is_resumable_and_complete(tmp_path):
    path = tmp_path / "set.zarr"
    params = create_training_set(path, chunks=3, sources_per_chunk=2, crop=32, seed=5, families=["random", "lines"])
    assert missing_chunks(path) == [0, 1, 2]
    with pytest.raises(InputError, match="incomplete"):
        load_training_set(path)
    for chunk in (0, 2):
        write_chunk(path, chunk, chunk_samples(chunk, sources=2, crop=32, seed=5, families=["random", "lines"]))
    assert missing_chunks(path) == [1]
    assert create_training_set(path, chunks=3, sources_per_chunk=2, crop=32, seed=5,
                               families=["random", "lines"]) == params  # reopened, not wiped
    with pytest.raises(InputError, match="other parameters"):
        create_training_set(path, chunks=4, sources_per_chunk=2, crop=32, seed=5)
    write_chunk(path, 1, chunk_samples(1, sources=2, crop=32, seed=5, families=["random", "lines"]))
    data = load_training_set(path)
    assert len(data) == 12 and data.inputs.shape == (12, len(INPUT_CHANNELS), 32, 32)
    again = chunk_samples(1, sources=2, crop=32, seed=5, families=["random", "lines"])  # deterministic per chunk
    np.testing.assert_array_equal(data.inputs[4:8], again["inputs"])
    assert set(np.unique(data.meta["family"])) <= {list(MASK_FAMILIES).index("random"),
                                                   list(MASK_FAMILIES).index("lines")}
    batch = data.batch(3, 5)
    assert batch["inputs"].shape == (5, len(INPUT_CHANNELS), 32, 32) and batch["target"].shape == (5, 32, 32)
    np.testing.assert_array_equal(data.batch(3, 5)["inputs"], batch["inputs"])
    assert isinstance(TrainingSet.from_chunks([again]), TrainingSet)


@pytest.fixture
def learned_run(tmp_path, monkeypatch, tiny_learned_model_path):
    """A run scanned with --recon learned (the tiny model as the default model)."""
    from fastflow.runs import ScanConfig, acquire, create_run

    sample = tmp_path / "flakes.npy"
    np.save(sample, phantoms.flakes((40, 56), seed=4))
    monkeypatch.setenv("FASTFLOW_LEARNED_MODEL", str(tiny_learned_model_path))
    config = ScanConfig(sample=str(sample), sampler="halton", coverage=0.2, snapshots=[0.1, 0.2], recon="learned")
    run_dir = create_run(config, tmp_path / "run")
    acquire(run_dir, figure=False)
    return run_dir


def test_a_learned_scan_stores_its_uncertainty(learned_run, tiny_learned_model):
    from fastflow.store import ScanStore

    store = ScanStore.open(learned_run / "scan.zarr")
    ds = store.to_dataset()
    m = store.measurements()
    sigma = store.uncertainty()
    assert sigma is not None and np.all(sigma[m["indices"][:, 0], m["indices"][:, 1]] == 0)
    assert ds["snapshot_uncertainty"].shape == (2, 40, 56) and np.all(np.isfinite(ds["snapshot_uncertainty"].values))
    np.testing.assert_array_equal(ds["snapshot_uncertainty"][-1].values, sigma)
    assert store.attrs["reconstruction_model"]["content_hash"] == tiny_learned_model.content_hash


def test_apply_to_run_merges_learned_results_into_the_evaluation(learned_run, tiny_learned_model_path):
    import xarray as xr

    from fastflow.evaluate import apply_to_run, read_evaluation

    first = apply_to_run(learned_run, "idw")
    assert {r["method"] for r in read_evaluation(learned_run)} == {"idw"}
    out = apply_to_run(learned_run, "learned", coverages=[0.1], model=str(tiny_learned_model_path))
    assert out["evaluation"] == first["evaluation"]
    rows = read_evaluation(learned_run)
    assert sorted((r["method"], round(r["coverage"], 3)) for r in rows) == [("idw", 0.1), ("idw", 0.2),
                                                                             ("learned", 0.1)]
    ev = xr.open_zarr(out["evaluation"], consolidated=False)
    assert np.isnan(ev["sigma_learned"].sel(coverage=0.2, method="nearest")).all()
    assert 0 <= float(ev["coverage90_learned"].sel(coverage=0.1, method="nearest")) <= 1
    assert "spearman" in out["rows"][0] and "nrmse" in out["rows"][0]
    with pytest.raises(InputError, match="unknown reconstruction method"):
        apply_to_run(learned_run, "kriging")


# ------------------------------------------------------------------------------------------- self-check

def _untrained_model(seed: int = 0) -> LearnedModel:
    """A network fresh from its initialisation: its corrections are noise the check must see through."""
    from fastflow.nn.blocks import build
    from fastflow.recon.learned_training import LearnedTrainingConfig

    torch.manual_seed(seed)
    network = build(LearnedTrainingConfig(base=8, depth=2).network_config())
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(3.0)  # corrections of the order of the image's spread
    return LearnedModel(network)


def test_self_check_falls_back_to_interpolation_when_the_network_is_wrong():
    truth = phantoms.flakes((120, 140), seed=21)
    mask = scan_mask("random", truth.shape, 0.2, seed=2)
    grid, idx = ScanGrid(truth.shape), np.argwhere(mask)
    model = _untrained_model()
    alone = learned(grid, idx, truth[mask], model=model, check=False)
    checked, _, found = model.complete_checked(prepare_measurements(grid, idx, truth[mask]))
    assert found.held_out >= 300 and found.represented > 0.9
    assert found.network_weight < 0.05 and abs(sum(found.weights) - 1) < 1e-9 and min(found.weights) >= 0
    assert found.rmse_blend <= min(found.rmse) + 1e-12
    assert abs(sum(found.border_weights) - 1) < 1e-9 and found.border_weights[1] == found.border_weights[2] == 0
    assert nrmse(truth, checked) < 0.5 * nrmse(truth, alone)
    error = {name: nrmse(truth, reconstruct(grid, idx, truth[mask], method=name)) for name in ("linear", "cubic", "biharmonic")}
    # (the hidden pixels of one window pick cubic here, 5 % behind biharmonic over the whole image)
    assert nrmse(truth, checked) <= 1.05 * min(error["linear"], error["cubic"])
    assert nrmse(truth, checked) <= 1.1 * error["biharmonic"]
    np.testing.assert_array_equal(checked[mask], truth[mask])
    again = learned(grid, idx, truth[mask], model=model)
    np.testing.assert_array_equal(again, checked)  # deterministic


def test_self_check_keeps_a_good_network_and_abstains_where_hidden_pixels_say_nothing(tiny_learned_model):
    truth, mask, values = _held_out(7)
    m = prepare_measurements(ScanGrid(truth.shape), np.argwhere(mask), values)
    found = self_check(tiny_learned_model, m)
    # the tiny model was trained for exactly these noisy images: it keeps a large share of the blend (0.35 here,
    # the biharmonic interpolation the rest), and the blend is closer to the hidden values than either alone
    assert found.network_weight > 0.25 and found.rmse_blend < min(found.rmse), found
    # two fully measured blocks: hidden pixels lie 1 px from the rest, unmeasured ones up to 60 px; the check abstains
    blocks = np.zeros(truth.shape, bool)
    blocks[10:30, 10:40] = blocks[60:80, 60:100] = True
    dense = prepare_measurements(ScanGrid(truth.shape), np.argwhere(blocks), truth[blocks])
    abstained = self_check(tiny_learned_model, dense)
    assert abstained.held_out > 0 and abstained.represented < MIN_REPRESENTED
    assert abstained.weights == (1.0, 0.0, 0.0, 0.0)
    # too few measurements to hide any: nothing hidden, the network alone
    few = prepare_measurements(ScanGrid((40, 40)), [[3, 4], [20, 30], [35, 9]], [1.0, 2.0, 3.0])
    assert self_check(tiny_learned_model, few).held_out == 0


def test_line_scans_are_checked_across_their_lines():
    rows = np.zeros((40, 50), bool)
    rows[3::6] = True
    assert line_direction(rows) == (0, 1) and line_direction(rows.T) == (1, 0)
    assert line_direction(np.eye(40, dtype=bool)) == (1, 1) and line_direction(np.eye(40, dtype=bool)[:, ::-1]) == (1, -1)
    for family in ("random", "raster", "halton", "spiral", "lissajous"):
        assert line_direction(scan_mask(family, (96, 96), 0.2, seed=1)) is None, family
    # every 6th row of a flakes phantom: whole rows are hidden, so the guesses are judged across the lines,
    # where the untrained network and cubic lose and biharmonic wins (along a line every guess looks good)
    truth = phantoms.flakes((120, 140), seed=21)
    rows = np.zeros(truth.shape, bool)
    rows[2::6] = True
    grid, idx = ScanGrid(truth.shape), np.argwhere(rows)
    image, _, found = _untrained_model().complete_checked(prepare_measurements(grid, idx, truth[rows]))
    assert found.represented == 1.0 and found.network_weight < 0.05 and found.weights[-1] > 0.5, found
    error = {name: nrmse(truth, reconstruct(grid, idx, truth[rows], method=name)) for name in ("linear", "cubic", "biharmonic")}
    assert nrmse(truth, image) <= 1.05 * min(error.values()), error


def test_the_blend_passes_to_the_border_weights_near_the_edge():
    from fastflow.recon.learned_check import BORDER, SelfCheck, apply_blend

    shape = (30, 40)
    images = {"linear": np.full(shape, 1.0), "cubic": np.full(shape, 2.0), "biharmonic": np.full(shape, 3.0)}
    asked = []

    def guesses(name):
        asked.append(name)
        return images[name]

    found = SelfCheck(weights=(0.0, 0.0, 1.0, 0.0), border_weights=(0.5, 0.0, 0.0, 0.5))
    out = apply_blend(found, np.zeros(shape), guesses)
    assert sorted(asked) == ["biharmonic", "cubic"]  # linear has no weight anywhere: not computed
    assert np.all(out[0] == 1.5) and np.all(out[:, -1] == 1.5) and out[BORDER, 20] == 1.5  # network/biharmonic
    np.testing.assert_array_equal(out[2 * BORDER : -2 * BORDER, 2 * BORDER : -2 * BORDER], 2.0)  # cubic inside
    ramp = out[BORDER : 2 * BORDER + 1, 20]
    assert np.all(np.diff(ramp) > 0) and ramp[-1] == 2.0  # a linear passage, no seam
    same = SelfCheck(weights=(0.2, 0.0, 0.8, 0.0), border_weights=(0.2, 0.0, 0.8, 0.0))
    np.testing.assert_allclose(apply_blend(same, np.zeros(shape), guesses), 1.6)


def test_check_windows_cover_small_images_and_spread_over_large_ones():
    assert check_windows((100, 300), window=256) == [(slice(0, 100), slice(22, 278))]
    assert check_windows((100, 300)) == [(slice(0, 100), slice(54, 246))]  # the default 192 px window
    windows = check_windows((1100, 1200), window=256)
    assert len(windows) == 4 and all(ys.stop - ys.start == 256 == xs.stop - xs.start for ys, xs in windows)
    assert {ys.start for ys, _ in windows} == {211, 633} and {xs.start for _, xs in windows} == {236, 708}
