"""STEM-like images: atomic columns with defects, for training and testing learned reconstructions.

:func:`stem_image` draws a high-angle annular dark-field (HAADF) STEM image of a crystalline specimen seen
along a zone axis: atomic columns are Gaussian spots whose brightness grows with their atomic number, on
one of several projected lattices (square, rectangular, hexagonal, honeycomb, and square or rectangular
cells with a two-column basis), in one or more grains of different orientations. Defects are drawn from
parameters: vacancies (missing columns), substitutions (columns brighter or dimmer than their site),
grain boundaries, amorphous regions (columns at random, disordered positions) and, optionally, vacuum (a
region with no specimen). The image carries a label map of where each defect is, so that errors and
uncertainties can be scored at defects apart from the perfect lattice.

:func:`scan_noise` adds what a real scan adds: Poisson (shot) noise at a given dose, Gaussian detector
noise, and optionally scan drift (a slow displacement of each scan line).

All randomness comes from one seed; the same seed gives the same image.

Examples
--------
>>> s = stem_image((96, 128), seed=3)
>>> s.image.shape, s.defects.shape, bool(0.0 <= s.image.min() and s.image.max() <= 1.0)
((96, 128), (96, 128), True)
>>> sorted(DEFECT_LABELS)[:3]
['amorphous', 'boundary', 'lattice']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from fastflow.errors import InputError
from fastflow.phantoms import Seed, _check_number, _check_shape, _rng, _smooth_field, _splat_gaussians

__all__ = ["DEFECT_LABELS", "LATTICES", "StemImage", "scan_noise", "stem_image"]

DEFECT_LABELS: dict[str, int] = {
    "lattice": 0,
    "vacancy": 1,
    "substitution": 2,
    "boundary": 3,
    "amorphous": 4,
    "vacuum": 5,
}
"""Values of :attr:`StemImage.defects`: the perfect lattice is 0, each kind of defect its own label."""

# Each lattice: primitive vectors (in units of the spacing) and a basis of (fractional position, relative
# brightness) pairs; brightness stands for Z**1.7 of the column, relative to the brightest one.
LATTICES: dict[str, dict[str, Any]] = {
    "square": {"vectors": ((1.0, 0.0), (0.0, 1.0)), "basis": (((0.0, 0.0), 1.0),)},
    "rectangular": {"vectors": ((1.0, 0.0), (0.0, 1.4)), "basis": (((0.0, 0.0), 1.0),)},
    "hexagonal": {"vectors": ((1.0, 0.0), (0.5, np.sqrt(3) / 2)), "basis": (((0.0, 0.0), 1.0),)},
    "honeycomb": {
        "vectors": ((np.sqrt(3), 0.0), (np.sqrt(3) / 2, 1.5)),
        "basis": (((0.0, 0.0), 1.0), ((1 / 3, 1 / 3), 1.0)),
    },
    "square-basis": {"vectors": ((1.4, 0.0), (0.0, 1.4)), "basis": (((0.0, 0.0), 1.0), ((0.5, 0.5), 0.45))},
    "rectangular-basis": {
        "vectors": ((1.3, 0.0), (0.0, 2.0)),
        "basis": (((0.0, 0.0), 1.0), ((0.5, 0.25), 0.6), ((0.0, 0.5), 1.0), ((0.5, 0.75), 0.6)),
    },
}
"""Projected lattices :func:`stem_image` draws from."""


@dataclass(frozen=True)
class StemImage:
    """A STEM-like image and where its defects are.

    Attributes
    ----------
    image : numpy.ndarray
        float64 ``(y, x)`` in ``[0, 1]``, noise-free.
    defects : numpy.ndarray
        uint8 ``(y, x)`` labels from :data:`DEFECT_LABELS` (0 on the perfect lattice).
    info : dict
        The parameters drawn: lattice, spacing, column width, grain count, defect counts.
    """

    image: np.ndarray
    defects: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def stem_image(
    shape: tuple[int, int] = (256, 256),
    seed: Seed = 0,
    *,
    lattice: str | None = None,
    spacing: float | None = None,
    width: float | None = None,
    grains: int | None = None,
    vacancies: float | None = None,
    substitutions: float | None = None,
    amorphous: float | None = None,
    vacuum: bool | None = None,
) -> StemImage:
    """Draw a HAADF-STEM-like image of atomic columns with defects.

    Every parameter left as ``None`` is drawn from the seed, so a sequence of seeds spans many lattices,
    scales and defect mixes.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)``.
    seed : int or numpy.random.Generator, optional
        Random seed.
    lattice : str, optional
        A name from :data:`LATTICES`.
    spacing : float, optional
        Nearest-column distance scale in pixels (the lattice's unit), at least 3; drawn from 4-30.
    width : float, optional
        Gaussian sigma of a column, as a fraction of ``spacing`` (0.08-0.35); drawn from 0.12-0.25.
    grains : int, optional
        Number of grains (1-6), each with its own orientation; drawn from 1-3.
    vacancies : float, optional
        Fraction of columns removed (0-0.2); drawn from 0-3 %.
    substitutions : float, optional
        Fraction of columns with another brightness (0-0.3); drawn from 0-5 %.
    amorphous : float, optional
        Fraction of the field that is amorphous (0-0.8); drawn as 0 in half the images, else 5-30 %.
    vacuum : bool, optional
        Whether a region of the field holds no specimen (flat background); drawn true in a quarter.

    Returns
    -------
    StemImage

    Raises
    ------
    InputError
        If a parameter is out of its range or the lattice name is unknown.
    """
    shape = _check_shape(shape)
    rng = _rng(seed)
    name = lattice if lattice is not None else str(rng.choice(sorted(LATTICES)))
    if name not in LATTICES:
        raise InputError(f"unknown lattice {name!r}; choose one of {', '.join(sorted(LATTICES))}")
    a = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0)))) if spacing is None else spacing
    a = _check_number(a, "spacing", 3.0)
    w = rng.uniform(0.12, 0.25) if width is None else _bounded(width, "width", 0.08, 0.35)
    n_grains = int(rng.choice([1, 1, 2, 2, 3])) if grains is None else int(_bounded(grains, "grains", 1, 6))
    p_vac = rng.uniform(0, 0.03) if vacancies is None else _bounded(vacancies, "vacancies", 0, 0.2)
    p_sub = rng.uniform(0, 0.05) if substitutions is None else _bounded(substitutions, "substitutions", 0, 0.3)
    if amorphous is None:
        f_amo = 0.0 if rng.random() < 0.5 else rng.uniform(0.05, 0.3)
    else:
        f_amo = _bounded(amorphous, "amorphous", 0, 0.8)
    has_vacuum = bool(rng.random() < 0.25) if vacuum is None else bool(vacuum)

    sites, brightness, grain_of = _grain_columns(shape, LATTICES[name], a, n_grains, rng)
    defects = np.zeros(shape, dtype=np.uint8)
    boundary = _grain_boundary_pixels(shape, sites, grain_of, a) if n_grains > 1 else np.zeros(shape, bool)
    amorphous_region = _blob_region(shape, f_amo, rng) if f_amo > 0 else np.zeros(shape, bool)
    vacuum_region = _edge_region(shape, rng) if has_vacuum else np.zeros(shape, bool)

    inside = _pixel_lookup(amorphous_region | vacuum_region, sites)
    sites, brightness = sites[~inside], brightness[~inside]
    n = len(sites)
    vacant = rng.random(n) < p_vac
    substituted = ~vacant & (rng.random(n) < p_sub)
    factor = np.where(rng.random(n) < 0.5, rng.uniform(0.35, 0.7, n), rng.uniform(1.3, 1.8, n))
    amplitude = brightness * rng.normal(1.0, 0.03, n)
    amplitude[substituted] *= factor[substituted]

    amo_sites = _amorphous_columns(shape, amorphous_region, a, rng)
    amo_amplitude = rng.uniform(0.25, 0.9, len(amo_sites)) * float(np.max(brightness, initial=1.0))
    sigma = w * a
    columns = _splat_gaussians(shape, sites[~vacant], amplitude[~vacant], sigma)
    columns += _splat_gaussians(shape, amo_sites, amo_amplitude, sigma * rng.uniform(1.0, 1.4))

    thickness = 1.0 + 0.15 * _smooth_field(shape, rng, n_waves=3)
    support = ndimage.gaussian_filter((~vacuum_region).astype(float), sigma=max(1.0, 0.5 * a))
    image = support * (0.06 + 0.1 * _smooth_field(shape, rng, n_waves=2) ** 2 + columns * thickness)
    image = 0.02 + image
    peak = float(np.percentile(image, 99.9))
    image = np.clip(image / max(peak, 1e-12), 0.0, 1.0) * 0.95

    radius = max(1.5, 0.35 * a)
    defects[_disk_mask(shape, sites[vacant], radius)] = DEFECT_LABELS["vacancy"]
    defects[_disk_mask(shape, sites[substituted], radius)] = DEFECT_LABELS["substitution"]
    defects[boundary] = DEFECT_LABELS["boundary"]
    defects[amorphous_region] = DEFECT_LABELS["amorphous"]
    defects[vacuum_region] = DEFECT_LABELS["vacuum"]
    info = {
        "lattice": name,
        "spacing": round(a, 3),
        "width": round(float(w), 3),
        "grains": n_grains,
        "columns": int(n - vacant.sum()),
        "vacancies": int(vacant.sum()),
        "substitutions": int(substituted.sum()),
        "amorphous_fraction": round(float(amorphous_region.mean()), 4),
        "vacuum_fraction": round(float(vacuum_region.mean()), 4),
    }
    return StemImage(image=image, defects=defects, info=info)


def scan_noise(
    image: np.ndarray,
    seed: Seed = 0,
    *,
    dose: float | None = None,
    gaussian: float = 0.0,
    drift: float = 0.0,
) -> np.ndarray:
    """What a scan records of ``image``: drift, shot noise and detector noise.

    Parameters
    ----------
    image : numpy.ndarray
        Noise-free ``(y, x)`` image, values ``>= 0`` (e.g. :attr:`StemImage.image`).
    seed : int or numpy.random.Generator, optional
        Random seed.
    dose : float, optional
        Expected counts at the brightest pixel (Poisson noise); ``None`` for none.
    gaussian : float, optional
        Standard deviation of additive detector noise, in image units.
    drift : float, optional
        Largest displacement of a scan line in pixels (a slow, smooth wander along x, and a linear
        stretch along y); 0 for none.

    Returns
    -------
    numpy.ndarray
        float64 image of the same shape, in the units of ``image``.

    Raises
    ------
    InputError
        If ``image`` is not 2-D and non-negative, or a parameter is out of range.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 2 or not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise InputError("scan_noise needs a finite, non-negative 2-D image")
    rng = _rng(seed)
    if drift:
        drift = _check_number(drift, "drift", 0.0)
        ny, nx = arr.shape
        wander = np.cumsum(rng.normal(0, 1, ny))
        wander = ndimage.gaussian_filter1d(wander - wander.mean(), sigma=max(2.0, ny / 16))
        wander *= drift / max(np.abs(wander).max(), 1e-12)
        yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
        stretch = 1.0 + rng.uniform(-1, 1) * drift / max(ny, 1)
        arr = ndimage.map_coordinates(arr, [yy * stretch, xx + wander[:, None]], order=3, mode="reflect")
        arr = np.clip(arr, 0.0, None)
    if dose is not None:
        dose = _check_number(dose, "dose", 0.0, strict=True)
        peak = max(float(arr.max()), 1e-12)
        arr = rng.poisson(arr * (dose / peak)) * (peak / dose)
    if gaussian:
        arr = arr + rng.normal(0.0, _check_number(gaussian, "gaussian", 0.0), arr.shape)
    return arr


# --------------------------------------------------------------------------------------------- helpers


def _bounded(value: Any, name: str, lo: float, hi: float) -> float:
    number = _check_number(value, name, lo)
    if number > hi:
        raise InputError(f"{name} must be at most {hi:g}; got {value!r}")
    return number


def _lattice_sites(
    shape: tuple[int, int], spec: dict[str, Any], spacing: float, angle: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Column positions ``(n, 2)`` (y, x) and brightness of a rotated lattice covering ``shape``."""
    vectors = np.asarray(spec["vectors"], dtype=float) * spacing  # rows: a1, a2 in (x, y)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    vectors = vectors @ rot.T
    extent = np.hypot(*shape) / 2 + 2 * spacing
    shortest = min(np.linalg.norm(vectors[0]), np.linalg.norm(vectors[1]))
    area = abs(np.linalg.det(vectors))
    reach = int(np.ceil(extent * max(np.linalg.norm(vectors[0]), np.linalg.norm(vectors[1])) / area)) + 2
    reach = max(reach, int(np.ceil(extent / shortest)) + 2)
    i, j = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    cells = np.column_stack([i.ravel(), j.ravel()]).astype(float) + rng.uniform(0, 1, 2)
    centre = np.array([shape[1], shape[0]]) / 2.0
    positions, bright = [], []
    for frac, value in spec["basis"]:
        xy = (cells + np.asarray(frac)) @ vectors + centre
        positions.append(xy[:, ::-1])  # to (y, x)
        bright.append(np.full(len(xy), float(value)))
    points = np.concatenate(positions)
    values = np.concatenate(bright)
    margin = 4 * spacing
    keep = np.all((points > -margin) & (points < np.asarray(shape) + margin), axis=1)
    return points[keep], values[keep]


def _grain_columns(
    shape: tuple[int, int], spec: dict[str, Any], spacing: float, n_grains: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns of ``n_grains`` grains (a Voronoi partition), each lattice rotated its own way.

    Columns of a grain that come closer than 0.6 spacing to an earlier grain's are dropped, so boundaries
    hold no overlapping columns.
    """
    seeds = rng.uniform(0, 1, (n_grains, 2)) * np.asarray(shape)
    base = rng.uniform(0, np.pi)
    kept_sites, kept_values, kept_grain = [], [], []
    tree_all: cKDTree | None = None
    for g in range(n_grains):
        angle = base + (rng.uniform(10, 45) * np.pi / 180 * g if g else 0.0)
        sites, values = _lattice_sites(shape, spec, spacing, angle, rng)
        if n_grains > 1:
            owner = np.argmin(((sites[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
            mine = owner == g
            sites, values = sites[mine], values[mine]
        if tree_all is not None and len(sites):
            distance, _ = tree_all.query(sites)
            far = distance > 0.6 * spacing
            sites, values = sites[far], values[far]
        kept_sites.append(sites)
        kept_values.append(values)
        kept_grain.append(np.full(len(sites), g))
        all_sites = np.concatenate(kept_sites)
        tree_all = cKDTree(all_sites) if len(all_sites) else None
    return np.concatenate(kept_sites), np.concatenate(kept_values), np.concatenate(kept_grain)


def _grain_boundary_pixels(
    shape: tuple[int, int], sites: np.ndarray, grain_of: np.ndarray, spacing: float
) -> np.ndarray:
    """Pixels within one spacing of the border between columns of different grains."""
    ny, nx = shape
    if len(sites) == 0:
        return np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[0:ny, 0:nx]
    pixels = np.column_stack([yy.ravel(), xx.ravel()]).astype(float)
    _, nearest = cKDTree(sites).query(pixels, k=min(6, len(sites)))
    nearest = nearest.reshape(len(pixels), -1)
    grains = grain_of[nearest]
    mixed = np.any(grains != grains[:, :1], axis=1).reshape(shape)
    return ndimage.binary_dilation(mixed, iterations=max(1, int(round(0.3 * spacing))))


def _blob_region(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random region covering about ``fraction`` of the field."""
    field = _smooth_field(shape, rng, n_waves=5) + 0.3 * _smooth_field(shape, rng, n_waves=8)
    return field > np.quantile(field, 1.0 - fraction)


def _edge_region(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A region beyond a wavy specimen edge, covering 10-40 % of the field."""
    ny, nx = shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    along = np.cos(angle) * yy + np.sin(angle) * xx
    wave = 0.03 * _smooth_field(shape, rng, n_waves=4)
    field = along + wave
    return field > np.quantile(field, 1.0 - rng.uniform(0.1, 0.4))


def _amorphous_columns(
    shape: tuple[int, int], region: np.ndarray, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """Disordered column positions inside ``region``: a hexagonal lattice of the same density whose sites
    are displaced at random by a third of the spacing, so nothing of its order is left beyond a few
    neighbours."""
    if not region.any():
        return np.empty((0, 2))
    sites, _ = _lattice_sites(shape, LATTICES["hexagonal"], spacing, rng.uniform(0, np.pi), rng)
    sites = sites + rng.normal(0.0, spacing / 3, sites.shape)
    return sites[_pixel_lookup(region, sites)]


def _pixel_lookup(region: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``region`` at the nearest pixel of each point; points outside the field count as outside."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    idx = np.rint(points).astype(int)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < region.shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < region.shape[1])
    out = np.zeros(len(points), dtype=bool)
    out[ok] = region[idx[ok, 0], idx[ok, 1]]
    return out


def _disk_mask(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` of any centre."""
    mask = np.zeros(shape, dtype=bool)
    if len(centres) == 0:
        return mask
    reach = int(np.ceil(radius))
    offsets = np.arange(-reach, reach + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    inside = dy**2 + dx**2 <= radius**2
    dy, dx = dy[inside], dx[inside]
    base = np.rint(centres).astype(int)
    yy = (base[:, 0, None] + dy[None]).ravel()
    xx = (base[:, 1, None] + dx[None]).ravel()
    ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
    mask[yy[ok], xx[ok]] = True
    return mask
