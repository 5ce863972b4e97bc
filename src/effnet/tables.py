"""The papers' architecture tables, as data.

Each family keeps its table in the paper's own columns (a frozen dataclass per row, citing the
table it reproduces).  ``to_stage()`` turns a row into the one row type the model builder reads,
:class:`Stage`, so every family is built by the same code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BlockType(enum.Enum):
    """Which paper block a stage is made of."""

    DEPTHWISE_SEPARABLE = "depthwise_separable"  # MobileNetV1, Fig. 3
    MBCONV = "mbconv"  # inverted residual: MobileNetV2 Fig. 3b, EfficientNet MBConv
    FUSED_MBCONV = "fused_mbconv"  # EfficientNetV2 Fig. 2


@dataclass(frozen=True)
class Stage:
    """One stage of identical blocks; the first block carries the stride.

    This is the common row every family's table is turned into (EfficientNet Table 1 column order).
    """

    block: BlockType
    expand_ratio: float
    kernel: int
    stride: int
    out_channels: int
    repeats: int
    se_ratio: float = 0.0  # of the *block input* channels; 0 means no squeeze-excitation

    def to_dict(self) -> dict:
        return {**self.__dict__, "block": self.block.value}

    @staticmethod
    def from_dict(d: dict) -> Stage:
        return Stage(**{**d, "block": BlockType(d["block"])})


@dataclass(frozen=True)
class NetSpec:
    """A whole network as a table: stem conv, stages, 1x1 head conv (``None``: no head conv)."""

    stem_channels: int
    stages: tuple[Stage, ...]
    head_channels: int | None
    stem_kernel: int = 3
    stem_stride: int = 2

    @property
    def output_stride(self) -> int:
        """Input pixels per pixel of the last feature map (32 for every zoo model)."""
        stride = self.stem_stride
        for stage in self.stages:
            stride *= stage.stride
        return stride

    def to_dict(self) -> dict:
        return {**self.__dict__, "stages": [s.to_dict() for s in self.stages]}

    @staticmethod
    def from_dict(d: dict) -> NetSpec:
        return NetSpec(**{**d, "stages": tuple(Stage.from_dict(s) for s in d["stages"])})


# --- MobileNetV1 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepthwiseSeparableRow:
    """MobileNetV1 Table 1 ("Conv dw / s" + "Conv / s1" pairs), consecutive equal rows merged."""

    stride: int
    out_channels: int  # filters of the pointwise conv
    repeats: int

    def to_stage(self) -> Stage:
        return Stage(BlockType.DEPTHWISE_SEPARABLE, 1, 3, self.stride, self.out_channels, self.repeats)


# Howard et al. 2017, Table 1.  The paper prints the last depthwise layer as "s2" on a 7x7 input;
# that is a typo, every released model (TF-slim, Keras) uses stride 1 there, as we do.
MOBILENET_V1 = NetSpec(
    stem_channels=32,
    stages=tuple(
        row.to_stage()
        for row in (
            DepthwiseSeparableRow(1, 64, 1),
            DepthwiseSeparableRow(2, 128, 2),
            DepthwiseSeparableRow(2, 256, 2),
            DepthwiseSeparableRow(2, 512, 6),
            DepthwiseSeparableRow(2, 1024, 2),
        )
    ),
    head_channels=None,
)


# --- MobileNetV2 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvertedResidualRow:
    """MobileNetV2 Table 2: expansion t, output channels c, repeats n, stride s (kernel 3, no SE)."""

    t: int
    c: int
    n: int
    s: int

    def to_stage(self) -> Stage:
        return Stage(BlockType.MBCONV, self.t, 3, self.s, self.c, self.n)


# Sandler et al. 2018, Table 2: conv2d 3x3 32 s2; the bottlenecks below; conv2d 1x1 1280.
MOBILENET_V2 = NetSpec(
    stem_channels=32,
    stages=tuple(
        row.to_stage()
        for row in (
            # t, c, n, s
            InvertedResidualRow(1, 16, 1, 1),
            InvertedResidualRow(6, 24, 2, 2),
            InvertedResidualRow(6, 32, 3, 2),
            InvertedResidualRow(6, 64, 4, 2),
            InvertedResidualRow(6, 96, 3, 1),
            InvertedResidualRow(6, 160, 3, 2),
            InvertedResidualRow(6, 320, 1, 1),
        )
    ),
    head_channels=1280,
)


# --- EfficientNet ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MBConvRow:
    """EfficientNet Table 1: MBConv{expand} k{kernel}, stride, channels, layers, SE ratio."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int
    se_ratio: float

    def to_stage(self) -> Stage:
        return Stage(BlockType.MBCONV, self.expand_ratio, self.kernel, self.stride, self.out_channels,
                     self.repeats, self.se_ratio)


