"""Tests of the neural-network layer: networks, weights in model files, tiled inference, training and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastflow.errors import InputError  # noqa: E402
from fastflow.modelfile import ModelError, content_hash, read_model_file, write_model_file  # noqa: E402
from fastflow.nn import resolve_device  # noqa: E402
from fastflow.nn.blocks import UNet, build, count_parameters  # noqa: E402
from fastflow.nn.tiling import blend_window, tile_starts, tiled_apply  # noqa: E402
from fastflow.nn.training import TrainingConfig, learning_rate_at, train  # noqa: E402
from fastflow.nn.weights import load_network, save_network  # noqa: E402

KIND = "fastflow-test-network"


def _net(seed: int = 0, **options) -> UNet:
    torch.manual_seed(seed)
    config = {"name": "unet", "in_channels": 2, "out_channels": 1, "base": 4, "depth": 3, **options}
    return build(config)


def _run(net, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


@pytest.mark.parametrize("shape", [(37, 53), (8, 8), (1, 30), (5, 3), (64, 64)])
def test_unet_takes_any_size(shape):
    out = _run(_net(), np.random.default_rng(0).normal(size=(2, 2, *shape)))
    assert out.shape == (2, 1, *shape) and np.all(np.isfinite(out))


def test_unet_gated_and_parameters():
    plain, gated = _net(), _net(conv="gated")
    assert count_parameters(gated) > count_parameters(plain) > 0
    assert _run(gated, np.zeros((1, 2, 20, 20))).shape == (1, 1, 20, 20)


@pytest.mark.parametrize("config, match", [
    ({"name": "resnet"}, "unknown network"),
    ({"name": "unet", "in_channels": 1, "out_channels": 1, "depth": 9}, "depth"),
    ({"name": "unet", "in_channels": 1, "out_channels": 1, "activation": "tanh"}, "activation"),
    ({"name": "unet", "in_channels": 1, "out_channels": 1, "conv": "partial"}, "convolution"),
    ({"name": "unet", "in_channels": 1, "out_channels": 1, "colour": 3}, "bad network configuration"),
    ("unet", "unknown network"),
])
def test_build_refuses_bad_configurations(config, match):
    with pytest.raises(InputError, match=match):
        build(config)


def test_weights_round_trip_and_refusals(tmp_path):
    net = _net(3)
    x = np.random.default_rng(1).normal(size=(1, 2, 24, 31))
    path = save_network(tmp_path / "net.safetensors", net, kind=KIND, version=1, card={"note": "n"},
                        extra_arrays={"calibration.k": np.array(2.0)})
    loaded, model_file = load_network(path, kind=KIND, versions=(1,), what="test network")
    np.testing.assert_array_equal(_run(loaded, x), _run(net, x))
    assert model_file.card["architecture"] == net.config and model_file.card["note"] == "n"
    assert float(model_file.arrays["calibration.k"]) == 2.0 and not loaded.training

    arrays = dict(model_file.arrays)
    card = {k: v for k, v in model_file.card.items() if k != "content_hash"}
    bad = tmp_path / "bad.safetensors"
    write_model_file(bad, arrays, kind=KIND, version=1, card={**card, "architecture": {**net.config, "base": 8}})
    with pytest.raises(ModelError, match="has shape .* the architecture needs"):
        load_network(bad, kind=KIND, versions=(1,), what="test network")
    write_model_file(bad, {k: v for k, v in arrays.items() if k != "net.head.bias"}, kind=KIND, version=1, card=card)
    with pytest.raises(ModelError, match="missing 'head.bias'"):
        load_network(bad, kind=KIND, versions=(1,), what="test network")
    write_model_file(bad, arrays, kind=KIND, version=1, card={**card, "architecture": {"name": "mlp"}})
    with pytest.raises(ModelError, match="unknown network"):
        load_network(bad, kind=KIND, versions=(1,), what="test network")
    with pytest.raises(ModelError, match="extra array names"):
        save_network(bad, net, kind=KIND, version=1, extra_arrays={"net.x": np.ones(1)})
    torch.save(net.state_dict(), tmp_path / "net.pt")  # what a user might bring: a pickle, never loaded
    with pytest.raises(ModelError, match="pickles are never loaded"):
        load_network(tmp_path / "net.pt", kind=KIND, versions=(1,), what="test network")


def test_tile_placement_and_blend_weights_sum_to_one():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(41, 40, 10) == [0, 1]
    for length, tile, overlap in [(100, 40, 10), (257, 64, 24), (33, 32, 8)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    inputs = np.random.default_rng(0).normal(size=(1, 150, 170))
    out = tiled_apply(lambda t: t * 2.0, inputs, 1, tile=48, overlap=16, batch=3, dtype=np.float64)
    np.testing.assert_allclose(out, inputs * 2.0, rtol=1e-12, atol=1e-12)  # weights sum to one everywhere
    window = blend_window((48, 48), (0, 40), (150, 170), 16)
    assert window[0, 0] < 0.1 and window[20, 47] < 0.1 and window[0, 20] == 1.0  # ramps only between tiles


def test_tiled_inference_equals_whole_image_within_tolerance():
    net = _net(5)
    train(net, _toy_batch, _toy_loss, TrainingConfig(steps=150, learning_rate=1e-2, warmup=5, checkpoint_every=0))
    x = np.random.default_rng(2).normal(size=(2, 150, 170)).astype(np.float32)
    whole = _run(net, x[None])[0]
    tiled = tiled_apply(lambda t: _run(net, t), x, 1, tile=96, overlap=48)
    spread = float(np.std(whole))
    assert spread > 0.5  # a network whose output has structure, not a constant
    difference = np.abs(tiled - whole)
    # stated tolerance (README): the largest difference within 5 % of the output's spread, the mean within 0.1 %
    assert difference.max() < 0.05 * spread and difference.mean() < 1e-3 * spread
    with pytest.raises(InputError, match="overlap"):
        tiled_apply(lambda t: t, x, 2, tile=32, overlap=32)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(Exception, match="unknown device|not supported"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="no CUDA"):
            resolve_device("cuda")


def test_learning_rate_schedule():
    config = TrainingConfig(steps=100, learning_rate=1.0, warmup=10, final_fraction=0.1)
    rates = [learning_rate_at(s, config) for s in range(100)]
    assert rates[0] == pytest.approx(0.01 + 0.99 / 10) and rates[9] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.1, abs=1e-3) and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    with pytest.raises(InputError, match="steps"):
        TrainingConfig(steps=0)
    with pytest.raises(InputError, match="learning_rate"):
        TrainingConfig(steps=5, learning_rate=-1.0)


def _toy_batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([7, step])
    x = rng.normal(size=(4, 2, 16, 16)).astype(np.float32)
    return {"x": x, "y": (x[:, :1] * 0.5 + x[:, 1:] ** 2).astype(np.float32)}


def _toy_loss(module, batch):
    loss = ((module(batch["x"]) - batch["y"]) ** 2).mean()
    return loss, {"mse": float(loss.detach())}


def test_training_reduces_the_loss_and_records_history():
    net = _net(1)
    config = TrainingConfig(steps=60, learning_rate=5e-3, warmup=5, checkpoint_every=0, validate_every=20)
    held_out = {k: torch.from_numpy(v) for k, v in _toy_batch(999).items()}
    with torch.no_grad():
        before = float(_toy_loss(net, held_out)[0])
    result = train(net, _toy_batch, _toy_loss, config, log_every=10,
                   validate=lambda m: {"mse": float(_toy_loss(m, held_out)[0])})
    assert result.steps == 60 and result.resumed_from == 0
    after = result.history[-1]["validation"]["mse"]
    assert after < 0.7 * before
    assert [h["step"] for h in result.history] == [10, 20, 30, 40, 50, 60]
    assert sum("validation" in h for h in result.history) == 3


class _Stop(Exception):
    pass


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path):
    config = TrainingConfig(steps=30, learning_rate=5e-3, warmup=5, checkpoint_every=10)
    reference = _net(2)
    train(reference, _toy_batch, _toy_loss, config)

    def failing(step: int):
        if step == 17:
            raise _Stop
        return _toy_batch(step)

    checkpoint = tmp_path / "ckpt.safetensors"
    with pytest.raises(_Stop):
        train(_net(2), failing, _toy_loss, config, checkpoint=checkpoint)
    saved = read_model_file(checkpoint, kind="fastflow-training-checkpoint", versions=(1,)).card
    assert saved["step"] == 10 and saved["seconds"] > 0
    resumed = _net(2)
    result = train(resumed, _toy_batch, _toy_loss, config, checkpoint=checkpoint)
    assert result.resumed_from == 10 and result.steps == 30
    assert result.seconds > saved["seconds"]                    # the time of the killed part is counted
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ModelError, match="another training configuration"):
        train(_net(2), _toy_batch, _toy_loss, TrainingConfig(steps=30, learning_rate=1e-3), checkpoint=checkpoint)
    with pytest.raises(ModelError, match="another network"):
        train(_net(2, base=8), _toy_batch, _toy_loss, config, checkpoint=checkpoint)


_KILLED_TRAINING = textwrap.dedent("""
    import sys, time
    import numpy as np, torch
    sys.path.insert(0, {tests!r})
    from test_nn import _net, _toy_batch, _toy_loss
    from fastflow.nn.training import TrainingConfig, train
    torch.set_num_threads(1)
    def slow(step):
        time.sleep(0.05)
        return _toy_batch(step)
    train(_net(4), slow, _toy_loss, TrainingConfig(steps=400, learning_rate=5e-3, warmup=5, checkpoint_every=5),
          checkpoint=sys.argv[1])
