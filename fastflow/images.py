"""Validation and loading of sample images.

An *image* in fastflow is a 2-D ``(y, x)`` float64 array of finite values: the ground truth a simulated
instrument measures, or a training image. :func:`check_image` enforces that with one-line messages,
:func:`load_image` reads ``.tif/.tiff``, ``.npy``, ``.png`` and ``.jpg/.jpeg`` files, and
:func:`load_sample` also knows a few bundled samples by name (see :func:`available_samples`):

- images that ship inside the installed scikit-image package (never the ones its ``data`` module would
  download), converted to float in ``[0, 1]``;
- the procedural phantoms of :mod:`fastflow.phantoms` at their default size and seed.

Examples
--------
>>> image, meta = load_sample("camera")
>>> image.shape, meta["source"]
((512, 512), 'skimage')
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fastflow import phantoms
from fastflow.errors import InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg")
"""File extensions :func:`load_image` can read (case-insensitive)."""


# --------------------------------------------------------------------------------------------- checking


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` as a new 2-D float64 array, raising if it cannot be a scan's sample.

    Parameters
    ----------
    image : array_like
        Candidate image, ``(y, x)``. Integer, float and boolean arrays are accepted.
    name : str, optional
        What to call the image in error messages (e.g. a file path).

    Returns
    -------
    numpy.ndarray
        A float64 copy of ``image``; it never shares memory with the input.

    Raises
    ------
    InputError
        If the array is not 2-D, has a zero-size axis, is smaller than 2x2 pixels, has a non-numeric or
        complex dtype, or holds NaN/inf values.

    Examples
    --------
    >>> check_image([[0, 1], [2, 3]]).dtype
    dtype('float64')
    """
    try:
        arr = np.asarray(image)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} cannot be read as an array: {_one_line(exc)}") from exc
    _check_shape(arr, name)
    _check_dtype(arr, name)
    out = np.array(arr, dtype=np.float64, copy=True)
    _check_finite(out, name)
    return out


def _check_shape(arr: np.ndarray, name: str) -> None:
    """Raise unless ``arr`` is 2-D, non-empty and at least 2x2."""
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be a 2-D (y, x) array; got {arr.ndim}-D with shape {arr.shape}{_shape_hint(arr)}"
        )
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if min(arr.shape) < 2:
        raise InputError(f"{name} is {arr.shape[0]}x{arr.shape[1]} pixels; at least 2x2 are needed")


def _shape_hint(arr: np.ndarray) -> str:
    """A suggestion for common almost-2-D shapes (colour images, singleton axes)."""
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return "; it looks like an RGB(A) colour image: convert it to grayscale (e.g. skimage.color.rgb2gray)"
    if arr.ndim > 2 and sorted(arr.shape)[:-2] == [1] * (arr.ndim - 2):
        return "; drop the length-1 axes first (numpy.squeeze)"
    if arr.ndim > 2:
        return "; pick one 2-D plane (e.g. one channel or one frame)"
    return ""