def _efficientnet_b0(se_ratio: float) -> NetSpec:
    # Tan & Le 2019, Table 1 (EfficientNet-B0); strides from the official implementation.
    rows = (
        MBConvRow(1, 3, 1, 16, 1, se_ratio),
        MBConvRow(6, 3, 2, 24, 2, se_ratio),
        MBConvRow(6, 5, 2, 40, 2, se_ratio),
        MBConvRow(6, 3, 2, 80, 3, se_ratio),
        MBConvRow(6, 5, 1, 112, 3, se_ratio),
        MBConvRow(6, 5, 2, 192, 4, se_ratio),
        MBConvRow(6, 3, 1, 320, 1, se_ratio),
    )
    return NetSpec(stem_channels=32, stages=tuple(r.to_stage() for r in rows), head_channels=1280)


EFFICIENTNET_B0 = _efficientnet_b0(se_ratio=0.25)
# EfficientNet-Lite (official `efficientnet/lite`): B0's table without squeeze-excitation.
EFFICIENTNET_LITE0 = _efficientnet_b0(se_ratio=0.0)


# --- EfficientNetV2 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class V2Row:
    """EfficientNetV2 Table 4: operator (block type, expansion, kernel), stride, channels, layers."""

    block: BlockType
    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int

    def to_stage(self) -> Stage:
        # SE only in MBConv stages (paper Table 4; notes: "as the block used in MobileNetV3").
        se_ratio = 0.25 if self.block is BlockType.MBCONV else 0.0
        return Stage(self.block, self.expand_ratio, self.kernel, self.stride, self.out_channels,
                     self.repeats, se_ratio)


_F, _M = BlockType.FUSED_MBCONV, BlockType.MBCONV


def _v2(stem: int, channels_repeats: tuple[tuple[int, int], ...]) -> NetSpec:
    # Shared operator column of Table 4 / the official configs: stages 1-3 Fused-MBConv (e1, e4, e4),
    # stage 4 MBConv e4 s2, stages 5-7 MBConv e6 with strides 1, 2, 1; all kernels 3x3.
    operators = ((_F, 1, 1), (_F, 4, 2), (_F, 4, 2), (_M, 4, 2), (_M, 6, 1), (_M, 6, 2), (_M, 6, 1))
    rows = tuple(
        V2Row(block, expand, 3, stride, c, n)
        for (block, expand, stride), (c, n) in zip(operators, channels_repeats)
    )
    return NetSpec(stem_channels=stem, stages=tuple(r.to_stage() for r in rows), head_channels=1280)


# Tan & Le 2021, Table 4 (S) and the official `effnetv2_configs.py` (B0, M, L, XL): (channels, layers).
EFFICIENTNET_V2 = {
    "b0": _v2(32, ((16, 1), (32, 2), (48, 2), (96, 3), (112, 5), (192, 8))),
    "s": _v2(24, ((24, 2), (48, 4), (64, 4), (128, 6), (160, 9), (256, 15))),
    "m": _v2(24, ((24, 3), (48, 5), (80, 5), (160, 7), (176, 14), (304, 18), (512, 5))),
    "l": _v2(32, ((32, 4), (64, 7), (96, 7), (192, 10), (224, 19), (384, 25), (640, 7))),
    "xl": _v2(32, ((32, 4), (64, 8), (96, 8), (192, 16), (256, 24), (512, 32), (640, 8))),
}
