"""Tests of fastflow.images: validation, file loading and bundled samples (all offline)."""

from __future__ import annotations

import socket
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from fastflow.errors import InputError
from fastflow.images import IMAGE_EXTENSIONS, available_samples, check_image, load_image, load_sample


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a network connection fail."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------------------------- check_image


def test_check_image_returns_float64_copy():
    source = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = check_image(source)
    assert out.dtype == np.float64 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, source)
    out[0, 0] = 99
    assert source[0, 0] == 0


def test_check_image_copies_float64_input():
    source = np.ones((3, 3))
    assert not np.shares_memory(check_image(source), source)


def test_check_image_converts_bool():
    out = check_image(np.array([[True, False], [False, True]]))
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.zeros(5), "1-D with shape (5,)"),
        (np.zeros((4, 5, 3)), "grayscale"),
        (np.zeros((4, 5, 4)), "grayscale"),
        (np.zeros((1, 4, 5)), "squeeze"),
        (np.zeros((2, 4, 5)), "3-D with shape (2, 4, 5)"),
        (np.float64(3.0), "0-D"),
        (np.zeros((0, 5)), "empty"),
        (np.zeros((3, 0)), "empty"),
        (np.zeros((1, 5)), "1x5 pixels"),
        (np.zeros((7, 1)), "7x1 pixels"),
        (np.array([["a", "b"], ["c", "d"]]), "non-numeric dtype"),
        (np.array([[1, None], [2, 3]], dtype=object), "non-numeric dtype object"),
        (np.ones((2, 2), dtype=complex), "complex"),
        ([[1, 2], [3]], "cannot be read as an array"),
    ],
)
def test_check_image_rejects(image, fragment):
    with pytest.raises(InputError, match="^image") as info:
        check_image(image)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_check_image_counts_non_finite_values():
    image = np.ones((4, 4))
    image[0, :2] = np.nan
    image[1, 0] = np.inf
    image[2, 0] = -np.inf
    with pytest.raises(InputError, match="2 NaN and 2 inf"):
        check_image(image)


def test_check_image_uses_name():
    with pytest.raises(InputError, match="^truth is empty"):
        check_image(np.zeros((0, 3)), name="truth")


# --------------------------------------------------------------------------------------------- load_image


def test_load_npy_round_trip(tmp_path):
    image = np.random.default_rng(0).random((5, 7))
    np.save(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(load_image(tmp_path / "a.npy"), image)


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".TIF"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_load_tiff_round_trip(tmp_path, suffix, dtype):
    image = (np.random.default_rng(1).random((6, 9)) * 1000).astype(dtype)
    path = tmp_path / f"a{suffix}"
    tifffile.imwrite(path, image)
    out = load_image(str(path))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, image.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_load_png_round_trip(tmp_path, dtype):
    image = np.random.default_rng(2).integers(0, np.iinfo(dtype).max, (8, 5), dtype=dtype)
    iio.imwrite(tmp_path / "a.png", image)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), image)


def test_load_jpeg_keeps_shape(tmp_path):
    image = np.full((16, 12), 128, dtype=np.uint8)
    iio.imwrite(tmp_path / "a.jpg", image)
    out = load_image(tmp_path / "a.jpg")
    assert out.shape == (16, 12)
    assert abs(out.mean() - 128) < 3


def _text_file(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def _object_npy(path: Path) -> Path:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


def _npz_as_npy(path: Path) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, a=np.ones((3, 3)))
    return path


@pytest.mark.parametrize(
    ("make", "name", "fragment"),
    [
        (lambda p: p, "missing.png", "no such file"),
        (_text_file, "fake.png", "not a readable PNG file"),
        (_text_file, "fake.tif", "not a readable TIFF file"),
        (_text_file, "fake.jpg", "not a readable JPEG file"),
        (_text_file, "fake.npy", "not a readable NumPy .npy file"),
        (_object_npy, "objects.npy", "not a readable NumPy .npy file"),
        (_npz_as_npy, "archive.npy", "npz"),
        (_text_file, "data.xyz", "unknown extension '.xyz'"),
        (_text_file, "noext", "unknown extension"),
    ],
)
def test_load_image_bad_files(tmp_path, make, name, fragment):
    path = make(tmp_path / name)
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message
    assert "\n" not in message


def test_load_image_directory(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_load_image_rgb_png_suggests_grayscale(tmp_path):
    iio.imwrite(tmp_path / "rgb.png", np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="grayscale") as info:
        load_image(tmp_path / "rgb.png")
    assert "rgb.png" in str(info.value)


def test_load_image_nan_npy(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0], [2.0, 3.0]]))
    with pytest.raises(InputError, match="1 NaN and 0 inf"):
        load_image(tmp_path / "nan.npy")


# --------------------------------------------------------------------------------------------- samples


def test_available_samples_lists_required_names():
    names = available_samples()
    for required in ("camera", "coins", "cell", "flakes", "grains", "particles", "lattice"):
        assert required in names
    assert all(isinstance(text, str) and text and "\n" not in text for text in names.values())


@pytest.mark.parametrize("name", sorted(available_samples()))
def test_load_every_bundled_sample_offline(no_network, name):
    image, meta = load_sample(name)
    assert image.dtype == np.float64 and image.ndim == 2 and min(image.shape) >= 2
    assert np.isfinite(image).all()
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.max() > image.min()
    assert meta == {
        "sample": name,
        "source": "phantom" if name in ("flakes", "grains", "particles", "lattice") else "skimage",
        "path": None,
        "shape": list(image.shape),
    }


def test_sample_names_are_case_insensitive():
    image, meta = load_sample(" Camera ")
    assert meta["sample"] == "camera" and image.shape == (512, 512)


def test_flakes_sample_matches_fast_test_image_shape():
    image, _ = load_sample("flakes")
    assert image.shape == (600, 400)


def test_unknown_sample_lists_available_names():
    with pytest.raises(InputError, match="unknown sample 'nope'") as info:
        load_sample("nope")
    message = str(info.value)
    for name in available_samples():
        assert name in message


@pytest.mark.parametrize("as_path", [str, Path])
def test_load_sample_from_file(tmp_path, as_path):
    image = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "mine.npy", image)
    out, meta = load_sample(as_path(tmp_path / "mine.npy"))
    np.testing.assert_array_equal(out, image)
    assert meta["source"] == "file" and meta["sample"] == "mine" and meta["shape"] == [3, 4]
    assert Path(meta["path"]) == (tmp_path / "mine.npy").resolve()


def test_load_sample_missing_file_with_image_extension():
    with pytest.raises(InputError, match="no such file"):
        load_sample("does-not-exist.tif")


def test_known_extensions():
    assert set(IMAGE_EXTENSIONS) >= {".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg"}
