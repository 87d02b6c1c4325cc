"""Tests of the ERD regressor: agreement with scikit-learn, the kernel map, and the safe model file."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.neural_network import MLPRegressor

from fastflow.erd import ERDModel, ModelError, feature_statistics, make_rbf_map
from fastflow.erd.model import convert_npz_model
from fastflow.modelfile import content_hash, write_model_file
from fastflow.errors import FastflowError, InputError

TARGET_SCALE = 40.0


def _features(n: int, seed: int) -> np.ndarray:
    """Positive features on roughly the ranges the six SLADS features take."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(n, 6))) * np.array([5.0, 12.0, 2.0, 60.0, 4.0, 4.0]) + [0, 0, 1, 10, 0, 0]


@pytest.fixture(scope="module")
def fitted() -> tuple[ERDModel, MLPRegressor, np.ndarray]:
    """A small model fitted with scikit-learn on transformed random features, and held-out features."""
    x = _features(400, seed=1)
    mean, scale = feature_statistics(x)
    weights, offset = make_rbf_map(seed=3)
    z = math.sqrt(2 / 50) * np.cos((x - mean) / scale @ weights + offset)
    y = (x[:, 0] + 0.1 * x[:, 3]) / TARGET_SCALE
    mlp = MLPRegressor(hidden_layer_sizes=(50, 5), activation="relu", max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(z, y)
    card = {"c": 2, "training_images": ["cameraman"], "coverages": [0.01, 0.1], "n_samples": 400,
            "validation": {"r2": 0.5}, "created": "2025-01-01T00:00:00Z"}
    model = ERDModel.from_sklearn(mlp, mean, scale, weights, offset, TARGET_SCALE, card)
    return model, mlp, _features(300, seed=2)


@pytest.fixture
def saved(fitted, tmp_path: Path) -> Path:
    model = fitted[0]
    return model.save(tmp_path / "erd.safetensors")


def _contents(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(path, framework="np") as fh:
        return {key: fh.get_tensor(key) for key in fh.keys()}, fh.metadata()


def _rewrite(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str], *, rehash: bool = True) -> None:
    """Write ``arrays`` as a model file with ``metadata``, the card's hash updated unless ``rehash`` is off."""
    card = json.loads(metadata["fastflow.card"])
    if rehash:
        card["content_hash"] = content_hash(arrays)
    save_file(arrays, path, metadata={**metadata, "fastflow.card": json.dumps(card)})


def _refused(path: Path, match: str | None = None) -> str:
    with pytest.raises(ModelError, match=match) as info:
        ERDModel.load(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ prediction


def test_predict_float64_equals_sklearn(fitted):
    model, mlp, x = fitted
    expected = mlp.predict(model.transform(x)) * TARGET_SCALE
    assert np.ptp(expected) > 0
    np.testing.assert_allclose(model.predict(x, dtype=np.float64), expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(model.predict(x, dtype=np.float64, chunk_size=7), expected, rtol=1e-10, atol=0)


def test_predict_default_float32_is_close(fitted):
    model, mlp, x = fitted
    expected = mlp.predict(model.transform(x)) * TARGET_SCALE
    got = model.predict(x)
    assert got.dtype == np.float64 and got.shape == (len(x),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_transform_matches_hand_computation():
    mean = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    scale = np.array([1.0, 2.0, 4.0, 0.5, 1.0, 10.0])
    weights = np.arange(12, dtype=float).reshape(6, 2) / 10
    offset = np.array([0.5, 1.5])
    model = ERDModel(mean, scale, weights, offset, [(np.ones((2, 1)), np.zeros(1))], 1.0, {})
    x = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 4.0, 7.0, 4.5, 4.0, 16.0]])
    # row 0 standardises to zeros; row 1 to (1, 1, 1, 1, -1, 1)
    u1 = [1.0, 1.0, 1.0, 1.0, -1.0, 1.0]
    col0 = sum(u * w for u, w in zip(u1, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    col1 = sum(u * w for u, w in zip(u1, [0.1, 0.3, 0.5, 0.7, 0.9, 1.1]))
    expected = np.array([[math.cos(0.5), math.cos(1.5)], [math.cos(col0 + 0.5), math.cos(col1 + 1.5)]])
    np.testing.assert_allclose(model.transform(x), expected, rtol=1e-14)  # sqrt(2 / D) = 1 for D = 2
    np.testing.assert_allclose(model.predict(x, dtype=np.float64), expected.sum(axis=1), rtol=1e-14)


def test_predict_relu_and_target_scale():
    # one hidden unit that is negative for every input: ReLU zeroes it and the output is bias * scale
    layers = [(np.zeros((3, 1)), np.array([-1.0])), (np.array([[5.0]]), np.array([0.25]))]
    model = ERDModel(np.zeros(6), np.ones(6), np.ones((6, 3)), np.zeros(3), layers, 8.0, {})
    np.testing.assert_array_equal(model.predict(np.ones((4, 6))), np.full(4, 2.0))


def test_predict_rejects_bad_features(fitted):
    model = fitted[0]
    for bad in (np.ones((3, 5)), np.ones(6), np.array([["a"] * 6])):
        with pytest.raises(InputError):
            model.predict(bad)
    with pytest.raises(InputError, match="dtype"):
        model.predict(np.ones((2, 6)), dtype=np.int64)
    assert model.predict(np.empty((0, 6))).shape == (0,)


def test_from_sklearn_refuses_wrong_networks(fitted):
    model, mlp, _ = fitted
    args = (model.feature_mean, model.feature_scale, model.rbf_weights, model.rbf_offset, 1.0)
    with pytest.raises(ModelError, match="not fitted"):
        ERDModel.from_sklearn(MLPRegressor(), *args)
    tanh = MLPRegressor(hidden_layer_sizes=(4,), activation="tanh", max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        tanh.fit(np.zeros((10, 50)), np.zeros(10))
    with pytest.raises(ModelError, match="relu"):
        ERDModel.from_sklearn(tanh, *args)
    with pytest.raises(ModelError, match="rbf_offset"):
        ERDModel.from_sklearn(mlp, *args[:3], np.zeros(49), 1.0)


def test_model_properties(fitted):
    model = fitted[0]
    assert (model.n_features, model.n_components, model.hidden_sizes) == (6, 50, (50, 5))
    assert model.n_parameters == 50 * 50 + 50 + 50 * 5 + 5 + 5 + 1
    text = model.describe()
    assert model.content_hash()[:12] in text
    for piece in ("c: 2", "cameraman", "0.01, 0.1", "samples: 400", "r2=0.5"):
        assert piece in text


def test_constructor_validates():
    good = dict(feature_mean=np.zeros(6), feature_scale=np.ones(6), rbf_weights=np.ones((6, 2)),
                rbf_offset=np.zeros(2), layers=[(np.ones((2, 1)), np.zeros(1))], target_scale=1.0, card={})
    ERDModel(**good)
    for change, match in [
        ({"feature_scale": np.zeros(6)}, "feature_scale"),
        ({"feature_mean": np.zeros(5)}, "feature_mean"),
        ({"layers": [(np.ones((2, 2)), np.zeros(2))]}, "1 output"),
        ({"layers": [(np.ones((3, 1)), np.zeros(1))]}, "layer0_weights"),
        ({"rbf_weights": np.full((6, 2), np.nan)}, "NaN"),
        ({"target_scale": 0.0}, "target_scale"),
        ({"card": {"x": float("nan")}}, "JSON"),
        ({"card": ["not", "a", "dict"]}, "JSON object"),
    ]:
        with pytest.raises(ModelError, match=match):
            ERDModel(**{**good, **change})


# ------------------------------------------------------------------------------------------ kernel map


def test_make_rbf_map_deterministic_per_seed():
    w1, b1 = make_rbf_map(seed=5)
    w2, b2 = make_rbf_map(seed=5)
    w3, _ = make_rbf_map(seed=6)
    assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
    assert not np.array_equal(w1, w3)
    assert w1.shape == (6, 50) and b1.shape == (50,)
    assert np.all((b1 >= 0) & (b1 < 2 * math.pi))
    wide, _ = make_rbf_map(n_components=20_000, gamma=0.5, seed=0)
    assert abs(wide.std() - 1.0) < 0.02  # sqrt(2 * gamma) * N(0, 1)
    with pytest.raises(InputError):
        make_rbf_map(gamma=-1.0)


def test_feature_statistics_handles_constant_columns():
    x = np.column_stack([np.arange(4.0), np.full(4, 7.0), np.ones((4, 4))])
    mean, scale = feature_statistics(x)
    np.testing.assert_allclose(mean[:2], [1.5, 7.0])
    np.testing.assert_allclose(scale[:2], [np.std(np.arange(4.0)), 1.0])


# ------------------------------------------------------------------------------------------ files


def test_save_load_round_trip(fitted, saved):
    model, _, x = fitted
    loaded = ERDModel.load(saved)
    np.testing.assert_array_equal(loaded.predict(x, dtype=np.float64), model.predict(x, dtype=np.float64))
    assert loaded.content_hash() == model.content_hash()
    assert loaded.card == {**model.card, "content_hash": model.content_hash()}
    assert "content_hash" not in model.card  # saving does not change the model in memory
    assert loaded.describe() == model.describe()
    arrays, metadata = _contents(saved)
    assert metadata["fastflow.format"] == "fastflow-erd-model" and metadata["fastflow.format_version"] == "2"
    assert json.loads(metadata["fastflow.card"])["content_hash"] == model.content_hash()
    assert arrays["target_scale"].shape == () and arrays["layer0_weights"].dtype == np.float64


def test_save_writes_exact_name_and_replaces(fitted, tmp_path):
    model = fitted[0]
    path = tmp_path / "model.erd"
    model.save(path)
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.erd"]
    assert ERDModel.load(path).content_hash() == model.content_hash()


def test_content_hash_ignores_card_and_sees_weights(fitted):
    model = fitted[0]
    renamed = ERDModel(model.feature_mean, model.feature_scale, model.rbf_weights, model.rbf_offset,
                       model.layers, model.target_scale, {"other": "card"})
    assert renamed.content_hash() == model.content_hash()
    rescaled = ERDModel(model.feature_mean, model.feature_scale, model.rbf_weights, model.rbf_offset,
                        model.layers, model.target_scale * 2, model.card)
    assert rescaled.content_hash() != model.content_hash()


def test_refuses_missing_array(saved, tmp_path):
    arrays, metadata = _contents(saved)
    del arrays["rbf_offset"]
    path = tmp_path / "partial.safetensors"
    _rewrite(path, arrays, metadata)
    assert _refused(path) == f"{path} is not a valid ERD model: missing array 'rbf_offset'"


def test_refuses_missing_layer_and_extra_array(saved, tmp_path):
    arrays, metadata = _contents(saved)
    path = tmp_path / "layers.safetensors"
    _rewrite(path, {k: v for k, v in arrays.items() if k != "layer1_bias"}, metadata)
    _refused(path, "layer1_bias")
    _rewrite(path, {**arrays, "extra": np.zeros(2)}, metadata)
    _refused(path, "unexpected array 'extra'")


def test_refuses_wrong_shape(saved, tmp_path):
    arrays, metadata = _contents(saved)
    arrays["layer1_weights"] = np.ascontiguousarray(arrays["layer1_weights"][:, :4])
    path = tmp_path / "shape.safetensors"
    _rewrite(path, arrays, metadata)
    _refused(path, "layer1_bias must have shape")
    arrays, _ = _contents(saved)
    _rewrite(path, {**arrays, "target_scale": np.ones(2)}, metadata)
    _refused(path, "target_scale must be a scalar")


def test_refuses_nonpositive_feature_scale(saved, tmp_path):
    arrays, metadata = _contents(saved)
    arrays["feature_scale"][2] = 0.0
    path = tmp_path / "scale.safetensors"
    _rewrite(path, arrays, metadata)
    _refused(path, "feature_scale must be > 0")


def test_refuses_edited_weights(saved, tmp_path):
    arrays, metadata = _contents(saved)
    arrays["layer2_weights"][0, 0] += 1e-9
    path = tmp_path / "edited.safetensors"
    _rewrite(path, arrays, metadata, rehash=False)
    _refused(path, "integrity check")


def test_refuses_another_kind_of_model(tmp_path):
    path = write_model_file(tmp_path / "net.safetensors", {"w": np.ones(3)}, kind="fastflow-inpainting-model",
                            version=1)
    _refused(path, "'fastflow-inpainting-model' file, not a ERD model")


def test_converts_a_format_1_npz_model(fitted, tmp_path):
    model, _, x = fitted
    old = tmp_path / "old.npz"
    arrays = dict(model.named_arrays())
    np.savez(old, format=np.array("fastflow-erd-model"), format_version=np.array(1),
             card_json=np.array(json.dumps({**model.card, "content_hash": "0" * 64})), **arrays)
    _refused(old, "convert-model")
    converted = convert_npz_model(old, tmp_path / "new.safetensors")
    loaded = ERDModel.load(tmp_path / "new.safetensors")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.content_hash() == converted.content_hash() == model.content_hash()
    assert loaded.card["converted_from"] == {"file": "old.npz", "format_version": 1}
    np.savez(old, x=np.zeros(3))
    with pytest.raises(ModelError, match="not a fastflow ERD model"):
        convert_npz_model(old, tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()


def test_model_error_is_fastflow_error():
    assert issubclass(ModelError, FastflowError)
