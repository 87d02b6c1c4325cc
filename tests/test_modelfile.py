"""Tests of the one model file format (safetensors + card): round trip and refusal of bad or foreign files."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from fastflow.errors import FastflowError
from fastflow.modelfile import (
    ModelError,
    content_hash,
    peek_kind,
    read_model_file,
    write_card,
    write_model_file,
)

KIND = "fastflow-test-model"


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(4), "n": np.array(7, dtype=np.int64),
            "flag": np.array([True, False])}


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return write_model_file(tmp_path / "m.safetensors", _arrays(), kind=KIND, version=3, card={"epochs": 2})


def _read(path: Path, **kwargs):
    return read_model_file(path, kind=KIND, versions=kwargs.pop("versions", (3,)), **kwargs)


def _refused(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(ModelError, match=match) as info:
        _read(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_round_trip_keeps_dtypes_shapes_and_card(saved):
    model = _read(saved)
    original = _arrays()
    assert sorted(model.arrays) == sorted(original)
    for name, array in original.items():
        assert model.arrays[name].dtype == array.dtype and model.arrays[name].shape == array.shape
        np.testing.assert_array_equal(model.arrays[name], array)
    assert model.card == {"epochs": 2, "content_hash": content_hash(original)}
    assert model.kind == KIND and model.version == 3 and peek_kind(saved) == KIND
    assert oct(saved.stat().st_mode & 0o777) != oct(0o600)  # an ordinary file, not mkstemp's private one


def test_content_hash_sees_names_values_dtypes_and_order_free():
    a = _arrays()
    assert content_hash(a) == content_hash(dict(reversed(list(a.items()))))
    assert content_hash({**a, "w": a["w"].astype(np.float64)}) != content_hash(a)
    assert content_hash({**a, "b": a["b"] + 1e-12}) != content_hash(a)
    assert content_hash({"v": a["w"], **{k: v for k, v in a.items() if k != "w"}}) != content_hash(a)


def test_write_refuses_nan_objects_and_bad_cards(tmp_path):
    with pytest.raises(ModelError, match="NaN"):
        write_model_file(tmp_path / "x", {"w": np.array([np.nan])}, kind=KIND, version=1)
    with pytest.raises(ModelError, match="numbers"):
        write_model_file(tmp_path / "x", {"w": np.array(["a"])}, kind=KIND, version=1)
    with pytest.raises(ModelError, match="JSON"):
        write_model_file(tmp_path / "x", {"w": np.ones(1)}, kind=KIND, version=1, card={"f": object()})
    assert not list(tmp_path.iterdir())


def test_write_card_is_readable_json(tmp_path, saved):
    path = write_card(tmp_path / "card.json", _read(saved).card)
    assert json.loads(path.read_text())["epochs"] == 2


def test_refuses_missing_empty_directory_and_random_files(tmp_path):
    _refused(tmp_path / "absent.safetensors", "no such file")
    (tmp_path / "dir.safetensors").mkdir()
    _refused(tmp_path / "dir.safetensors", "not a regular file")
    (tmp_path / "empty").write_bytes(b"")
    _refused(tmp_path / "empty", "empty")
    (tmp_path / "noise").write_bytes(np.random.default_rng(0).bytes(4000))
    _refused(tmp_path / "noise", "not a safetensors file")
    (tmp_path / "text").write_text("this is not a model, just a long enough line of text\n")
    _refused(tmp_path / "text", "not a safetensors file")
    (tmp_path / "tiny").write_bytes(b"abc")
    _refused(tmp_path / "tiny", "truncated")


class _Tripwire:
    """Unpickling this object records that code ran during a load."""

    ran = False

    def __reduce__(self):
        return (_trip, ())


def _trip():
    _Tripwire.ran = True
    return "tripped"


def test_refuses_pickles_npz_and_torch_zip_without_running_code(tmp_path):
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"w": _Tripwire()}))
    _refused(tmp_path / "m.pkl", "pickle")
    np.savez(tmp_path / "m.npz", w=np.ones(3))
    _refused(tmp_path / "m.npz", "zip archive")
    with zipfile.ZipFile(tmp_path / "m.pt", "w") as archive:  # the layout of a torch.save file
        archive.writestr("archive/data.pkl", pickle.dumps(_Tripwire()))
    _refused(tmp_path / "m.pt", "pickles are never loaded")
    np.save(tmp_path / "m.npy", np.ones(3))
    _refused(tmp_path / "m.npy", ".npy")
    assert not _Tripwire.ran


def test_refuses_foreign_safetensors_and_other_kinds(tmp_path):
    save_file({"encoder.weight": np.ones((2, 2), dtype=np.float32)}, tmp_path / "hf.safetensors")
    _refused(tmp_path / "hf.safetensors", "another program's weights.*encoder.weight")
    save_file({"w": np.ones(2)}, tmp_path / "meta.safetensors", metadata={"format": "pt"})
    _refused(tmp_path / "meta.safetensors", "without fastflow's format entry")
    write_model_file(tmp_path / "other.safetensors", {"w": np.ones(2)}, kind="fastflow-erd-model", version=2)
    _refused(tmp_path / "other.safetensors", "'fastflow-erd-model' file, not a fastflow-test-model")


def test_refuses_other_versions(saved):
    _refused(saved, "version 3; this fastflow reads version\\(s\\) 1, 2 \\(upgrade fastflow\\)", versions=(1, 2))
    _refused(saved, "version 3; this fastflow reads version\\(s\\) 4$", versions=(4,))


@pytest.mark.parametrize("keep", [0.95, 0.6, 0.2, 0.01])
def test_refuses_truncated_files(saved, tmp_path, keep):
    data = saved.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: max(9, int(len(data) * keep))])
    _refused(path, "not a safetensors file|damaged or truncated|truncated")


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="np") as fh:
        return fh.metadata()


def test_refuses_edited_arrays_and_bad_cards(saved, tmp_path):
    metadata = _metadata(saved)
    arrays = _arrays()
    path = tmp_path / "edited.safetensors"
    save_file({**arrays, "b": arrays["b"] + 1}, path, metadata=metadata)
    _refused(path, "integrity check")
    save_file({**arrays, "extra": np.ones(1)}, path, metadata=metadata)
    _refused(path, "integrity check")
    card = json.loads(metadata["fastflow.card"])
    del card["content_hash"]
    save_file(arrays, path, metadata={**metadata, "fastflow.card": json.dumps(card)})
    _refused(path, "no content_hash")
    save_file(arrays, path, metadata={**metadata, "fastflow.card": "{not json"})
    _refused(path, "not valid JSON")
    save_file(arrays, path, metadata={**metadata, "fastflow.card": "[1, 2]"})
    _refused(path, "JSON object")
    save_file(arrays, path, metadata={**metadata, "fastflow.format_version": "three"})
    _refused(path, "format version 'three'")


def test_refuses_nan_arrays_and_unsupported_dtypes(saved, tmp_path):
    metadata = _metadata(saved)
    bad = {**_arrays(), "b": np.array([np.nan, 1.0])}
    card = json.loads(metadata["fastflow.card"])
    card["content_hash"] = content_hash(bad)
    path = tmp_path / "nan.safetensors"
    save_file(bad, path, metadata={**metadata, "fastflow.card": json.dumps(card)})
    _refused(path, "NaN")
    header = json.dumps({"__metadata__": metadata, "b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}})
    raw = header.encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 4)  # a valid file of a dtype numpy lacks
    _refused(path, "unsupported dtype 'BF16'")


def test_model_error_is_a_fastflow_error():
    assert issubclass(ModelError, FastflowError)