def _check_dtype(arr: np.ndarray, name: str) -> None:
    """Raise unless ``arr`` holds real numbers or booleans."""
    if arr.dtype.kind == "c":
        raise InputError(f"{name} has complex values; take the magnitude (numpy.abs) or the real part first")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold numbers; got non-numeric dtype {arr.dtype}")


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raise if ``arr`` holds NaN or infinite values, saying how many."""
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(arr.size - finite.sum()) - n_nan
    raise InputError(f"{name} has {n_nan} NaN and {n_inf} inf values; replace or mask them before scanning")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened to ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------- files


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def _read_npy(path: Path) -> np.ndarray:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.ndarray):  # an .npz archive renamed .npy
        if hasattr(data, "close"):
            data.close()
        raise ValueError("the file is an .npz archive, not a single .npy array")
    return data


def _read_pillow(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    # Pin the plugin: letting imageio try every plugin on a bad file gives odd errors and warnings.
    return iio.imread(path, plugin="pillow")


_READERS: dict[str, tuple[str, Callable[[Path], np.ndarray]]] = {
    ".tif": ("TIFF", _read_tiff),
    ".tiff": ("TIFF", _read_tiff),
    ".npy": ("NumPy .npy", _read_npy),
    ".png": ("PNG", _read_pillow),
    ".jpg": ("JPEG", _read_pillow),
    ".jpeg": ("JPEG", _read_pillow),
}


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2-D image file and return it as validated float64 values.

    Values are kept in the file's own units (e.g. counts of a 16-bit TIFF); nothing is rescaled.

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff`` (tifffile), ``.npy`` (``numpy.load`` without pickle) or
        ``.png``/``.jpg``/``.jpeg`` (imageio) file.

    Returns
    -------
    numpy.ndarray
        The image as 2-D float64, checked by :func:`check_image`.

    Raises
    ------
    InputError
        If the file is missing, its extension is unknown, the reader cannot decode it (wrong content,
        pickled objects), or the decoded array fails :func:`check_image`. The message names the path.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"cannot load image {p}: no such file")
    if not p.is_file():
        raise InputError(f"cannot load image {p}: not a file")
    ext = p.suffix.lower()
    if ext not in _READERS:
        known = ", ".join(IMAGE_EXTENSIONS)
        ext_text = repr(p.suffix) if p.suffix else "(none)"
        raise InputError(f"cannot load image {p}: unknown extension {ext_text}; use one of {known}")
    kind, reader = _READERS[ext]
    try:
        data = reader(p)
    except Exception as exc:  # readers raise many types (ValueError, OSError, KeyError, ...)
        raise InputError(f"cannot load image {p}: not a readable {kind} file ({_one_line(exc)})") from exc
    return check_image(data, name=f"image file {p}")


# --------------------------------------------------------------------------------------------- samples


class SampleEntry(NamedTuple):
    """A bundled sample: a zero-argument loader returning float64 ``(y, x)`` and a one-line description."""

    loader: Callable[[], np.ndarray]
    description: str


def _skimage_image(name: str, gray: bool = False) -> np.ndarray:
    """Load a scikit-image bundled image (shipped in the package, never downloaded) as float in [0, 1]."""
    import skimage.data
    from skimage.util import img_as_float

    image = getattr(skimage.data, name)()
    if gray:
        from skimage.color import rgb2gray

        image = rgb2gray(image)
    return check_image(img_as_float(image), name=f"scikit-image sample {name!r}")


def _sk(name: str, description: str, gray: bool = False) -> SampleEntry:
    return SampleEntry(functools.partial(_skimage_image, name, gray), description)


# Only images stored inside the scikit-image wheel: all of these load with the network blocked and an
# empty scikit-image cache (checked for scikit-image 0.26; tests/test_images.py re-checks it).
_SKIMAGE_SAMPLES: dict[str, SampleEntry] = {
    "camera": _sk("camera", "cameraman photograph, 512x512 (the FAST paper's training image)"),
    "coins": _sk("coins", "Greek coins on a dark background, 303x384"),
    "cell": _sk("cell", "light-microscopy image of a cell floating in saline, 660x550"),
    "moon": _sk("moon", "lunar surface, low contrast, 512x512"),
    "text": _sk("text", "gray-level text on a textured background, 172x448"),
    "page": _sk("page", "scanned book page with uneven illumination, 191x384"),
    "brick": _sk("brick", "brick wall texture, 512x512"),
    "grass": _sk("grass", "grass texture, dense fine detail, 512x512"),
    "gravel": _sk("gravel", "gravel texture, 512x512"),
    "clock": _sk("clock", "clock with motion blur, 300x400"),
    "microaneurysms": _sk("microaneurysms", "retinal detail with small microaneurysms, 102x102"),
    "shepp_logan": _sk("shepp_logan_phantom", "Shepp-Logan head phantom: flat regions, sharp edges, 400x400"),
    "horse": _sk("horse", "binary horse silhouette, two levels only, 328x400"),
    "hubble": _sk(
        "hubble_deep_field",
        "Hubble deep field, grayscale: sparse bright objects on black, 872x1000",
        gray=True,
    ),
}

_PHANTOM_SAMPLES: dict[str, SampleEntry] = {
    "flakes": SampleEntry(
        phantoms.flakes, "phantom: dark-field image of bright 2-D flakes on a dark substrate, 600x400"
    ),
    "grains": SampleEntry(phantoms.grains, "phantom: polycrystalline grains with dark boundaries, 256x256"),
    "particles": SampleEntry(
        phantoms.particles, "phantom: scattered round/elliptical particles on a dark background, 256x256"
    ),
    "lattice": SampleEntry(
        phantoms.lattice, "phantom: atomic-resolution lattice with a grain boundary, 256x256"
    ),
}

SAMPLES: dict[str, SampleEntry] = {**_SKIMAGE_SAMPLES, **_PHANTOM_SAMPLES}
"""Bundled samples by name: ``name -> SampleEntry(loader, description)``. All load offline."""


def available_samples() -> dict[str, str]:
    """Names of the bundled samples and their one-line descriptions."""
    return {name: entry.description for name, entry in SAMPLES.items()}


def _looks_like_path(arg: str | os.PathLike[str]) -> bool:
    """True if ``arg`` should be read as a file rather than looked up as a sample name."""
    if isinstance(arg, os.PathLike):
        return True
    text = str(arg)
    return (
        os.path.isfile(text)
        or Path(text).suffix.lower() in IMAGE_EXTENSIONS
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
    )


def load_sample(name_or_path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a bundled sample by name, or an image file by path.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`available_samples` (case-insensitive), or a path. The argument is treated
        as a path if it is an existing file, a path-like object, contains a path separator or ends with
        one of :data:`IMAGE_EXTENSIONS`.

    Returns
    -------
    image : numpy.ndarray
        2-D float64 image. Bundled scikit-image and phantom samples are in ``[0, 1]``; files keep their
        own values.
    metadata : dict
        JSON-ready ``{"sample": name, "source": "skimage" | "phantom" | "file", "path": str or None,
        "shape": [ny, nx]}``.

    Raises
    ------
    InputError
        For an unknown name (the message lists the available ones) or an unreadable file.
    """
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        image = load_image(path)
        meta = {"sample": path.stem, "source": "file", "path": str(path.resolve())}
        return image, {**meta, "shape": list(image.shape)}
    key = str(name_or_path).strip().lower()
    if key not in SAMPLES:
        names = ", ".join(SAMPLES)
        raise InputError(
            f"unknown sample {str(name_or_path)!r}; available: {names} "
            f"(or give the path of a {'/'.join(IMAGE_EXTENSIONS)} file)"
        )
    image = SAMPLES[key].loader()
    source = "phantom" if key in _PHANTOM_SAMPLES else "skimage"
    return image, {"sample": key, "source": source, "path": None, "shape": list(image.shape)}
