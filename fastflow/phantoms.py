"""Procedural test samples ("phantoms") for simulated scans.

Each function returns a deterministic float64 ``(y, x)`` image in ``[0, 1]`` for a given seed, draws no
external data and takes well under half a second at its default size. They span the range of samples an
adaptive scan meets:

- :func:`flakes`: sparse, piecewise-constant bright objects on a dark background, like the WSe2 dark-field
  test image of the FAST paper; adaptive sampling should gain most here.
- :func:`particles`: sparse smooth blobs of varying size and brightness.
- :func:`grains`: space-filling piecewise-constant regions separated by thin boundaries.
- :func:`lattice`: a dense periodic texture (atom columns) where adaptive sampling has little to gain.

Every ``seed`` may be an int or a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from fastflow.errors import InputError

Seed = int | np.random.Generator | None


# --------------------------------------------------------------------------------------------- helpers


def _check_shape(shape: Any) -> tuple[int, int]:
    """Return ``shape`` as two ints ``(ny, nx)``, each at least 2."""
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"phantom shape must be two integers (ny, nx); got {shape!r}") from None
    if len(dims) != 2 or min(dims) < 2:
        raise InputError(f"phantom shape must be two integers (ny, nx), each at least 2; got {shape!r}")
    return dims


def _check_number(value: Any, name: str, minimum: float, strict: bool = False) -> float:
    """Return ``value`` as a finite float ``>= minimum`` (``> minimum`` if ``strict``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {value!r}") from None
    ok = np.isfinite(number) and (number > minimum if strict else number >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise InputError(f"{name} must be a finite number {relation} {minimum:g}; got {value!r}")
    return number


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, n_waves: int = 4) -> np.ndarray:
    """A slowly varying field in about ``[-1, 1]``: a few random plane waves of <= 1.5 periods per image."""
    ny, nx = shape
    y = np.arange(ny)[:, None] / max(ny, nx)
    x = np.arange(nx)[None, :] / max(ny, nx)
    field = np.zeros(shape)
    for _ in range(n_waves):
        cycles = rng.uniform(0.3, 1.5)
        angle = rng.uniform(0, 2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(2 * np.pi * cycles * (np.cos(angle) * y + np.sin(angle) * x) + phase)
    return field / np.sqrt(n_waves * 0.5) / 2


def _box(centre: np.ndarray, radius: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Slices of the pixels within ``radius`` of ``centre`` (clipped to the image), or None if outside."""
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _finish(image: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    """Blur with the point-spread function, add detector noise and clip to ``[0, 1]``."""
    if blur > 0:
        image = ndimage.gaussian_filter(image, blur, mode="nearest")
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0.0, 1.0)


# --------------------------------------------------------------------------------------------- flakes


def _polygon_halfplanes(
    rng: np.random.Generator, radius: float, orientation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Normals ``(k, 2)`` and offsets ``(k,)`` of a random flake polygon ``{p : normals @ p <= offsets}``.

    Edges follow the cleavage directions of a hexagonal crystal rotated by ``orientation`` (multiples of 60
    degrees, or of 120 degrees for a triangular piece), with random offsets, an elongation and sometimes one
    torn edge at a random angle. Every vertex lies within ``2.4 * offsets.max()`` of the centre.
    """
    n_sides = 3 if rng.random() < 0.3 else 6
    angles = orientation + 2 * np.pi * np.arange(n_sides) / n_sides
    offsets = radius * rng.uniform(0.45, 1.0, n_sides)
    stretch_dir, stretch = rng.uniform(0, np.pi), rng.uniform(0.0, 1.2)
    offsets *= 1 + stretch * np.abs(np.cos(angles - stretch_dir))
    if rng.random() < 0.4:  # a torn edge, not along a crystal direction (it can only cut the polygon down)
        angles = np.append(angles, rng.uniform(0, 2 * np.pi))
        offsets = np.append(offsets, radius * rng.uniform(0.3, 0.9))
    normals = np.stack([np.sin(angles), np.cos(angles)], axis=1)  # (y, x) components
    return normals, offsets


def _inside(normals: np.ndarray, offsets: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Boolean mask of the points ``(dy, dx)`` (relative to the polygon centre) inside all half-planes."""
    inside = np.ones(np.broadcast_shapes(dy.shape, dx.shape), dtype=bool)
    for (ny, nx), d in zip(normals, offsets, strict=True):
        inside &= ny * dy + nx * dx <= d
    return inside


def _terrace_offsets(rng: np.random.Generator, offsets: np.ndarray) -> np.ndarray:
    """Offsets of a thicker terrace: the flake cut back along one to three of its own edges.

    The terrace shares its other edges with the flake, and its steps run along crystal directions.
    """
    n_cut = int(rng.integers(1, max(2, min(4, offsets.size - 1))))
    cut = rng.choice(offsets.size, n_cut, replace=False)
    terrace = offsets.copy()
    terrace[cut] *= rng.uniform(-0.3, 0.6, n_cut)
    return terrace


def _flake_layers(
    rng: np.random.Generator, centre: np.ndarray, radius: float, shape: tuple[int, int]
) -> tuple[tuple[slice, slice] | None, np.ndarray | None]:
    """Render one flake: ``(slices, layers)`` with an integer layer count per pixel of its bounding box.

    A flake is one or two layers thick. It is one polygon, sometimes joined by a second piece of the same
    crystal orientation (giving a non-convex outline); often a terrace cut from the first piece adds one
    more layer.
    """
    orientation = rng.uniform(0, 2 * np.pi)
    pieces = [(np.zeros(2), *_polygon_halfplanes(rng, radius, orientation))]
    if rng.random() < 0.35:
        shift = rng.normal(0, 0.6 * radius, 2)
        pieces.append((shift, *_polygon_halfplanes(rng, 0.7 * radius, orientation)))
    reach = max(np.hypot(*shift) + 2.4 * offsets.max() for shift, _, offsets in pieces) + 2
    box = _box(centre, reach, shape)
    if box is None:
        return None, None
    dy = np.arange(box[0].start, box[0].stop)[:, None] - centre[0]
    dx = np.arange(box[1].start, box[1].stop)[None, :] - centre[1]
    flake = np.zeros(np.broadcast_shapes(dy.shape, dx.shape), dtype=bool)
    for (sy, sx), normals, offsets in pieces:
        flake |= _inside(normals, offsets, dy - sy, dx - sx)
    layers = (1 + int(rng.random() < 0.3)) * flake.astype(np.int16)
    if rng.random() < 0.6:
        _, normals, offsets = pieces[0]
        layers += _inside(normals, _terrace_offsets(rng, offsets), dy, dx)
    return box, layers


def flakes(shape: tuple[int, int] = (600, 400), seed: Seed = 0) -> np.ndarray:
    """Dark-field optical image of exfoliated 2-D crystal flakes (e.g. WSe2) on a substrate.

    In dark-field the flat substrate scatters little light into the objective and looks dark, with slowly
    varying stray light; each flake scatters more, increasingly so with its number of layers. Mechanically
    exfoliated flakes of a hexagonal crystal cleave along straight edges 60 or 120 degrees apart, come in a
    few large and many small pieces, and often carry thicker terraces or overlap, so the flake intensity
    takes two or three discrete levels. The result is a sparse, strongly bimodal image with sharp edges,
    like the 600x400 WSe2 test image of the FAST paper.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``; the default matches the FAST paper's test image.
    seed : int or numpy.random.Generator, optional
        Random seed; the same seed always gives the same image.

    Returns
    -------
    numpy.ndarray
        float64 image in ``[0, 1]``: background around 0.04, flake levels about 0.46, 0.70 and 0.82 for
        one, two and three layers (intensity ``0.95 (1 - exp(-layers / 1.5))``), about 10-25 % of the
        area covered by flakes, blurred by a Gaussian point-spread function (sigma 0.8 px) and with
        additive noise (sigma 0.008).

    Examples
    --------
    >>> image = flakes(seed=1)
    >>> image.shape, float(image.min()) >= 0, float(image.max()) <= 1
    ((600, 400), True, True)
    """
    shape = _check_shape(shape)
    rng = _rng(seed)
    layers = _place_flakes(shape, rng)
    intensity = 0.95 * (1 - np.exp(-layers / 1.5))
    background = 0.04 + 0.012 * _smooth_field(shape, rng)
    image = background + intensity
    for centre, radius, level in _debris(shape, rng):
        image[_disk(centre, radius, shape)] = level
    return _finish(image, rng, blur=0.8, noise=0.008)


def _place_flakes(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Integer layer count per pixel: several small flakes, then large ones up to a random area fraction.

    The covered fraction ends between a target drawn in ``[0.12, 0.20]`` and a hard cap of 0.25 (a large
    flake that would exceed the cap is rejected and a smaller one tried).
    """
    layers = np.zeros(shape, dtype=np.int16)
    scale = min(shape)
    area, cap, target = layers.size, 0.25, rng.uniform(0.12, 0.20)
    for _ in range(int(rng.integers(6, 12))):
        _add_flake(layers, rng, scale * rng.uniform(0.015, 0.05), area * cap)
    size_high = 0.22
    for _ in range(40):
        if np.count_nonzero(layers) >= target * area:
            break
        if not _add_flake(layers, rng, scale * rng.uniform(0.06, size_high), area * cap):
            size_high = max(0.08, size_high * 0.8)
    return layers


def _add_flake(layers: np.ndarray, rng: np.random.Generator, radius: float, max_covered: float) -> bool:
    """Add one flake at a random centre unless it would push the covered area above ``max_covered``."""
    centre = rng.uniform((0, 0), layers.shape)
    box, flake = _flake_layers(rng, centre, max(radius, 1.0), layers.shape)
    if box is None:
        return False
    newly = np.count_nonzero((flake > 0) & (layers[box] == 0))
    if np.count_nonzero(layers) + newly > max_covered:
        return False
    layers[box] += flake
    return True


def _debris(shape: tuple[int, int], rng: np.random.Generator) -> list[tuple[np.ndarray, float, float]]:
    """A few tiny bright specks (dust, tape residue): ``(centre, radius, level)`` each."""
    count = int(rng.integers(3, 9))
    return [
        (rng.uniform((0, 0), shape), rng.uniform(0.7, 2.0), rng.uniform(0.3, 0.9))
        for _ in range(count)
    ]


def _disk(centre: np.ndarray, radius: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices within ``radius`` (at most 3 px) of ``centre``, always including the nearest pixel."""
    cy, cx = centre
    iy, ix = int(np.rint(cy)), int(np.rint(cx))
    yy, xx = np.mgrid[iy - 3 : iy + 4, ix - 3 : ix + 4]
    keep = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) | ((yy == iy) & (xx == ix))
    keep &= (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
    return yy[keep], xx[keep]


# --------------------------------------------------------------------------------------------- grains


def grains(shape: tuple[int, int] = (256, 256), seed: Seed = 0, *, grain_size: float = 28.0) -> np.ndarray:
    """Polycrystalline film seen with orientation contrast (e.g. channelling or diffraction contrast).

    Grains nucleate at random sites and grow until they meet, which gives a Voronoi tessellation. Each
    grain's crystal orientation sets a uniform grey level; boundaries are thin grooves that look dark.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``.
    seed : int or numpy.random.Generator, optional
        Random seed; the same seed always gives the same image.
    grain_size : float, optional
        Mean grain diameter in pixels (sets the number of grains, ``ny * nx / grain_size**2``).

    Returns
    -------
    numpy.ndarray
        float64 image in ``[0, 1]``: grain levels in ``[0.25, 0.9]``, boundaries about 1 px wide at
        35 % of the neighbouring grain level, slight blur (sigma 0.6 px) and noise (sigma 0.01).

    Examples
    --------
    >>> grains(seed=3).shape
    (256, 256)
    """
    shape = _check_shape(shape)
    grain_size = _check_number(grain_size, "grain_size", 1.0)
    rng = _rng(seed)
    labels = _voronoi_labels(shape, rng, max(2, round(shape[0] * shape[1] / grain_size**2)))
    levels = rng.uniform(0.25, 0.9, labels.max() + 1)
    image = levels[labels]
    image[_label_boundaries(labels)] *= 0.35
    return _finish(image, rng, blur=0.6, noise=0.01)


def _voronoi_labels(shape: tuple[int, int], rng: np.random.Generator, n_cells: int) -> np.ndarray:
    """Label of the nearest of ``n_cells`` random sites for every pixel."""
    sites = rng.uniform((0, 0), shape, size=(n_cells, 2))
    yy, xx = np.indices(shape)
    _, labels = cKDTree(sites).query(np.column_stack([yy.ravel(), xx.ravel()]))
    return labels.reshape(shape)


def _label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from the next pixel down or to the right."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge


# --------------------------------------------------------------------------------------------- particles


def particles(shape: tuple[int, int] = (256, 256), seed: Seed = 0, *, density: float = 6e-4) -> np.ndarray:
    """Nanoparticles on a thin support, as in mass-thickness or Z-contrast (dark-field) imaging.

    Each particle is an ellipsoid; its signal is proportional to the projected thickness, so a particle of
    semi-axes ``(a, b)`` contributes ``brightness * sqrt(1 - r**2)`` at normalised elliptical radius ``r``.
    Sizes are log-normal (median radius 5 px), brightness (composition) varies between particles and
    overlapping particles add up.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``.
    seed : int or numpy.random.Generator, optional
        Random seed; the same seed always gives the same image.
    density : float, optional
        Mean number of particles per pixel (Poisson-distributed count, at least one particle).

    Returns
    -------
    numpy.ndarray
        float64 image in ``[0, 1]`` with a dark background around 0.05, blurred (sigma 0.8 px) and noisy
        (sigma 0.01).

    Examples
    --------
    >>> particles(seed=2).shape
    (256, 256)
    """
    shape = _check_shape(shape)
    density = _check_number(density, "density", 0.0)
    rng = _rng(seed)
    image = 0.05 + 0.01 * _smooth_field(shape, rng)
    count = max(1, int(rng.poisson(density * shape[0] * shape[1])))
    for _ in range(count):
        _add_particle(image, rng)
    return _finish(image, rng, blur=0.8, noise=0.01)


def _add_particle(image: np.ndarray, rng: np.random.Generator) -> None:
    """Add one elliptical particle with a projected-thickness profile at a random position."""
    radius = float(np.clip(rng.lognormal(np.log(5.0), 0.5), 1.5, 25.0))
    a, b = radius, radius * rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    centre = rng.uniform((0, 0), image.shape)
    box = _box(centre, a + 1, image.shape)
    if box is None:
        return
    dy = np.arange(box[0].start, box[0].stop)[:, None] - centre[0]
    dx = np.arange(box[1].start, box[1].stop)[None, :] - centre[1]
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / a
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / b
    image[box] += rng.uniform(0.35, 0.9) * np.sqrt(np.clip(1 - u**2 - v**2, 0, None))


# --------------------------------------------------------------------------------------------- lattice


def lattice(
    shape: tuple[int, int] = (256, 256), spacing: float = 6.0, seed: Seed = 0, noise: float = 0.0
) -> np.ndarray:
    """Atomic-resolution image (e.g. HAADF-STEM along a zone axis) of a bicrystal.

    Atom columns are Gaussian spots (sigma ``0.2 * spacing``) on a square lattice of period ``spacing``,
    slightly rotated. A straight grain boundary crosses the field near its centre; the second grain is
    rotated by a further 12-25 degrees, and its columns that would overlap the first grain's are dropped.
    One to three columns are missing (vacancies) and column intensities vary by a few percent. Every
    region holds fine periodic detail, so adaptive sampling has little to gain here.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``.
    spacing : float, optional
        Lattice period in pixels, at least 2 (the power spectrum peaks at ``1 / spacing`` cycles/px).
    seed : int or numpy.random.Generator, optional
        Random seed; the same seed always gives the same image.
    noise : float, optional
        Standard deviation of additive Gaussian noise, in image units.

    Returns
    -------
    numpy.ndarray
        float64 image in ``[0, 1]``: background 0.05, column peaks about 0.95.

    Examples
    --------
    >>> lattice(seed=0).shape
    (256, 256)
    """
    shape = _check_shape(shape)
    spacing = _check_number(spacing, "spacing", 2.0)
    noise = _check_number(noise, "noise", 0.0)
    rng = _rng(seed)
    atoms = _bicrystal_columns(shape, spacing, rng)
    keep = np.ones(len(atoms), dtype=bool)
    keep[rng.choice(len(atoms), min(len(atoms), int(rng.integers(1, 4))), replace=False)] = False
    atoms = atoms[keep]
    amplitudes = rng.normal(1.0, 0.03, len(atoms))
    image = 0.05 + 0.9 * _splat_gaussians(shape, atoms, amplitudes, 0.2 * spacing)
    return _finish(image, rng, blur=0.0, noise=noise)


def _square_lattice(
    shape: tuple[int, int], spacing: float, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """Points ``(n, 2)`` of a square lattice rotated by ``angle`` with a random offset, covering ``shape``."""
    half = int(np.ceil(np.hypot(*shape) / spacing / 2)) + 2
    i, j = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    cell = np.column_stack([i.ravel(), j.ravel()]) + rng.uniform(0, 1, 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = spacing * cell @ rot.T + np.asarray(shape) / 2
    margin = spacing
    inside = np.all((points > -margin) & (points < np.asarray(shape) + margin), axis=1)
    return points[inside]


def _bicrystal_columns(shape: tuple[int, int], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Atom column positions of two grains split by a straight boundary near the image centre."""
    angle_a = np.deg2rad(rng.uniform(-5, 5))
    angle_b = angle_a + np.deg2rad(rng.uniform(12, 25)) * rng.choice([-1, 1])
    tilt = rng.uniform(-0.4, 0.4)  # radians; the boundary runs roughly along y
    boundary_normal = np.array([np.sin(tilt), np.cos(tilt)])
    boundary_point = np.asarray(shape) / 2 + rng.uniform(-0.15, 0.15, 2) * np.asarray(shape)
    grain_a = _square_lattice(shape, spacing, angle_a, rng)
    grain_b = _square_lattice(shape, spacing, angle_b, rng)
    grain_a = grain_a[(grain_a - boundary_point) @ boundary_normal <= 0]
    grain_b = grain_b[(grain_b - boundary_point) @ boundary_normal > 0]
    if len(grain_a) and len(grain_b):
        distance, _ = cKDTree(grain_a).query(grain_b)
        grain_b = grain_b[distance > 0.7 * spacing]
    return np.concatenate([grain_a, grain_b])


def _splat_gaussians(
    shape: tuple[int, int], centres: np.ndarray, amplitudes: np.ndarray, sigma: float
) -> np.ndarray:
    """Sum of isotropic Gaussians ``amplitude * exp(-r**2 / (2 sigma**2))``, each cut off at 4 sigma."""
    image = np.zeros(shape[0] * shape[1])
    if len(centres) == 0:
        return image.reshape(shape)
    reach = int(np.ceil(4 * sigma))
    offsets = np.arange(-reach, reach + 1)
    base = np.rint(centres).astype(int)
    yy = base[:, 0, None, None] + offsets[None, :, None]  # (n, k, 1)
    xx = base[:, 1, None, None] + offsets[None, None, :]  # (n, 1, k)
    r2 = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    values = amplitudes[:, None, None] * np.exp(-r2 / (2 * sigma**2))
    yy, xx = np.broadcast_arrays(yy, xx)
    ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
    flat = yy[ok] * shape[1] + xx[ok]
    image += np.bincount(flat, weights=values[ok], minlength=image.size)
    return image.reshape(shape)
