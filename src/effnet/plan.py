"""The block plan: a network's table expanded once into one record per layer group.

What a block *is* -- its widths, stride, squeeze-excitation width, shortcut and drop-path rate --
is derived here and nowhere else.  The model builder, the weight converter, the profiler, the
runtime's graph lowering, the fused kernels and the search all read these records instead of
working the facts out again from module attributes.  Pure data: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from effnet.config import ModelConfig
from effnet.tables import BlockType


def se_squeeze_channels(block_in_channels: int, se_ratio: float) -> int:
    """SE bottleneck width: ``se_ratio`` of the block's *input* channels (not its expanded width); 0 = no SE."""
    return max(1, int(block_in_channels * se_ratio)) if se_ratio > 0 else 0


@dataclass(frozen=True)
class StemSpec:
    """The first conv: kxk, stride 2, BN, activation."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    activation: str
    padding: str
    bn_eps: float


@dataclass(frozen=True)
class BlockSpec:
    """One block of the network, with every derived fact spelled out."""

    index: int  # position among all blocks, from 0
    stage: int  # stage (table row) it belongs to, from 0
    block: BlockType
    expand_ratio: float  # the table's expansion ratio (1 for depthwise-separable)
    in_channels: int
    mid_channels: int  # expanded width (MBConv/Fused-MBConv); the input width for a depthwise-separable
    out_channels: int
    kernel: int
    stride: int
    se_channels: int  # squeeze width of squeeze-excitation; 0 = no SE
    residual: bool  # shortcut: stride 1 and in_channels == out_channels (never for depthwise-separable)
    drop_path_rate: float  # stochastic-depth drop rate of the residual branch (0 without a shortcut)
    activation: str
    padding: str
    bn_eps: float
    position: int = 0  # position within its stage, from 0 (the module is model.stages[stage][position])

    @property
    def has_expand(self) -> bool:
        """MBConv: is there a 1x1 expansion conv?  (No when the expansion ratio is 1.)"""
        return self.block is BlockType.MBCONV and self.expand_ratio != 1

    @property
    def has_project(self) -> bool:
        """Is there a 1x1 projection conv?  (Fused-MBConv with ratio 1 is a single kxk conv.)"""
        return not (self.block is BlockType.FUSED_MBCONV and self.expand_ratio == 1)

    @property
    def has_se(self) -> bool:
        return self.se_channels > 0


@dataclass(frozen=True)
class HeadSpec:
    """After the last block: optional 1x1 conv + BN + act, global average pool, dropout, linear."""

    in_channels: int
    conv_channels: int | None  # width of the 1x1 head conv; None = no head conv (MobileNetV1)
    num_features: int  # width of the pooled feature vector
    num_classes: int  # 0 = no classifier
    drop_rate: float
    activation: str
    bn_eps: float


@dataclass(frozen=True)
class Plan:
    """Stem, blocks and head of one network, in execution order."""

    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec

    @property
    def num_stages(self) -> int:
        return self.blocks[-1].stage + 1 if self.blocks else 0

    def stage_blocks(self, stage: int) -> tuple[BlockSpec, ...]:
        return tuple(b for b in self.blocks if b.stage == stage)

    def stage_strides(self) -> list[int]:
        """Output stride (input pixels per output pixel) after each stage."""
        strides, stride = [], self.stem.stride
        for s in range(self.num_stages):
            for b in self.stage_blocks(s):
                stride *= b.stride
            strides.append(stride)
        return strides

    @property
    def output_stride(self) -> int:
        """Total stride of the network: the smallest input side that still gives a 1x1 feature map."""
        return self.stage_strides()[-1] if self.blocks else self.stem.stride

    def feature_info(self) -> list[dict]:
        """Per stage: output stride and channels (what a detection backbone taps)."""
        return [{"stage": s, "stride": stride, "channels": self.stage_blocks(s)[-1].out_channels}
                for s, stride in enumerate(self.stage_strides())]


def block_spec(block: BlockType, in_channels: int, out_channels: int, *, expand_ratio: float = 1.0,
               kernel: int = 3, stride: int = 1, se_ratio: float = 0.0, activation: str = "relu6",
               drop_path_rate: float = 0.0, padding: str = "symmetric", bn_eps: float = 1e-5,
               index: int = 0, stage: int = 0, position: int = 0) -> BlockSpec:
    """Derive one block's record from a table row's numbers: the single place these rules live."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer (1, 3, 5, 7, ...), got {kernel}")
    if block is BlockType.DEPTHWISE_SEPARABLE:
        # MobileNetV1: depthwise on the input width, then pointwise; no shortcut, no SE.
        return BlockSpec(index, stage, block, 1.0, in_channels, in_channels, out_channels, kernel, stride, 0,
                         False, 0.0, activation, padding, bn_eps, position)
    if not expand_ratio >= 1:
        raise ValueError(f"expand_ratio must be >= 1, got {expand_ratio}")
    if block is BlockType.FUSED_MBCONV and expand_ratio == 1:
        mid = out_channels  # a single kxk conv straight to the output width
    else:
        mid = round(in_channels * expand_ratio)
    # Residual only when stride 1 and in == out (MobileNetV2 Sec. 3.3; the notes' implementation note 1).
    residual = stride == 1 and in_channels == out_channels
    return BlockSpec(index, stage, block, expand_ratio, in_channels, mid, out_channels, kernel, stride,
                     se_squeeze_channels(in_channels, se_ratio), residual,
                     drop_path_rate if residual else 0.0, activation, padding, bn_eps, position)


def drop_path_schedule(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Per-block stochastic-depth drop rates, linear in the block index: ``rate * i / num_blocks``.

    The single place this rule lives.  It is the schedule of the official EfficientNet code,
    torchvision and timm: 0 for the first block, rising towards ``drop_path_rate`` at the last.
    """
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return [drop_path_rate * i / num_blocks for i in range(num_blocks)]


def expand(config: ModelConfig) -> Plan:
    """Expand a model config's table into the stem, one :class:`BlockSpec` per block, and the head."""
    spec, c = config.spec, config
    stem = StemSpec(c.in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride, c.activation,
                    c.padding, c.bn_eps)
    rates = iter(drop_path_schedule(c.drop_path_rate, sum(s.repeats for s in spec.stages)))
    blocks, in_ch = [], spec.stem_channels
    for i, stage in enumerate(spec.stages):
        for j in range(stage.repeats):
            blocks.append(block_spec(
                stage.block, in_ch, stage.out_channels, expand_ratio=stage.expand_ratio, kernel=stage.kernel,
                stride=stage.stride if j == 0 else 1, se_ratio=stage.se_ratio, activation=c.activation,
                drop_path_rate=next(rates), padding=c.padding, bn_eps=c.bn_eps, index=len(blocks), stage=i, position=j))
            in_ch = stage.out_channels
    head = HeadSpec(in_ch, spec.head_channels, spec.head_channels or in_ch, c.num_classes, c.drop_rate,
                    c.activation, c.bn_eps)
    return Plan(stem, tuple(blocks), head)
