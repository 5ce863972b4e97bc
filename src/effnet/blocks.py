"""One class per paper block; each ``forward`` reads like the paper's figure."""

from __future__ import annotations

import torch
from torch import nn

from effnet.layers import ConvNormAct, SqueezeExcitation, StochasticDepth, se_squeeze_channels


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's depthwise-separable convolution (Howard et al. 2017, Fig. 3).

    depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN -> act.  Cost ``K*K*C_in*H*W + C_in*C_out*H*W``
    instead of ``K*K*C_in*C_out*H*W``.
    """

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1, activation: str = "relu6",
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, padding: str = "symmetric") -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.depthwise = ConvNormAct(in_ch, in_ch, kernel, stride, groups=in_ch, activation=activation,
                                     padding=padding, **norm)
        self.pointwise = ConvNormAct(in_ch, out_ch, 1, activation=activation, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MBConv(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2 Fig. 3b), "MBConv" in EfficientNet.

    expand 1x1 (skipped when the expansion ratio is 1) -> depthwise kxk -> squeeze-excitation
    (optional) -> project 1x1 with *no* activation (the linear bottleneck) -> stochastic depth,
    plus the shortcut when stride is 1 and the channel count is unchanged.
    """

    def __init__(self, in_ch: int, out_ch: int, *, expand_ratio: float, kernel: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, activation: str = "relu6", drop_path_rate: float = 0.0,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, padding: str = "symmetric") -> None:
        super().__init__()
        _check_expand_ratio(expand_ratio)
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        mid_ch = round(in_ch * expand_ratio)
        self.has_residual = stride == 1 and in_ch == out_ch
        self.expand = (ConvNormAct(in_ch, mid_ch, 1, activation=activation, **norm)
                       if expand_ratio != 1 else nn.Identity())
        self.depthwise = ConvNormAct(mid_ch, mid_ch, kernel, stride, groups=mid_ch, activation=activation,
                                     padding=padding, **norm)
        self.se = (SqueezeExcitation(mid_ch, se_squeeze_channels(in_ch, se_ratio), activation)
                   if se_ratio > 0 else nn.Identity())
        self.project = ConvNormAct(mid_ch, out_ch, 1, activation=None, **norm)
        self.drop_path = StochasticDepth(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.has_residual:
            out = self.drop_path(out) + x
        return out


class FusedMBConv(nn.Module):
    """Fused-MBConv (EfficientNetV2 Fig. 2): one kxk conv replaces MBConv's expand 1x1 + depthwise.

    expand kxk -> squeeze-excitation (optional; EfficientNetV2 uses none) -> project 1x1, linear.
    With expansion ratio 1 the block is a single kxk conv -> BN -> act to the output width.
    """

    def __init__(self, in_ch: int, out_ch: int, *, expand_ratio: float, kernel: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, activation: str = "silu", drop_path_rate: float = 0.0,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, padding: str = "symmetric") -> None:
        super().__init__()
        _check_expand_ratio(expand_ratio)
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.has_residual = stride == 1 and in_ch == out_ch
        fused = expand_ratio == 1
        mid_ch = out_ch if fused else round(in_ch * expand_ratio)
        self.expand = ConvNormAct(in_ch, mid_ch, kernel, stride, activation=activation, padding=padding, **norm)
        self.se = (SqueezeExcitation(mid_ch, se_squeeze_channels(in_ch, se_ratio), activation)
                   if se_ratio > 0 else nn.Identity())
        self.project = nn.Identity() if fused else ConvNormAct(mid_ch, out_ch, 1, activation=None, **norm)
        self.drop_path = StochasticDepth(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.expand(x)))
        if self.has_residual:
            out = self.drop_path(out) + x
        return out


def _check_expand_ratio(expand_ratio: float) -> None:
    if not expand_ratio >= 1:
        raise ValueError(f"expand_ratio must be >= 1, got {expand_ratio}")
