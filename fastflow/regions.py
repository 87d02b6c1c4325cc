"""Regions of a scan: where the beam may go (a region of interest) and where it must never measure (no-go).

A region is given as a mask image (PNG/TIFF/NPY: nonzero pixels are inside), as a JSON file of polygons, or
as one polygon written inline as ``"x,y; x,y; x,y"``. Coordinates are grid pixels, ``x`` the column and ``y``
the row, as image viewers show them; a polygon covers the pixels whose centres lie inside it or on its edge.

A JSON region file holds one polygon (a list of ``[x, y]`` vertices), a list of polygons, or an object
``{"polygons": [...]}``.

:class:`Regions` combines them into one code per pixel, the layout the scan store keeps in its ``region``
array: 0 allowed, 1 outside the region of interest, 2 inside a no-go region. Samplers never propose a pixel
that is not allowed (:meth:`fastflow.sampling.protocol.BaseSampler.restrict`), and a scan's coverage counts
the allowed pixels only. :func:`route_crossing` reports how far a stage route ran over no-go pixels, which
matters on instruments without a shutter, where the beam doses what the stage passes over.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError

ALLOWED, OUTSIDE_ROI, NO_GO = 0, 1, 2
"""Codes of the store's ``region`` array."""

_MASK_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def parse_polygon(text: str) -> np.ndarray:
    """Parse an inline polygon ``"x,y; x,y; x,y"`` into ``(n, 2)`` float vertices ``(x, y)``.

    Raises
    ------
    InputError
        If the text is not at least three ``x,y`` pairs of finite numbers.
    """
    pairs = [p.strip() for p in str(text).replace("\n", ";").split(";") if p.strip()]
    try:
        vertices = np.array([[float(v) for v in p.split(",")] for p in pairs], dtype=np.float64)
    except ValueError:
        vertices = np.empty((0, 0))
    if vertices.ndim != 2 or vertices.shape[1:] != (2,) or len(vertices) < 3 or not np.isfinite(vertices).all():
        raise InputError(f"a polygon is at least three 'x,y' vertices separated by ';' (grid pixels); got {text!r}")
    return vertices


def _as_polygons(data: Any, source: str) -> list[np.ndarray]:
    if isinstance(data, dict):
        if "polygons" not in data:
            raise InputError(f"{source}: a region object needs a 'polygons' list")
        data = data["polygons"]
    if isinstance(data, list) and data and isinstance(data[0], list) and data[0] \
            and not isinstance(data[0][0], list):          # one polygon: a list of [x, y]
        data = [data]
    polygons = []
    for k, poly in enumerate(data if isinstance(data, list) else []):
        try:
            vertices = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            vertices = np.empty((0, 0))
        if vertices.ndim != 2 or vertices.shape[1:] != (2,) or len(vertices) < 3 or not np.isfinite(vertices).all():
            raise InputError(f"{source}: polygon {k} must be at least three [x, y] vertices")
        polygons.append(vertices)
    if not polygons:
        raise InputError(f"{source}: no polygon found; give [[x, y], ...] or {{\"polygons\": [...]}}")
    return polygons


def polygon_mask(shape: tuple[int, int], vertices: np.ndarray) -> np.ndarray:
    """Pixels of a grid of ``shape`` whose centres lie inside (or on the edge of) a polygon of ``(x, y)`` vertices."""
    from skimage.draw import polygon2mask

    return polygon2mask(shape, np.asarray(vertices, dtype=np.float64)[:, ::-1])


