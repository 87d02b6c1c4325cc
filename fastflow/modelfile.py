"""One file format for every fastflow model: safetensors arrays plus a JSON model card.

A model file is a `safetensors <https://github.com/huggingface/safetensors>`_ file: a little-endian
header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw bytes. It
holds numbers and text only, so reading one can never run code (unlike pickles, ``torch.save`` files or
joblib dumps). The same reader serves the ERD regressor (numpy only) and the neural networks of
:mod:`fastflow.nn` (whose tensors are converted from and to numpy arrays), so torch is not needed to
read, check or describe any model.

The header's string metadata carries three entries:

``fastflow.format``
    What kind of model this is, e.g. ``"fastflow-erd-model"`` or ``"fastflow-inpainting-model"``.
``fastflow.format_version``
    An integer (as text) that the reader of that kind checks.
``fastflow.card``
    The model card as a JSON object; its ``content_hash`` is :func:`content_hash` of the arrays.

:func:`read_model_file` validates the file (regular file, size, a safetensors header, the format entry,
the version, plain numeric dtypes, finite floats, the card and its hash) and raises :class:`ModelError`
with the file name and the problem on one line.

Examples
--------
>>> import tempfile, numpy as np
>>> path = tempfile.mkdtemp() + "/m.safetensors"
>>> _ = write_model_file(path, {"w": np.ones((2, 3))}, kind="demo", version=1, card={"note": "x"})
>>> f = read_model_file(path, kind="demo", versions=(1,))
>>> f.arrays["w"].shape, f.card["note"], f.card["content_hash"] == content_hash(f.arrays)
((2, 3), 'x', True)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import FastflowError

__all__ = [
    "MAX_FILE_BYTES",
    "ModelError",
    "ModelFile",
    "card_json",
    "content_hash",
    "peek_kind",
    "read_model_file",
    "write_card",
    "write_model_file",
]

MAX_FILE_BYTES = 512 * 2**20
"""Largest model file :func:`read_model_file` reads; fastflow's models are kilobytes to a few megabytes,
so this only stops hostile or mistaken files from exhausting memory."""
SUFFIX = ".safetensors"
_MAX_HEADER_BYTES = 16 * 2**20
_KEY_FORMAT = "fastflow.format"
_KEY_VERSION = "fastflow.format_version"
_KEY_CARD = "fastflow.card"
_ALLOWED_KINDS = "fiub"  # float, signed/unsigned integer, bool: nothing that can hold an object
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_MAGIC = b"\x80"


class ModelError(FastflowError):
    """A model is invalid, or a model file cannot be read, is not a fastflow model, or fails validation."""


@dataclass(frozen=True)
class ModelFile:
    """The validated content of a model file.

    Attributes
    ----------
    kind : str
        The ``fastflow.format`` entry.
    version : int
        The format version.
    arrays : dict of str to numpy.ndarray
        Every tensor, as a numpy array (copied out of the file).
    card : dict
        The model card, with ``content_hash``.
    """

    kind: str
    version: int
    arrays: dict[str, np.ndarray]
    card: dict[str, Any]


def content_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the arrays: each name, dtype, shape and little-endian bytes, in name order.

    The card is not hashed, so two models with equal arrays have equal hashes whatever their cards say;
    the hash identifies the function the model computes.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        Numeric arrays.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    digest = hashlib.sha256(b"fastflow-model-arrays/1\n")
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        canonical = np.array(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
        digest.update(f"{name}|{canonical.dtype.str}|{canonical.shape}\n".encode())
        digest.update(canonical.tobytes())
    return digest.hexdigest()


def card_json(card: Mapping[str, Any]) -> str:
    """The card as strict JSON text (sorted keys, no NaN), or a :class:`ModelError`."""
    if not isinstance(card, Mapping):
        raise ModelError(f"the model card must be a JSON object (dict); got {type(card).__name__}")
    try:
        return json.dumps(dict(card), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the model card is not JSON-serialisable: {exc}") from None


def write_card(path: str | os.PathLike[str], card: Mapping[str, Any]) -> Path:
    """Write a model card as indented JSON (the human-readable copy beside a model file)."""
    text = json.dumps(json.loads(card_json(card)), indent=2, sort_keys=True) + "\n"
    return _atomic_write(Path(path), text.encode(), what="model card")


def write_model_file(
    path: str | os.PathLike[str],
    arrays: Mapping[str, Any],
    *,
    kind: str,
    version: int,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write arrays and a card as a fastflow model file (safetensors), atomically.

    The file goes to a temporary name in the same folder and is renamed, so an existing model is never
    left half-written. The card written carries ``content_hash``; the mapping passed in is not changed.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; ``.safetensors`` is the conventional suffix (none is added).
    arrays : mapping of str to array_like
        Numeric arrays (float, integer or bool), any shape; 0-d arrays are allowed.
    kind : str
        The model kind (``fastflow.format``).
    version : int
        The format version of that kind.
    card : mapping, optional
        JSON-serialisable model card.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ModelError
        If an array is not numeric or not finite, the card is not JSON, or the file cannot be written.
    """
    from safetensors.numpy import save  # small, pure data library: imported where used

    checked: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if not isinstance(name, str) or not name:
            raise ModelError(f"array names must be non-empty strings; got {name!r}")
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise ModelError(f"array {name!r} must hold numbers; got dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ModelError(f"array {name!r} contains NaN or infinite values")
        checked[name] = np.array(array, dtype=array.dtype.newbyteorder("<"), order="C")
    full_card = dict(card or {})
    full_card["content_hash"] = content_hash(checked)
    metadata = {_KEY_FORMAT: str(kind), _KEY_VERSION: str(int(version)), _KEY_CARD: card_json(full_card)}
    try:
        data = save(checked, metadata=metadata)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(f"cannot encode model {os.fspath(path)}: {exc}") from None
    return _atomic_write(Path(path), data, what="model")


def _atomic_write(target: Path, data: bytes, what: str) -> Path:
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes the file private; a model is an ordinary file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise ModelError(f"cannot write {what} {os.fspath(target)}: {exc.strerror or exc}") from exc
    return target


def peek_kind(path: str | os.PathLike[str]) -> str:
    """The ``fastflow.format`` entry of a model file, after the checks of the header only.

    Raises
    ------
    ModelError
        If the file is missing, not a safetensors file, or not a fastflow model.
    """
    name = os.fspath(path)
    header = _read_header(name)
    return _metadata_entry(name, header, _KEY_FORMAT)


def read_model_file(
    path: str | os.PathLike[str], *, kind: str, versions: Collection[int], what: str | None = None
) -> ModelFile:
    """Read and validate a model file of one kind.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    kind : str
        The expected ``fastflow.format``.
    versions : collection of int
        The format versions this reader understands.
    what : str, optional
        How to name the model in messages (default: ``kind``).

    Returns
    -------
    ModelFile

    Raises
    ------
    ModelError
        One line naming the file and the problem: missing or unreadable, too large, an ``.npz`` / pickle /
        other non-safetensors file, another program's safetensors file, another kind of fastflow model, an
        unsupported version, a non-numeric or non-finite array, an invalid card, or arrays that do not
        match the card's ``content_hash`` (the file was edited or damaged).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    name = os.fspath(path)
    label = what or kind
    header = _read_header(name)
    found = _metadata_entry(name, header, _KEY_FORMAT, label)
    if found != kind:
        raise ModelError(f"{name} is a fastflow {found!r} file, not a {label} ({kind!r})")
    version_text = _metadata_entry(name, header, _KEY_VERSION, label)
    try:
        version = int(version_text)
    except ValueError:
        raise ModelError(f"{name} is not a valid {label}: format version {version_text!r}") from None
    if version not in versions:
        newest = max(versions)
        raise ModelError(
            f"{name} has {label} format version {version}; this fastflow reads version(s) "
            f"{', '.join(str(v) for v in sorted(versions))}" + (" (upgrade fastflow)" if version > newest else "")
        )
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in _SAFETENSORS_DTYPES:
            raise ModelError(f"{name} is not a valid {label}: array {key!r} has unsupported dtype {dtype!r}")
    try:
        with open(name, "rb") as fh:
            arrays = {key: np.array(value) for key, value in load(fh.read()).items()}
    except (SafetensorError, ValueError, OSError) as exc:
        raise ModelError(f"{name} is not a valid {label}: damaged or truncated ({_first_line(exc)})") from None
    for key, array in arrays.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ModelError(f"{name} is not a valid {label}: array {key!r} contains NaN or infinite values")
    card = _parse_card(name, _metadata_entry(name, header, _KEY_CARD, label), label)
    stored = card.get("content_hash")
    if not isinstance(stored, str):
        raise ModelError(f"{name} is not a valid {label}: its card has no content_hash")
    actual = content_hash(arrays)
    if stored != actual:
        raise ModelError(
            f"{name} failed its integrity check: the arrays hash to {actual[:12]}... but the card says "
            f"{stored[:12]}...; the file was modified or damaged, retrain or restore it"
        )
    return ModelFile(kind=kind, version=version, arrays=arrays, card=card)


_SAFETENSORS_DTYPES = {"F16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def _read_header(name: str) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking the file itself; nothing else is read."""
    try:
        if not os.path.exists(name):
            raise ModelError(f"cannot read model {name}: no such file")
        if not os.path.isfile(name):
            raise ModelError(f"cannot read model {name}: it is not a regular file")
        size = os.stat(name).st_size
        with open(name, "rb") as fh:
            head = fh.read(8)
            if size == 0:
                raise ModelError(f"{name} is not a fastflow model: the file is empty")
            if size > MAX_FILE_BYTES:
                raise ModelError(
                    f"{name} is not a fastflow model: the file is {size} bytes, more than the "
                    f"{MAX_FILE_BYTES} a model may have"
                )
            if len(head) < 8:
                raise ModelError(f"{name} is not a fastflow model: the file is truncated ({len(head)} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length < 2 or length > min(_MAX_HEADER_BYTES, size - 8):
                _refuse_other_formats(name, head)
                raise ModelError(f"{name} is not a fastflow model: it is not a safetensors file")
            raw = fh.read(length)
    except OSError as exc:
        raise ModelError(f"cannot read model {name}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelError(f"{name} is not a fastflow model: it is not a safetensors file") from None
    if not isinstance(header, dict):
        raise ModelError(f"{name} is not a fastflow model: it is not a safetensors file")
    return header


def _refuse_other_formats(name: str, head: bytes) -> None:
    """Name the format of a file that is not safetensors, where its first bytes tell."""
    if head.startswith(_ZIP_MAGIC):
        raise ModelError(
            f"{name} is not a fastflow model: it is a zip archive (an .npz, or a torch.save pickle); "
            "fastflow models are .safetensors files, and pickles are never loaded. An ERD model of "
            "fastflow 0.1 (.npz) is converted with `fastflow convert-model OLD.npz NEW.safetensors`"
        )
    if head.startswith(_NPY_MAGIC):
        raise ModelError(f"{name} is not a fastflow model: it is a single .npy array")
    if head.startswith(_PICKLE_MAGIC):
        raise ModelError(f"{name} is not a fastflow model: it is a Python pickle, which fastflow never loads")


def _metadata_entry(name: str, header: Mapping[str, Any], key: str, label: str = "model") -> str:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or _KEY_FORMAT not in metadata:
        found = ", ".join(sorted(k for k in header if k != "__metadata__")[:6]) or "none"
        raise ModelError(
            f"{name} is not a fastflow {label}: a safetensors file without fastflow's format entry "
            f"(another program's weights? arrays: {found})"
        )
    value = metadata.get(key)
    if not isinstance(value, str):
        raise ModelError(f"{name} is not a valid {label}: its header has no {key!r} entry")
    return value


def _parse_card(name: str, text: str, label: str) -> dict[str, Any]:
    try:
        card = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"{name} is not a valid {label}: its card is not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelError(f"{name} is not a valid {label}: its card must be a JSON object")
    return card

