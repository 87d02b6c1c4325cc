"""Training sets for the learned reconstruction: images that ship offline, masks of every scan family.

A training sample is a square crop of a *source*: an image drawn from one of :data:`IMAGE_CLASSES`
(scikit-image's bundled photographs and textures, fastflow's procedural phantoms, and STEM-like atomic
images from :mod:`fastflow.stem`), measured through a mask of one of the families of
:mod:`fastflow.recon.masks` at a coverage drawn log-uniformly from 0.8 % to 55 %, with no noise, Poisson
noise or Gaussian noise. The network's inputs (:func:`fastflow.recon.learned_inputs.network_inputs`) are
computed on the whole source, as they are on a whole scan, and then cropped; the target is the noise-free
source, normalised like the inputs.

Sets are made in *chunks* of sources, each from its own seed (``[seed, split, chunk]``), so chunks are
generated in parallel (``flows/generate_inpainting_data.py`` on Dask) and written to disjoint regions of
one Zarr store; a per-chunk ``done`` flag lets an interrupted generation finish the missing chunks only.

Images and phantom seeds are split three ways: ``train`` and ``validation`` (model selection and the
calibration of the uncertainty) here, and the held-out images of ``benchmarks/inpainting.py`` (astronaut,
coins, cell, ``flakes`` seed 0, and phantom and STEM seeds below 500), which no set uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fastflow import phantoms
from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.recon.base import prepare_measurements
from fastflow.recon.learned_inputs import INPUT_CHANNELS, network_inputs
from fastflow.recon.masks import MASK_FAMILIES, scan_mask
from fastflow.stem import scan_noise, stem_image

__all__ = [
    "GENERIC_IMAGES",
    "IMAGE_CLASSES",
    "NOISE_KINDS",
    "TrainingSet",
    "chunk_samples",
    "create_training_set",
    "draw_source",
    "load_training_set",
    "missing_chunks",
    "write_chunk",
]

IMAGE_CLASSES: dict[str, float] = {
    "generic": 0.28,
    "flakes": 0.12,
    "grains": 0.08,
    "particles": 0.12,
    "lattice": 0.10,
    "stem": 0.30,
}
"""Image classes of the sources and their shares."""

GENERIC_IMAGES: dict[str, tuple[str, ...]] = {
    "train": ("camera", "moon", "text", "page", "brick", "grass", "gravel", "clock", "shepp_logan_phantom",
              "chelsea", "coffee", "rocket", "immunohistochemistry", "horse",
              "hubble_deep_field"),
    "validation": ("retina", "microaneurysms"),
}
"""scikit-image data images (all inside its wheel) of each split; astronaut, coins and cell are held out."""

PHANTOM_SEEDS = {"train": 1000, "validation": 500}
"""Phantom and STEM seeds of a split start here (``[start + chunk, source]``); seeds below 500 are
left to benchmarks and tests."""

NOISE_KINDS = ("none", "poisson", "gaussian")
MASK_SHARES = {family: 1.0 for family in MASK_FAMILIES} | {"fast": 0.6}
COVERAGE_RANGE = (0.008, 0.55)
SPLITS = ("train", "validation")


@cache
def _generic(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float

    image = getattr(skimage.data, name)()
    if image.ndim == 3 and image.shape[-1] == 4:
        image = rgba2rgb(image)
    if image.ndim == 3:
        image = rgb2gray(image)
    return img_as_float(image).astype(np.float64)


def _generic_source(shape: tuple[int, int], rng: np.random.Generator, split: str) -> np.ndarray:
    from skimage.transform import rescale

    base = _generic(str(rng.choice(GENERIC_IMAGES[split])))
    need = max(shape[0] / base.shape[0], shape[1] / base.shape[1])
    factor = float(np.clip(rng.uniform(0.3, 1.0), need, None))
    image = rescale(base, factor, anti_aliasing=factor < 1) if abs(factor - 1) > 1e-3 else base
    y0 = int(rng.integers(0, image.shape[0] - shape[0] + 1))
    x0 = int(rng.integers(0, image.shape[1] - shape[1] + 1))
    image = image[y0 : y0 + shape[0], x0 : x0 + shape[1]]
    if rng.random() < 0.2:
        image = image.max() - image
    image = np.clip(image, 0, None) ** rng.uniform(0.6, 1.6)
    return np.ascontiguousarray(image)


def draw_source(image_class: str, shape: tuple[int, int], rng: np.random.Generator, split: str = "train",
                seed: int = 0) -> np.ndarray:
    """A noise-free source image of one class.

    Parameters
    ----------
    image_class : str
        A name from :data:`IMAGE_CLASSES`.
    shape : tuple of int
        ``(ny, nx)``.
    rng : numpy.random.Generator
        Draws the image's parameters.
    split : str, optional
        ``train`` or ``validation``: which images (generic) or seed range (phantoms) to draw from.
    seed : int, optional
        Seed of a phantom (offset by the split's :data:`PHANTOM_SEEDS` start by the caller).

    Returns
    -------
    numpy.ndarray
        float64 image, values in about ``[0, 1]``.
    """
    if image_class == "generic":
        return _generic_source(shape, rng, split)
    if image_class == "flakes":
        return phantoms.flakes(shape, seed=seed)
    if image_class == "grains":
        return phantoms.grains(shape, seed=seed, grain_size=float(rng.uniform(8, 45)))
    if image_class == "particles":
        return phantoms.particles(shape, seed=seed, density=float(np.exp(rng.uniform(np.log(2e-4), np.log(4e-3)))))
    if image_class == "lattice":
        return phantoms.lattice(shape, spacing=float(rng.uniform(4, 16)), seed=seed)
    if image_class == "stem":
        return stem_image(shape, seed=seed).image
    raise InputError(f"unknown image class {image_class!r}; choose one of {', '.join(IMAGE_CLASSES)}")


NOISE_SHARES = (0.3, 0.4, 0.3)
"""Default shares of :data:`NOISE_KINDS` among the sources."""


def _noisy(clean: np.ndarray, rng: np.random.Generator, image_class: str,
           shares: Sequence[float] = NOISE_SHARES) -> tuple[np.ndarray, int]:
    """What the scan records: one of :data:`NOISE_KINDS`, drawn with ``shares``."""
    kind = int(rng.choice(3, p=np.asarray(shares, dtype=float) / np.sum(shares)))
    drift = float(rng.uniform(0.5, 3.0)) if image_class == "stem" and rng.random() < 0.2 else 0.0
    if kind == 1:
        dose = float(np.exp(rng.uniform(np.log(5.0), np.log(2000.0))))
        return scan_noise(np.clip(clean, 0, None), rng, dose=dose, drift=drift), kind
    if kind == 2:
        sigma = float(np.exp(rng.uniform(np.log(0.003), np.log(0.08)))) * max(float(np.ptp(clean)), 1e-6)
        return scan_noise(np.clip(clean, 0, None), rng, gaussian=sigma, drift=drift), kind
    return clean.copy(), kind


def chunk_samples(
    chunk: int,
    *,
    sources: int,
    crop: int = 128,
    crops_per_source: int = 2,
    seed: int = 0,
    split: str = "train",
    families: Sequence[str] | None = None,
    classes: dict[str, float] | None = None,
    noise_shares: Sequence[float] = NOISE_SHARES,
) -> dict[str, np.ndarray]:
    """The samples of one chunk: ``sources`` sources, ``crops_per_source`` crops of each.

    Parameters
    ----------
    chunk : int
        Chunk number; with ``seed`` and ``split`` it fixes everything drawn.
    sources : int
        Sources in the chunk.
    crop : int, optional
        Side of the square crops (sources are 1-2.5 times larger).
    crops_per_source : int, optional
        Crops taken from each source.
    seed : int, optional
        Seed of the whole set.
    split : str, optional
        ``train`` or ``validation``.
    families : sequence of str, optional
        Mask families to draw from (default: all, FAST less often as it is slow to draw).
    classes : dict of str to float, optional
        Image classes and their shares (default: :data:`IMAGE_CLASSES`).
    noise_shares : sequence of 3 floats, optional
        Shares of no noise, Poisson and Gaussian noise (:data:`NOISE_SHARES`).

    Returns
    -------
    dict of numpy.ndarray
        ``inputs`` ``(n, 3, crop, crop)`` float32, ``target`` ``(n, crop, crop)`` float32, and per crop
        ``image_class``, ``family``, ``noise`` (int8 indices into :data:`IMAGE_CLASSES`,
        :data:`MASK_FAMILIES`, :data:`NOISE_KINDS`), ``coverage``, ``loc``, ``scale``.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    names = list(families) if families is not None else list(MASK_FAMILIES)
    unknown = sorted(set(names) - set(MASK_FAMILIES))
    if unknown:
        raise InputError(f"unknown mask families: {', '.join(unknown)}")
    family_index = {name: i for i, name in enumerate(MASK_FAMILIES)}
    shares = dict(classes) if classes is not None else IMAGE_CLASSES
    if not shares or set(shares) - set(IMAGE_CLASSES):
        raise InputError(f"image classes must be among {', '.join(IMAGE_CLASSES)}; got {sorted(shares)}")
    class_names = list(shares)
    class_p = np.array([shares[c] for c in class_names])
    family_p = np.array([MASK_SHARES[f] for f in names])
    rng = np.random.default_rng([seed, SPLITS.index(split), chunk])
    n = sources * crops_per_source
    out = {
        "inputs": np.empty((n, len(INPUT_CHANNELS), crop, crop), np.float32),
        "target": np.empty((n, crop, crop), np.float32),
        "image_class": np.empty(n, np.int8),
        "family": np.empty(n, np.int8),
        "noise": np.empty(n, np.int8),
        "coverage": np.empty(n, np.float32),
        "loc": np.empty(n, np.float64),
        "scale": np.empty(n, np.float64),
    }
    row = 0
    for source in range(sources):
        image_class = str(rng.choice(class_names, p=class_p / class_p.sum()))
        family = str(rng.choice(names, p=family_p / family_p.sum()))
        small = family == "fast"  # FAST masks are slow to draw: keep their sources near the crop size
        top = 1.25 if small else 2.5
        shape = (int(crop * rng.uniform(1.0, top)), int(crop * rng.uniform(1.0, top)))
        phantom_seed = PHANTOM_SEEDS[split] + chunk * 1000 + source + seed * 10**6
        clean = draw_source(image_class, shape, rng, split, seed=phantom_seed)
        measured, noise = _noisy(clean, rng, image_class, noise_shares)
        coverage = float(np.exp(rng.uniform(*np.log(COVERAGE_RANGE))))
        mask = scan_mask(family, shape, coverage, seed=rng, image=clean)
        grid = ScanGrid(shape)
        m = prepare_measurements(grid, np.argwhere(mask), measured[mask])
        inputs, loc, scale = network_inputs(m)
        target = ((clean - loc) / scale).astype(np.float32)
        for _ in range(crops_per_source):
            y0 = int(rng.integers(0, shape[0] - crop + 1))
            x0 = int(rng.integers(0, shape[1] - crop + 1))
            out["inputs"][row] = inputs[:, y0 : y0 + crop, x0 : x0 + crop]
            out["target"][row] = target[y0 : y0 + crop, x0 : x0 + crop]
            out["image_class"][row] = list(IMAGE_CLASSES).index(image_class)
            out["family"][row] = family_index[family]
            out["noise"][row] = noise
            out["coverage"][row] = mask.mean()
            out["loc"][row], out["scale"][row] = loc, scale
            row += 1
    return out


# ----------------------------------------------------------------------------------------- the store

_PER_SAMPLE = ("image_class", "family", "noise", "coverage", "loc", "scale")


def create_training_set(
    path: str | os.PathLike[str],
    *,
    chunks: int,
    sources_per_chunk: int,
    crop: int = 128,
    crops_per_source: int = 2,
    seed: int = 0,
    split: str = "train",
    families: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Create (or reopen, if it was made with the same parameters) an empty training-set store.

    Returns
    -------
    dict
        The store's parameters (its attributes), to pass on to :func:`chunk_samples` and :func:`write_chunk`.

    Raises
    ------
    InputError
        If ``path`` holds another store or something else.
    """
    import zarr

    params = {
        "format": "fastflow-inpainting-training-set",
        "version": 1,
        "chunks": int(chunks),
        "sources_per_chunk": int(sources_per_chunk),
        "crop": int(crop),
        "crops_per_source": int(crops_per_source),
        "seed": int(seed),
        "split": split,
        "families": list(families) if families is not None else list(MASK_FAMILIES),
        "mask_families": list(MASK_FAMILIES),
        "image_classes": list(IMAGE_CLASSES),
        "noise_kinds": list(NOISE_KINDS),
        "input_channels": list(INPUT_CHANNELS),
    }
    if chunks < 1 or sources_per_chunk < 1 or crops_per_source < 1 or crop < 16:
        raise InputError("a training set needs chunks, sources_per_chunk, crops_per_source >= 1 and crop >= 16")
    target = Path(path)
    if target.exists():
        try:
            existing = dict(zarr.open_group(str(target), mode="r").attrs)
        except Exception:  # noqa: BLE001 - any failure to open means "not our store"
            raise InputError(f"{target} exists and is not a training-set store; choose a new path") from None
        if {k: existing.get(k) for k in params} != params:
            raise InputError(f"{target} holds a training set made with other parameters; choose a new path")
        return params
    n_per_chunk = sources_per_chunk * crops_per_source
    n = chunks * n_per_chunk
    root = zarr.open_group(str(target), mode="w", zarr_format=3)
    channels = len(INPUT_CHANNELS)
    root.create_array("inputs", shape=(n, channels, crop, crop), chunks=(n_per_chunk, channels, crop, crop),
                      dtype="float32", dimension_names=("sample", "channel", "y", "x"))
    root.create_array("target", shape=(n, crop, crop), chunks=(n_per_chunk, crop, crop), dtype="float32",
                      dimension_names=("sample", "y", "x"))
    for name, dtype in (("image_class", "int8"), ("family", "int8"), ("noise", "int8"), ("coverage", "float32"),
                        ("loc", "float64"), ("scale", "float64")):
        root.create_array(name, shape=(n,), chunks=(n_per_chunk,), dtype=dtype, dimension_names=("sample",))
    root.create_array("done", shape=(chunks,), chunks=(1,), dtype="bool", fill_value=False,
                      dimension_names=("chunk",))
    root.attrs.update(params)
    return params


def write_chunk(path: str | os.PathLike[str], chunk: int, samples: dict[str, np.ndarray]) -> None:
    """Write one chunk's samples into its region of the store, then mark the chunk done."""
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    n = len(samples["target"])
    start = chunk * n
    for name in ("inputs", "target", *_PER_SAMPLE):
        root[name][start : start + n] = samples[name]
    root["done"][chunk] = True


def missing_chunks(path: str | os.PathLike[str]) -> list[int]:
    """Chunks of the store not written yet."""
    import zarr

    done = zarr.open_group(str(path), mode="r")["done"][:]
    return [int(i) for i in np.flatnonzero(~done)]


@dataclass(frozen=True)
class TrainingSet:
    """A training set in memory.

    Attributes
    ----------
    inputs : numpy.ndarray
        ``(n, 3, crop, crop)`` float32.
    target : numpy.ndarray
        ``(n, crop, crop)`` float32, normalised like the inputs.
    meta : dict of numpy.ndarray
        Per-sample ``image_class``, ``family``, ``noise``, ``coverage``, ``loc``, ``scale``.
    attrs : dict
        The store's parameters.
    """

    inputs: np.ndarray
    target: np.ndarray
    meta: dict[str, np.ndarray]
    attrs: dict[str, Any]

    def __len__(self) -> int:
        return len(self.target)

    @classmethod
    def from_chunks(cls, chunks: Sequence[dict[str, np.ndarray]], attrs: dict[str, Any] | None = None) -> TrainingSet:
        """A set in memory from the outputs of :func:`chunk_samples` (no store)."""
        if not chunks:
            raise InputError("a training set needs at least one chunk")
        joined = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        meta = {name: joined[name] for name in _PER_SAMPLE}
        base = {"crop": int(joined["target"].shape[-1]), "families": list(MASK_FAMILIES),
                "image_classes": list(IMAGE_CLASSES), "seed": None}
        return cls(inputs=joined["inputs"], target=joined["target"], meta=meta, attrs={**base, **(attrs or {})})

    def batch(self, step: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """A random batch with a random flip / quarter turn of each sample; a function of ``step`` only."""
        rng = np.random.default_rng([seed, step])
        picks = rng.integers(0, len(self), size)
        inputs = np.empty((size, *self.inputs.shape[1:]), np.float32)
        target = np.empty((size, *self.target.shape[1:]), np.float32)
        for i, k in enumerate(picks):
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            x, y = self.inputs[k], self.target[k]
            if flip:
                x, y = x[..., ::-1], y[..., ::-1]
            inputs[i] = np.rot90(x, turns, axes=(-2, -1))
            target[i] = np.rot90(y, turns, axes=(-2, -1))
        return {"inputs": inputs, "target": target}


def load_training_set(path: str | os.PathLike[str]) -> TrainingSet:
    """Read a complete training-set store into memory.

    Raises
    ------
    InputError
        If the path is not a training-set store or some chunks are missing.
    """
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
    except Exception:  # noqa: BLE001
        raise InputError(f"{path} is not a training-set store (made by fastflow train-recon or its flow)") from None
    if attrs.get("format") != "fastflow-inpainting-training-set":
        raise InputError(f"{path} is not a fastflow inpainting training set")
    missing = missing_chunks(path)
    if missing:
        raise InputError(f"{path} is incomplete: {len(missing)} of {attrs['chunks']} chunks are missing "
                         "(run the generation again to finish it)")
    meta = {name: root[name][:] for name in _PER_SAMPLE}
    return TrainingSet(inputs=root["inputs"][:], target=root["target"][:], meta=meta, attrs=attrs)
