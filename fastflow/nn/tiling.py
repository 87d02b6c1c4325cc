"""Inference on images of any size by overlapping tiles, blended without seams, in bounded memory.

:func:`fit_tile` picks each axis's tile side: as few tiles as a largest side ``tile`` allows, each no larger
than covering the axis needs (so little is computed twice); :func:`tile_starts` places them along the axis
with at least ``overlap`` pixels shared by neighbours, the last one flush with the end.
:func:`blend_window` weights each tile's output by a ramp that rises linearly across the overlap (and is
flat at the image's own borders), so neighbouring tiles fade into one another and the weights sum to one
everywhere. :func:`tiled_apply` runs a function tile by tile on a ``(channels, y, x)`` array; only one batch
of tiles is in memory at a time, besides the output.

A network's output near a tile border lacks context; the ramp gives that border a small weight, and an
overlap larger than the zone the border affects makes tiled output agree with whole-image output
(``tests/test_nn.py`` measures the difference).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fastflow.errors import InputError

__all__ = ["blend_window", "fit_tile", "tile_starts", "tiled_apply"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length`` with at least ``overlap`` shared.

    Examples
    --------
    >>> tile_starts(10, 4, 1)
    [0, 3, 6]
    >>> tile_starts(3, 8, 2)
    [0]
    """
    if tile >= length:
        return [0]
    stride = tile - overlap
    count = int(np.ceil((length - tile) / stride)) + 1
    positions = np.linspace(0, length - tile, count)
    return [int(round(p)) for p in positions]


def fit_tile(length: int, tile: int, overlap: int, multiple: int = 16) -> int:
    """The tile side for an axis of ``length``: as few tiles as sides of at most ``tile`` allow, each as
    small as covering the axis with ``overlap`` between neighbours needs (rounded up to ``multiple``).

    Examples
    --------
    >>> fit_tile(600, 1024, 48)  # one tile
    600
    >>> fit_tile(2048, 1024, 48)  # three tiles of 720 instead of three of 1024
    720
    """
    if length <= tile:
        return length
    count = -(-(length - overlap) // (tile - overlap))
    side = -(-(length + (count - 1) * overlap) // count)
    return min(tile, -(-side // multiple) * multiple)


def _ramp(size: int, start: int, length: int, overlap: int) -> np.ndarray:
    """1-D weights of a tile ``[start, start + size)`` on an axis of ``length``: a linear rise over
    ``overlap`` pixels on each side that borders another tile, flat 1 at the image's ends."""
    weights = np.ones(size, dtype=np.float64)
    ramp = min(overlap, size // 2)
    if ramp > 0:
        rise = (np.arange(ramp) + 0.5) / ramp
        if start > 0:
            weights[:ramp] = rise
        if start + size < length:
            weights[size - ramp :] = rise[::-1]
    return weights


def blend_window(shape: tuple[int, int], origin: tuple[int, int], image_shape: tuple[int, int],
                 overlap: int) -> np.ndarray:
    """2-D blending weights of one tile (outer product of the two axes' ramps)."""
    wy = _ramp(shape[0], origin[0], image_shape[0], overlap)
    wx = _ramp(shape[1], origin[1], image_shape[1], overlap)
    return np.outer(wy, wx)


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    out_channels: int,
    *,
    tile: int = 256,
    overlap: int = 48,
    batch: int = 4,
    dtype: type = np.float32,
) -> np.ndarray:
    """Apply ``fn`` to ``inputs`` tile by tile and blend the results.

    Parameters
    ----------
    fn : callable
        ``fn(tiles) -> outputs``: ``(b, channels, h, w)`` to ``(b, out_channels, h, w)`` numpy arrays.
    inputs : numpy.ndarray
        ``(channels, y, x)``.
    out_channels : int
        Channels of ``fn``'s output.
    tile : int, optional
        Largest tile side in pixels; each axis gets the side :func:`fit_tile` picks (an axis no longer
        than ``tile`` is one tile).
    overlap : int, optional
        Pixels shared by neighbouring tiles (at least 0, less than ``tile``).
    batch : int, optional
        Tiles per call of ``fn`` (tiles at the image's edge may be smaller and go alone).
    dtype : numpy dtype, optional
        Of the output.

    Returns
    -------
    numpy.ndarray
        ``(out_channels, y, x)``.

    Raises
    ------
    InputError
        If the arguments are inconsistent.
    """
    if inputs.ndim != 3:
        raise InputError(f"tiled inputs must be (channels, y, x); got shape {inputs.shape}")
    if not (isinstance(tile, int) and tile >= 8) or not (isinstance(overlap, int) and 0 <= overlap < tile):
        raise InputError(f"tile must be an integer >= 8 and overlap in [0, tile); got {tile}, {overlap}")
    _, ny, nx = inputs.shape
    out = np.zeros((out_channels, ny, nx), dtype=np.float64 if dtype == np.float64 else np.float32)
    total = np.zeros((ny, nx), dtype=np.float64)
    tile_y, tile_x = fit_tile(ny, tile, overlap), fit_tile(nx, tile, overlap)
    placements = [(y0, x0) for y0 in tile_starts(ny, tile_y, overlap) for x0 in tile_starts(nx, tile_x, overlap)]
    pending: list[tuple[int, int, int, int]] = []

    def flush() -> None:
        if not pending:
            return
        stack = np.stack([inputs[:, y0:y1, x0:x1] for y0, y1, x0, x1 in pending])
        result = np.asarray(fn(stack))
        if result.shape[:2] != (len(pending), out_channels) or result.shape[2:] != stack.shape[2:]:
            raise InputError(f"the tile function returned shape {result.shape} for tiles {stack.shape}")
        for (y0, y1, x0, x1), values in zip(pending, result, strict=True):
            window = blend_window((y1 - y0, x1 - x0), (y0, x0), (ny, nx), overlap)
            out[:, y0:y1, x0:x1] += values * window
            total[y0:y1, x0:x1] += window
        pending.clear()

    for y0, x0 in placements:
        y1, x1 = min(ny, y0 + tile_y), min(nx, x0 + tile_x)
        if pending and (pending[0][1] - pending[0][0], pending[0][3] - pending[0][2]) != (y1 - y0, x1 - x0):
            flush()
        pending.append((y0, y1, x0, x1))
        if len(pending) >= max(1, batch):
            flush()
    flush()
    out /= total
    return out.astype(dtype, copy=False)