""")


def test_a_killed_training_process_resumes_from_its_checkpoint(tmp_path):
    checkpoint = tmp_path / "ckpt.safetensors"
    script = tmp_path / "train.py"
    script.write_text(_KILLED_TRAINING.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script), str(checkpoint)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        step = 0
        while time.time() < deadline and step < 15:
            time.sleep(0.2)
            if checkpoint.exists():
                try:
                    step = read_model_file(checkpoint, kind="fastflow-training-checkpoint", versions=(1,)).card["step"]
                except ModelError:
                    pass
        assert proc.poll() is None, "the training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = read_model_file(checkpoint, kind="fastflow-training-checkpoint", versions=(1,))  # never half-written
    killed_at = saved.card["step"]
    assert 15 <= killed_at < 400 and killed_at % 5 == 0
    torch.set_num_threads(1)
    short = TrainingConfig(steps=400, learning_rate=5e-3, warmup=5, checkpoint_every=5)
    resumed = _net(4)
    result = train(resumed, _toy_batch, _toy_loss, short, checkpoint=checkpoint)
    assert result.resumed_from == killed_at and result.steps == 400
    reference = _net(4)
    train(reference, _toy_batch, _toy_loss, short)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert content_hash({k: v.numpy() for k, v in resumed.state_dict().items()}) == \
        content_hash({k: v.numpy() for k, v in reference.state_dict().items()})


_NO_TORCH = textwrap.dedent("""
    import sys
    class _NotInstalled:                      # behaves as if torch were not installed at all
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NotInstalled())
""")

_WITHOUT_TORCH = _NO_TORCH + textwrap.dedent("""
    import numpy as np
    from fastflow.grid import ScanGrid
    from fastflow.recon import reconstruct, available_methods
    from fastflow.nn import torch_available, TorchMissingError
    assert not torch_available()
    grid = ScanGrid((16, 16))
    for method in ("idw", "linear", "biharmonic"):
        image = reconstruct(grid, [[0, 0], [15, 15], [0, 15]], [1.0, 2.0, 3.0], method=method)
        assert image.shape == (16, 16)
    try:
        reconstruct(grid, [[0, 0], [15, 15]], [1.0, 2.0], method="learned")
    except TorchMissingError as exc:
        print("ERROR:", exc)
    else:
        raise SystemExit("learned worked without torch")
    from fastflow.erd import ERDModel
    from fastflow.sampling.slads import default_model_path
    ERDModel.load(default_model_path())      # every model file is read without torch
    assert "torch" not in sys.modules
""")


def test_without_torch_idw_works_and_learned_says_what_to_install():
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    assert message.startswith("ERROR: the 'learned' reconstruction needs PyTorch")
    assert "pip install 'fastflow[torch]'" in message and "\n" not in message


def test_without_torch_the_command_refuses_learned_in_one_line(tmp_path):
    script = _NO_TORCH + textwrap.dedent("""
        from fastflow.cli import main
        sys.argv = ["fastflow", "scan", "--sample", "coins", "--recon", "learned", "--out", sys.argv[1]]
        main()
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().startswith("error: the 'learned' reconstruction needs PyTorch")
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
