"""What the learned reconstruction's network sees: normalised, interpolated measurements and their layout.

For a set of measured pixels, :func:`network_inputs` makes three channels over the whole grid:

``linear``
    The piecewise-linear interpolation on the measurements' Delaunay triangulation
    (:mod:`fastflow.recon.linear`), normalised by the measured values' mean and standard deviation. It
    carries the measured values (exact at measured pixels) and a good first guess everywhere else (on
    smooth images close to biharmonic inpainting), so the network learns a correction, at any coverage.
``mask``
    1 at measured pixels, 0 elsewhere.
``log_distance``
    ``log(1 + d)`` of the Euclidean distance ``d`` (pixels) to the nearest measurement: how far each
    guess reaches.

The same function makes the inputs of the training crops (on their whole source image) and of a user's
scan, so training and use agree. Numpy and scipy only; no torch here.

Examples
--------
>>> from fastflow.grid import ScanGrid
>>> from fastflow.recon.base import prepare_measurements
>>> m = prepare_measurements(ScanGrid((4, 5)), [[0, 0], [3, 4]], [2.0, 4.0])
>>> x, loc, scale = network_inputs(m)
>>> x.shape, loc, scale
((3, 4, 5), 3.0, 1.0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fastflow.recon.base import Measurements
from fastflow.recon.linear import linear_from_measurements

__all__ = ["INPUT_CHANNELS", "network_inputs", "normalisation"]

INPUT_CHANNELS = ("linear", "mask", "log_distance")
"""Names of the input channels, in order."""

_MIN_RELATIVE_SCALE = 1e-3
_MIN_SCALE = 1e-12


def normalisation(values: np.ndarray) -> tuple[float, float]:
    """``(loc, scale)`` that map measured values to zero mean and unit spread.

    ``loc`` is the mean, ``scale`` the standard deviation, floored at 1e-3 of the mean's magnitude (and at
    1e-12) so that nearly constant measurements are not blown up into noise.
    """
    vals = np.asarray(values, dtype=np.float64)
    loc = float(vals.mean())
    spread = float(vals.std())
    return loc, max(spread, _MIN_RELATIVE_SCALE * abs(loc), _MIN_SCALE)


def network_inputs(measurements: Measurements, dtype: type = np.float32) -> tuple[np.ndarray, float, float]:
    """The network's input channels (:data:`INPUT_CHANNELS`) for one set of measurements.

    Parameters
    ----------
    measurements : Measurements
        Distinct measured pixels and their values (:func:`fastflow.recon.base.prepare_measurements`).
    dtype : numpy dtype, optional
        Of the returned channels.

    Returns
    -------
    inputs : numpy.ndarray
        ``(3, y, x)`` channels.
    loc, scale : float
        The normalisation (:func:`normalisation`) of the measured values: ``linear = (value - loc) / scale``.
    """
    m = measurements
    loc, scale = normalisation(m.values)
    inputs = np.empty((3, *m.grid.shape), dtype=dtype)
    inputs[0] = linear_from_measurements(m, (m.values - loc) / scale)
    inputs[1] = m.measured
    inputs[2] = np.log1p(ndimage.distance_transform_edt(~m.measured))
    return inputs, loc, scale
