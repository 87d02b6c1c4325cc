"""Building blocks: convolution blocks and a U-Net, each built from a JSON-able configuration.

A network is described by a plain dict (``{"name": "unet", "in_channels": 3, ...}``) that is stored in the
model card, so a model file says which network its weights belong to and :func:`build` rebuilds it; no
code is ever loaded from a file.

The U-Net has no normalisation layers: its output at a pixel depends only on the input around it, so
tiled inference (:mod:`fastflow.nn.tiling`) agrees with whole-image inference away from tile borders,
and a batch of one behaves as a batch of many. Inside :meth:`UNet.forward` inputs of any size get the
same reflected border on every side (``2 ** (depth - 1)`` pixels, more at the bottom and right to reach a
multiple of it) and the output is cropped back, so callers never meet a divisibility rule and an image's
edge looks the same to the network in a tile as in the whole image.
"""

from __future__ import annotations

from typing import Any

from fastflow.errors import InputError
from fastflow.nn import require_torch

torch = require_torch("fastflow.nn")
nn = torch.nn
F = torch.nn.functional

__all__ = ["ARCHITECTURES", "ConvBlock", "GatedConv2d", "UNet", "build", "count_parameters"]

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.1)}


class GatedConv2d(nn.Module):
    """A gated convolution (Yu et al., "Free-form image inpainting with gated convolution", ICCV 2019):
    ``act(conv_f(x)) * sigmoid(conv_g(x))``, so the network learns per pixel how much of each feature to
    pass, e.g. little where nothing was measured."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "silu") -> None:
        super().__init__()
        self.features = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.gate = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: Any) -> Any:
        return self.act(self.features(x)) * torch.sigmoid(self.gate(x))


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by the activation (``plain``), or two gated convolutions."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "silu", conv: str = "plain"):
        super().__init__()
        if conv == "gated":
            self.body = nn.Sequential(
                GatedConv2d(in_channels, out_channels, activation),
                GatedConv2d(out_channels, out_channels, activation),
            )
        else:
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                _ACTIVATIONS[activation](),
                nn.Conv2d(out_channels, out_channels, 3, padding=1),
                _ACTIVATIONS[activation](),
            )

    def forward(self, x: Any) -> Any:
        return self.body(x)


class UNet(nn.Module):
    """A U-Net (Ronneberger et al., 2015) without normalisation layers.

    ``depth`` levels: the first at full resolution with ``base`` channels, each further one at half the
    resolution with twice the channels (capped at ``8 * base``); average pooling down, bilinear upsampling
    and skip concatenation up, a 1x1 convolution to ``out_channels`` at the end.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output.
    base : int, optional
        Channels of the first level.
    depth : int, optional
        Number of levels (2-6); the receptive field roughly doubles with each.
    activation : str, optional
        ``relu``, ``silu``, ``gelu`` or ``leaky_relu``.
    conv : str, optional
        ``plain`` or ``gated`` convolutions.
    detached : int, optional
        The last ``detached`` output channels come from a head of their own (a 3x3 and a 1x1
        convolution) on the trunk's features with their gradient stopped: what those channels learn
        never changes the trunk. For a predicted variance, this keeps the mean as accurate as a network
        trained for the mean alone ("faithful" heteroscedastic regression, Stirn et al., AISTATS 2023).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base: int = 16,
        depth: int = 4,
        activation: str = "silu",
        conv: str = "plain",
        detached: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= int(detached) < int(out_channels):
            raise InputError(f"detached must be in [0, out_channels); got {detached!r}")
        self.config = {
            "name": "unet",
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "base": int(base),
            "depth": int(depth),
            "activation": activation,
            "conv": conv,
            "detached": int(detached),
        }
        widths = [min(base * 2**level, 8 * base) for level in range(depth)]
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(ConvBlock(channels, width, activation, conv))
            channels = width
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(ConvBlock(channels + width, width, activation, conv))
            channels = width
        self.head = nn.Conv2d(channels, out_channels - int(detached), 1)
        self.detached_head = None
        if detached:
            self.detached_head = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1), _ACTIVATIONS[activation](),
                nn.Conv2d(channels, int(detached), 1),
            )
        self.multiple = 2 ** (depth - 1)

    def forward(self, x: Any) -> Any:
        height, width = x.shape[-2:]
        margin = self.multiple  # the same reflected border on every side, whatever the size
        pad_y = margin + (-(height + 2 * margin)) % self.multiple
        pad_x = margin + (-(width + 2 * margin)) % self.multiple
        mode = "reflect" if min(height, width) > max(margin, pad_y, pad_x) else "replicate"
        x = F.pad(x, (margin, pad_x, margin, pad_y), mode=mode)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        out = self.head(x)
        if self.detached_head is not None:
            out = torch.cat([out, self.detached_head(x.detach())], dim=1)
        return out[..., margin : margin + height, margin : margin + width]


ARCHITECTURES = {"unet": UNet}
"""Networks :func:`build` can make, by the ``name`` of their configuration."""


def build(config: dict[str, Any]) -> Any:
    """The network a configuration describes (``config["name"]`` plus its constructor's arguments).

    Raises
    ------
    InputError
        If the name is unknown or an argument is not accepted.
    """
    if not isinstance(config, dict) or config.get("name") not in ARCHITECTURES:
        names = ", ".join(sorted(ARCHITECTURES))
        raise InputError(f"unknown network configuration {config!r}; known networks: {names}")
    arguments = {k: v for k, v in config.items() if k != "name"}
    if arguments.get("activation", "silu") not in _ACTIVATIONS:
        raise InputError(f"unknown activation {arguments['activation']!r}; use {', '.join(_ACTIVATIONS)}")
    if arguments.get("conv", "plain") not in ("plain", "gated"):
        raise InputError(f"unknown convolution {arguments['conv']!r}; use plain or gated")
    depth = arguments.get("depth", 4)
    if not isinstance(depth, int) or not 2 <= depth <= 6:
        raise InputError(f"depth must be an integer from 2 to 6; got {depth!r}")
    try:
        return ARCHITECTURES[config["name"]](**arguments)
    except TypeError as exc:
        raise InputError(f"bad network configuration {config!r}: {exc}") from None


def count_parameters(module: Any) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))
