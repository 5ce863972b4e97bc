"""One class per paper block, each built from its :class:`~effnet.plan.BlockSpec`; ``forward`` reads like the paper's figure."""

from __future__ import annotations

import torch
from torch import nn

from effnet.layers import ConvNormAct, SqueezeExcitation, StochasticDepth
from effnet.plan import BlockSpec
from effnet.tables import BlockType


class Block(nn.Module):
    """What every block shares: its spec (checked against the class's block type) and its convs' BN settings."""

    block_type: BlockType

    def __init__(self, spec: BlockSpec, *, bn_momentum: float = 0.1) -> None:
        super().__init__()
        _check_type(spec, self.block_type)
        self.spec = spec
        self.norm_args = {"bn_eps": spec.bn_eps, "bn_momentum": bn_momentum}

    def shortcut(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out`` plus the block's input, through stochastic depth, where the spec has a shortcut."""
        return self.drop_path(out) + x if self.spec.residual else out


class DepthwiseSeparable(Block):
    """MobileNetV1's depthwise-separable convolution (Howard et al. 2017, Fig. 3).

    depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN -> act.  Cost ``K*K*C_in*H*W + C_in*C_out*H*W``
    instead of ``K*K*C_in*C_out*H*W``.
    """

    block_type = BlockType.DEPTHWISE_SEPARABLE

    def __init__(self, spec: BlockSpec, *, bn_momentum: float = 0.1) -> None:
        super().__init__(spec, bn_momentum=bn_momentum)
        s, norm = spec, self.norm_args
        self.depthwise = ConvNormAct(s.in_channels, s.in_channels, s.kernel, s.stride, groups=s.in_channels,
                                     activation=s.activation, padding=s.padding, **norm)
        self.pointwise = ConvNormAct(s.in_channels, s.out_channels, 1, activation=s.activation, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MBConv(Block):
    """Inverted residual with linear bottleneck (MobileNetV2 Fig. 3b), "MBConv" in EfficientNet.

    expand 1x1 (skipped when the expansion ratio is 1) -> depthwise kxk -> squeeze-excitation
    (optional) -> project 1x1 with *no* activation (the linear bottleneck) -> stochastic depth,
    plus the shortcut when stride is 1 and the channel count is unchanged.
    """

    block_type = BlockType.MBCONV

    def __init__(self, spec: BlockSpec, *, bn_momentum: float = 0.1) -> None:
        super().__init__(spec, bn_momentum=bn_momentum)
        s, norm = spec, self.norm_args
        mid = s.mid_channels
        self.expand = (ConvNormAct(s.in_channels, mid, 1, activation=s.activation, **norm)
                       if s.has_expand else nn.Identity())
        self.depthwise = ConvNormAct(mid, mid, s.kernel, s.stride, groups=mid, activation=s.activation,
                                     padding=s.padding, **norm)
        self.se = SqueezeExcitation(mid, s.se_channels, s.activation) if s.has_se else nn.Identity()
        self.project = ConvNormAct(mid, s.out_channels, 1, activation=None, **norm)
        self.drop_path = StochasticDepth(s.drop_path_rate) if s.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(self.project(self.se(self.depthwise(self.expand(x)))), x)


class FusedMBConv(Block):
    """Fused-MBConv (EfficientNetV2 Fig. 2): one kxk conv replaces MBConv's expand 1x1 + depthwise.

    expand kxk -> squeeze-excitation (optional; EfficientNetV2 uses none) -> project 1x1, linear.
    With expansion ratio 1 the block is a single kxk conv -> BN -> act to the output width.
    """

    block_type = BlockType.FUSED_MBCONV

    def __init__(self, spec: BlockSpec, *, bn_momentum: float = 0.1) -> None:
        super().__init__(spec, bn_momentum=bn_momentum)
        s, norm = spec, self.norm_args
        mid = s.mid_channels
        self.expand = ConvNormAct(s.in_channels, mid, s.kernel, s.stride, activation=s.activation,
                                  padding=s.padding, **norm)
        self.se = SqueezeExcitation(mid, s.se_channels, s.activation) if s.has_se else nn.Identity()
        self.project = (ConvNormAct(mid, s.out_channels, 1, activation=None, **norm)
                        if s.has_project else nn.Identity())
        self.drop_path = StochasticDepth(s.drop_path_rate) if s.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(self.project(self.se(self.expand(x))), x)


BLOCKS: dict[BlockType, type[nn.Module]] = {
    BlockType.DEPTHWISE_SEPARABLE: DepthwiseSeparable,
    BlockType.MBCONV: MBConv,
    BlockType.FUSED_MBCONV: FusedMBConv,
}


def build_block(spec: BlockSpec, *, bn_momentum: float = 0.1) -> nn.Module:
    """The module for one :class:`BlockSpec`."""
    return BLOCKS[spec.block](spec, bn_momentum=bn_momentum)


def _check_type(spec: BlockSpec, expected: BlockType) -> None:
    if not isinstance(spec, BlockSpec) or spec.block is not expected:
        got = spec.block.value if isinstance(spec, BlockSpec) else type(spec).__name__
        raise TypeError(f"expected a BlockSpec of type {expected.value}, got {got} "
                        "(build one with effnet.plan.block_spec)")
