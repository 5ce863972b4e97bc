"""Shared pieces that carry the conventions once: conv-norm-act, SAME padding, SE, stochastic depth."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effnet.config import ACTIVATION_NAMES, PADDINGS

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),  # a.k.a. swish
    "hardswish": lambda: nn.Hardswish(inplace=True),
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after); the odd extra pixel goes after."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d that pads like TensorFlow's ``padding="SAME"``, computed from the input size.

    Parameters and state-dict keys are those of ``nn.Conv2d``, so weights move freely between the
    two.  ``static_input_size`` fixes the padding for one input size (for export to formats that
    cannot compute it at run time).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs, padding=0)
        self.static_padding: tuple[int, int, int, int] | None = None

    def freeze_padding(self, input_hw: tuple[int, int]) -> None:
        """Compute the padding once for inputs of spatial size ``input_hw``."""
        top, bottom = same_padding(input_hw[0], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(input_hw[1], self.kernel_size[1], self.stride[1], self.dilation[1])
        self.static_padding = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.static_padding
        if pad is None:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            pad = (left, right, top, bottom)
        return super().forward(F.pad(x, pad))


def conv2d(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, groups: int = 1, bias: bool = False,
           padding: str = "symmetric") -> nn.Conv2d:
    """A conv with symmetric ``(k-1)/2`` padding, or TF SAME padding where that differs from it."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer (1, 3, 5, 7, ...), got {kernel}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if padding == "same" and stride > 1:
        # With stride 1 and an odd kernel SAME is symmetric; only strided convs need the TF rule.
        return Conv2dSame(in_ch, out_ch, kernel, stride, groups=groups, bias=bias)
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=bias)


class ConvNormAct(nn.Module):
    """Conv -> BatchNorm -> activation; the conv has no bias because the norm's shift replaces it."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        *,
        groups: int = 1,
        activation: str | None = "relu",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.conv = conv2d(in_ch, out_ch, kernel, stride, groups=groups, padding=padding)
        self.norm = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.Identity() if activation is None else make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate.

    ``channels`` is the width being gated (the expanded width inside MBConv); ``squeeze_channels``
    is computed by the caller from the *block input* channels (EfficientNet: input // 4), not from
    ``channels``: see :func:`se_squeeze_channels`.
    """

    def __init__(self, channels: int, squeeze_channels: int, activation: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)  # squeeze: global average pool
        scale = self.expand(self.act(self.reduce(scale)))  # excitation
        return x * torch.sigmoid(scale)


def stochastic_depth(x: torch.Tensor, drop_rate: float, training: bool) -> torch.Tensor:
    """Drop whole residual branches per sample ("row" mode) with probability ``drop_rate``.

    Survivors are scaled by ``1 / (1 - drop_rate)`` so the expectation is unchanged; identity in eval.
    """
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop rate must be in [0, 1), got {drop_rate}")
    if not training or drop_rate == 0.0:
        return x
    survival = 1.0 - drop_rate
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(survival)
    return x * keep / survival


class StochasticDepth(nn.Module):
    """Thin module around :func:`stochastic_depth`."""

    def __init__(self, drop_rate: float) -> None:
        super().__init__()
        stochastic_depth(torch.zeros(1), drop_rate, False)  # validate once, at build time
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.drop_rate, self.training)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}"
