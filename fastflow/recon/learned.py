"""Learned completion of partial scans, with a per-pixel uncertainty (the partial-STEM system).

:func:`learned` fills the unmeasured pixels of a scan with a small convolutional network trained on
generic, phantom and STEM-like images under masks of every scan family (:mod:`fastflow.recon.learned_data`,
:mod:`fastflow.recon.learned_training`); :func:`learned_with_uncertainty` also returns the standard
deviation of its error at each pixel, in the units of the values. It takes measurements at any positions,
any coverage and any image size: the network is fully convolutional, and large images go through it in
overlapping tiles blended smoothly (:mod:`fastflow.nn.tiling`), so memory stays bounded.

How it works
------------
1. The measured values are normalised by their mean and standard deviation, and four channels are made
   over the grid (:mod:`fastflow.recon.learned_inputs`): the linear and cubic (Delaunay) interpolations,
   the mask of measured pixels and the log-distance to the nearest measurement.
2. A U-Net (:mod:`fastflow.nn.blocks`) predicts, at each pixel, a correction to the linear guess and the log
   of a variance: the mean and variance of a Gaussian over the true value, trained by its negative
   log-likelihood.
3. The standard deviation is multiplied by a calibration factor fitted on validation images, so that the
   truth falls inside the predicted 90 % interval (``mean ± 1.645 sigma``) for 90 % of the unmeasured
   pixels there; mean and sigma are mapped back to the values' units.
4. Unless ``check=False``, the network is checked against a tenth of the measurements hidden from it
   (:mod:`fastflow.recon.learned_check`) and blended with the linear and cubic guesses by the weights
   that fit the hidden values best; where the network loses on an image unlike its training set (clean
   fine texture, wide gaps between scan lines), the blend leans on the interpolation.
5. Measured pixels keep their measured values exactly and get sigma 0 (``keep_measured=True``, the
   default); with ``keep_measured=False`` they get the network's (denoised) estimate and its sigma.

The default model ships inside the package (``fastflow/data/inpainting-default.safetensors`` and its card);
``fastflow train-recon`` rebuilds it, and ``$FASTFLOW_LEARNED_MODEL`` points every default use (scans,
flows, Dask workers) at another model file. PyTorch (``pip install 'fastflow[torch]'``) is needed here only; the
rest of fastflow works without it, and asking for ``learned`` without torch raises one clear error.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fastflow.errors import InputError
from fastflow.grid import ScanGrid
from fastflow.modelfile import ModelError
from fastflow.recon.base import Measurements, prepare_measurements
from fastflow.recon.learned_check import SelfCheck, apply_blend, guess, self_check
from fastflow.recon.learned_inputs import INPUT_CHANNELS, network_inputs

__all__ = [
    "DEFAULT_MODEL",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LearnedModel",
    "default_model_path",
    "learned",
    "learned_with_uncertainty",
]

FORMAT_NAME = "fastflow-inpainting-model"
FORMAT_VERSION = 2
"""2: the inputs hold the cubic interpolation next to the linear one (format 1, linear only, is refused: its
networks take three channels)."""
DEFAULT_MODEL = "inpainting-default.safetensors"
LOG_VARIANCE_RANGE = (-16.0, 8.0)
"""Clamp of the predicted log-variance (normalised units): keeps the likelihood finite."""
DEFAULT_TILE = 1024
"""Largest tile side of the inference: images up to 1024 px a side go through the network whole (about
twice as fast as in tiles of 256), larger ones in tiles of at most that side."""
DEFAULT_OVERLAP = 48
TILE_PIXELS = 4 * 256 * 256
"""Pixels per batch of tiles (small tiles are batched up to it; a large tile goes alone)."""


MODEL_ENV = "FASTFLOW_LEARNED_MODEL"
"""Environment variable naming the model file that ``learned`` uses when no model is given (scans, flows
and their Dask workers alike); unset, the model shipped with fastflow is used."""


def default_model_path() -> Path:
    """The model ``learned`` uses by default: ``$FASTFLOW_LEARNED_MODEL`` if set, else the shipped one."""
    chosen = os.environ.get(MODEL_ENV)
    if chosen:
        return Path(chosen)
    return Path(__file__).resolve().parent.parent / "data" / DEFAULT_MODEL


class LearnedModel:
    """A trained completion network with its calibration and model card.

    Parameters
    ----------
    network : torch.nn.Module
        A network built by :func:`fastflow.nn.blocks.build` with one input channel per
        :data:`~fastflow.recon.learned_inputs.INPUT_CHANNELS` and 2 output channels.
    card : dict, optional
        Model card.
    sigma_scale : float, optional
        Calibration factor of the predicted standard deviation.
    """

    def __init__(self, network: Any, card: dict[str, Any] | None = None, sigma_scale: float = 1.0) -> None:
        config = getattr(network, "config", {})
        if config.get("in_channels") != len(INPUT_CHANNELS) or config.get("out_channels") != 2:
            raise ModelError(
                f"a completion network takes {len(INPUT_CHANNELS)} input and 2 output channels; this one has "
                f"{config.get('in_channels')} and {config.get('out_channels')}"
            )
        if not (np.isfinite(sigma_scale) and sigma_scale > 0):
            raise ModelError(f"sigma_scale must be a positive number; got {sigma_scale!r}")
        self.network = network.eval()
        self.card = dict(card or {})
        self.sigma_scale = float(sigma_scale)

    # ------------------------------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model (safetensors weights, calibration and card)."""
        from fastflow.nn.weights import save_network

        card = {**self.card, "input_channels": list(INPUT_CHANNELS), "outputs": ["mean_correction", "log_variance"]}
        return save_network(path, self.network, kind=FORMAT_NAME, version=FORMAT_VERSION, card=card,
                            extra_arrays={"calibration.sigma_scale": np.array(self.sigma_scale)})

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> LearnedModel:
        """Read a model file (the shipped default when ``path`` is None).

        Raises
        ------
        ModelError
            If the file is missing, not a fastflow completion model, damaged or edited.
        TorchMissingError
            If torch is not installed.
        """
        from fastflow.nn.weights import load_network

        name = os.fspath(default_model_path() if path is None else path)
        network, model_file = load_network(name, kind=FORMAT_NAME, versions=(FORMAT_VERSION,),
                                           what="learned reconstruction model")
        scale = model_file.arrays.get("calibration.sigma_scale")
        if scale is None or np.shape(scale) != ():
            raise ModelError(f"{name} is not a valid learned reconstruction model: no calibration.sigma_scale")
        return cls(network, card=model_file.card, sigma_scale=float(scale))

    @property
    def content_hash(self) -> str:
        """The hash of the stored arrays (the card's ``content_hash``), or ``""`` for an unsaved model."""
        return str(self.card.get("content_hash", ""))

    # ------------------------------------------------------------------------------------- prediction

    def predict_normalised(
        self, inputs: np.ndarray, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
        device: str = "cpu", batch: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and uncalibrated sigma in normalised units, from the input channels ``(4, y, x)``."""
        from fastflow.nn import require_torch, resolve_device
        from fastflow.nn.tiling import tiled_apply

        torch = require_torch("the 'learned' reconstruction")
        dev = resolve_device(device)
        # channels-last layout: about twice as fast on the CPU here (oneDNN), the same numbers
        net = self.network.to(dev, memory_format=torch.channels_last)
        lo, hi = LOG_VARIANCE_RANGE

        def run(tiles: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).to(dev)
                y = net(x.contiguous(memory_format=torch.channels_last))
                mean = x[:, 0] + y[:, 0]
                sigma = torch.exp(0.5 * y[:, 1].clamp(lo, hi))
                return torch.stack([mean, sigma], dim=1).cpu().numpy()

        if batch is None:
            batch = max(1, TILE_PIXELS // (tile * tile))
        out = tiled_apply(run, inputs, 2, tile=tile, overlap=overlap, batch=batch)
        return out[0], out[1]

    def complete(
        self,
        measurements: Measurements,
        *,
        keep_measured: bool = True,
        check: bool = True,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        device: str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray]:
        """The completed image and its standard deviation (float64, in the values' units).

        See :meth:`complete_checked`, which also returns what the self-check found.
        """
        image, std, _ = self.complete_checked(measurements, keep_measured=keep_measured, check=check, tile=tile,
                                              overlap=overlap, device=device)
        return image, std

    def complete_checked(
        self,
        measurements: Measurements,
        *,
        keep_measured: bool = True,
        check: bool = True,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        device: str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray, SelfCheck]:
        """The completed image, its standard deviation and the self-check.

        With ``check`` (the default) the network is first checked against hidden measurements
        (:func:`fastflow.recon.learned_check.self_check`) and blended with the linear, cubic and biharmonic
        interpolations by the weights the check found; without it, or when too few pixels could be hidden,
        the network's mean is used as it is.
        """
        m = measurements
        if m.measured.all() and keep_measured:
            return m.filled(), np.zeros(m.grid.shape), SelfCheck()
        predict = {"tile": tile, "overlap": overlap, "device": device}
        inputs, loc, scale = network_inputs(m)
        mean, sigma = self.predict_normalised(inputs, **predict)
        found = self_check(self, m, **predict) if check else SelfCheck()
        if found.network_weight < 1.0 or found.border_weights[0] < 1.0:
            mean = apply_blend(found, mean, lambda name: guess(name, m, inputs, loc, scale))
        image = mean.astype(np.float64) * scale + loc
        std = sigma.astype(np.float64) * (scale * self.sigma_scale)
        if keep_measured:
            image.ravel()[m.flat] = m.values
            std.ravel()[m.flat] = 0.0
        return image, std, found

    def describe(self) -> str:
        """A few human-readable lines about the model."""
        card = self.card
        arch = card.get("architecture", {})
        lines = [f"learned reconstruction model {self.content_hash[:12] or '(unsaved)'}: "
                 f"{arch.get('name', '?')} base {arch.get('base', '?')} depth {arch.get('depth', '?')} "
                 f"({arch.get('conv', 'plain')} convolutions), sigma x {self.sigma_scale:.3f}"]
        for key in ("training", "validation", "hardware", "created"):
            if key in card:
                value = card[key]
                if isinstance(value, dict):
                    value = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, (list, dict)))
                lines.append(f"{key}: {value}")
        return "\n".join(lines)


@cache
def _loaded(path: str, mtime: float) -> LearnedModel:
    return LearnedModel.load(path)


def _default_model() -> LearnedModel:
    """The default model, read once per file version (a changed file or variable is read again)."""
    path = default_model_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = -1.0  # missing: LearnedModel.load says so
    return _loaded(str(path), mtime)


def _resolve(model: LearnedModel | str | os.PathLike[str] | None) -> LearnedModel:
    from fastflow.nn import require_torch

    require_torch("the 'learned' reconstruction")
    if model is None:
        return _default_model()
    if isinstance(model, LearnedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return LearnedModel.load(model)
    raise InputError(f"model must be a LearnedModel, a model file path or None; got {type(model).__name__}")


def learned_with_uncertainty(
    grid: ScanGrid,
    indices: Any,
    values: Any,
    model: LearnedModel | str | os.PathLike[str] | None = None,
    keep_measured: bool = True,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    device: str = "cpu",
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Learned completion and its per-pixel standard deviation.

    Parameters
    ----------
    grid : ScanGrid
        The scan grid.
    indices : array_like
        ``(n, 2)`` integer grid indices ``(iy, ix)`` of the measurements (any positions).
    values : array_like
        ``(n,)`` measured values; pixels measured more than once are averaged.
    model : LearnedModel, path or None, optional
        The model; None uses the one shipped with fastflow.
    keep_measured : bool, optional
        Keep measured values exactly (sigma 0 there); False returns the network's estimate everywhere.
    tile, overlap : int, optional
        Tile side and overlap of the tiled inference, in pixels.
    device : str, optional
        ``cpu``, ``cuda`` or ``auto``.
    check : bool, optional
        Check the network against a tenth of the measurements hidden from it and blend it with the linear,
        cubic and biharmonic interpolations by the weights that fit them best
        (:mod:`fastflow.recon.learned_check`); False uses the network alone.

    Returns
    -------
    image : numpy.ndarray
        float64 ``grid.shape``.
    sigma : numpy.ndarray
        float64 ``grid.shape``: the standard deviation of the error, in the values' units.

    Raises
    ------
    InputError
        If the measurements or options are invalid.
    TorchMissingError
        If torch is not installed.
    ModelError
        If the model file is invalid.
    """
    m = prepare_measurements(grid, indices, values)
    return _resolve(model).complete(m, keep_measured=bool(keep_measured), check=bool(check), tile=int(tile),
                                    overlap=int(overlap), device=device)


def learned(
    grid: ScanGrid,
    indices: Any,
    values: Any,
    model: LearnedModel | str | os.PathLike[str] | None = None,
    keep_measured: bool = True,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    device: str = "cpu",
    check: bool = True,
) -> np.ndarray:
    """Learned completion by a convolutional network (needs torch; see :func:`learned_with_uncertainty`).

    Examples
    --------
    >>> from fastflow.grid import ScanGrid
    >>> image = learned(ScanGrid((32, 48)), [[0, 0], [31, 47], [10, 20]], [0.0, 1.0, 0.5])  # doctest: +SKIP
    """
    image, _ = learned_with_uncertainty(grid, indices, values, model=model, keep_measured=keep_measured,
                                        tile=tile, overlap=overlap, device=device, check=check)
    return image