def _load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            mask = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the region mask {path}: {exc}") from None
    else:
        from skimage.io import imread

        try:
            mask = imread(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the region mask {path}: {exc}") from None
        if mask.ndim == 3:                     # an RGB(A) drawing: any non-black pixel is inside
            mask = mask[..., :3].max(axis=-1) if mask.shape[-1] >= 3 else mask[..., 0]
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise InputError(f"the region mask {path} is {mask.shape[0]}x{mask.shape[1] if mask.ndim > 1 else ''} "
                         f"pixels but the grid is {shape[0]}x{shape[1]}")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise InputError(f"the region mask {path} holds NaN or infinite values")
    return mask != 0


def region_mask(spec: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of one region given as a mask file, a JSON polygon file or an inline polygon.

    Parameters
    ----------
    spec : str or path-like
        A ``.png``/``.tif``/``.tiff``/``.npy`` mask (nonzero inside; the grid's shape), a ``.json`` file of
        polygons, or an inline polygon ``"x,y; x,y; x,y"`` in grid pixels.
    shape : tuple of int
        The grid shape ``(ny, nx)``.

    Raises
    ------
    InputError
        For a missing or unreadable file, a mask of another shape, or a malformed polygon.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.suffix.lower() in (*_MASK_SUFFIXES, ".json"):
        if not path.is_file():
            raise InputError(f"region file {path} does not exist")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read the region file {path}: {exc}") from None
            polygons = _as_polygons(data, str(path))
        else:
            return _load_mask(path, shape)
    else:
        polygons = [parse_polygon(text)]
    mask = np.zeros(shape, dtype=bool)
    for vertices in polygons:
        mask |= polygon_mask(shape, vertices)
    return mask


@dataclass
class Regions:
    """A region of interest and no-go regions of one grid, as given (``roi``, ``no_go``) and as pixel codes.

    Parameters
    ----------
    shape : tuple of int
        The grid shape.
    roi : str, optional
        The region of interest (see :func:`region_mask`); measure only inside it. Default: the whole grid.
    no_go : list of str
        No-go regions; never measure inside them.

    Raises
    ------
    InputError
        If a region is malformed, or nothing is left to measure.
    """

    shape: tuple[int, int]
    roi: str | None = None
    no_go: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        if isinstance(self.no_go, (str, os.PathLike)):
            self.no_go = [self.no_go]
        self.codes = np.full(self.shape, ALLOWED, dtype=np.uint8)
        if self.roi is not None:
            self.codes[~region_mask(self.roi, self.shape)] = OUTSIDE_ROI
        for spec in self.no_go:
            self.codes[region_mask(spec, self.shape)] = NO_GO
        if not (self.codes == ALLOWED).any():
            raise InputError("the regions leave no pixel to measure: the region of interest is empty or "
                             "covered by no-go regions")

    @property
    def allowed(self) -> np.ndarray:
        """Boolean mask of the pixels a sampler may propose."""
        return self.codes == ALLOWED

    @property
    def active(self) -> bool:
        """True when some pixel is not allowed."""
        return bool((self.codes != ALLOWED).any())

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: the specs and the pixel counts."""
        return {"roi": self.roi, "no_go": list(self.no_go), "allowed_pixels": int((self.codes == ALLOWED).sum()),
                "outside_roi_pixels": int((self.codes == OUTSIDE_ROI).sum()),
                "no_go_pixels": int((self.codes == NO_GO).sum())}


def route_crossing(indices: np.ndarray, no_go: np.ndarray, step: float = 0.25) -> dict[str, Any]:
    """How far a straight-line stage route through grid ``indices`` runs over no-go pixels.

    Each leg between consecutive points is sampled every ``step`` pixels; a sample counts as over the region
    when the pixel whose centre is nearest is no-go. Points themselves are never no-go for a scan that honours
    its regions, so what is reported is the travel between them.

    Parameters
    ----------
    indices : (n, 2) int array
        Grid indices ``(iy, ix)`` in visiting order.
    no_go : (ny, nx) bool array
        The no-go pixels.
    step : float
        Sampling step along each leg, in pixels.

    Returns
    -------
    dict
        ``length_px`` (route length over no-go pixels), ``legs`` (legs that cross), ``points`` (measured
        points inside no-go pixels; 0 when the regions were honoured).
    """
    idx = np.asarray(indices, dtype=np.float64).reshape(-1, 2)
    mask = np.asarray(no_go, dtype=bool)
    points = int(mask[idx[:, 0].astype(int), idx[:, 1].astype(int)].sum()) if len(idx) else 0
    if len(idx) < 2 or not mask.any():
        return {"length_px": 0.0, "legs": 0, "points": points}
    a, b = idx[:-1], idx[1:]
    lengths = np.hypot(*(b - a).T)
    n_steps = np.maximum(np.ceil(lengths / step).astype(np.int64), 1)
    leg = np.repeat(np.arange(len(a)), n_steps)
    first = np.repeat(np.cumsum(n_steps) - n_steps, n_steps)
    t = (np.arange(len(leg)) - first + 0.5) / n_steps[leg]           # midpoints of each leg's sub-steps
    pos = a[leg] + t[:, None] * (b - a)[leg]
    ny, nx = mask.shape
    over = mask[np.clip(np.rint(pos[:, 0]).astype(int), 0, ny - 1), np.clip(np.rint(pos[:, 1]).astype(int), 0, nx - 1)]
    return {"length_px": float((over * (lengths / n_steps)[leg]).sum()), "legs": int(np.unique(leg[over]).size),
            "points": points}
