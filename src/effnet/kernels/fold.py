"""BatchNorm folding: a model's plan + state dict -> per-layer conv weights with a bias, BN gone.

In eval mode ``BN(conv(x)) = conv(x) * s + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``,
so every conv-norm pair becomes one conv whose weight is scaled per output channel and which
gains a bias.  The fused kernels read only these records.  Pure function of its inputs; float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effnet.plan import BlockSpec, HeadSpec, Plan, StemSpec
from effnet.tables import BlockType


@dataclass(frozen=True)
class FoldedConv:
    """A conv with BN folded in: ``weight`` [C_out, C_in / groups, k, k], ``bias`` [C_out], float32."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int = 1
    groups: int = 1

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]


@dataclass(frozen=True)
class FoldedSE:
    """Squeeze-excitation's two FCs: reduce ``w1`` [S, C] + ``b1``, expand ``w2`` [C, S] + ``b2``."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor


@dataclass(frozen=True)
class FoldedBlock:
    """One block's folded layers, by role; ``None`` where the block's spec has no such layer.

    MBConv: expand (1x1) -> depthwise -> se -> project.  Fused-MBConv: expand (kxk) -> se -> project.
    Depthwise-separable: depthwise -> project (its pointwise conv, with activation).
    """

    spec: BlockSpec
    expand: FoldedConv | None
    depthwise: FoldedConv | None
    se: FoldedSE | None
    project: FoldedConv | None


@dataclass(frozen=True)
class FoldedNet:
    """The whole network, folded: stem, blocks, head conv (or None), classifier (or None)."""

    plan: Plan
    stem: FoldedConv
    blocks: tuple[FoldedBlock, ...]
    head: FoldedConv | None
    classifier: tuple[torch.Tensor, torch.Tensor] | None  # (weight [classes, features], bias)


def fold_conv_bn(sd: dict[str, torch.Tensor], prefix: str, eps: float, stride: int = 1,
                 groups: int = 1) -> FoldedConv:
    """Fold ``{prefix}.norm`` into ``{prefix}.conv`` (a ConvNormAct's keys in a state dict)."""
    w = sd[f"{prefix}.conv.weight"].float()
    gamma, beta = sd[f"{prefix}.norm.weight"].float(), sd[f"{prefix}.norm.bias"].float()
    mean, var = sd[f"{prefix}.norm.running_mean"].float(), sd[f"{prefix}.norm.running_var"].float()
    scale = gamma / torch.sqrt(var + eps)
    return FoldedConv(w * scale[:, None, None, None], beta - mean * scale, stride, groups)


def _fold_block(sd: dict[str, torch.Tensor], b: BlockSpec) -> FoldedBlock:
    p, eps = f"stages.{b.stage}.{b.position}", b.bn_eps
    se = None
    if b.has_se:
        se = FoldedSE(sd[f"{p}.se.reduce.weight"].float().flatten(1), sd[f"{p}.se.reduce.bias"].float(),
                      sd[f"{p}.se.expand.weight"].float().flatten(1), sd[f"{p}.se.expand.bias"].float())
    if b.block is BlockType.DEPTHWISE_SEPARABLE:
        return FoldedBlock(b, None, fold_conv_bn(sd, f"{p}.depthwise", eps, b.stride, b.in_channels), None,
                           fold_conv_bn(sd, f"{p}.pointwise", eps))
    if b.block is BlockType.MBCONV:
        return FoldedBlock(b, fold_conv_bn(sd, f"{p}.expand", eps) if b.has_expand else None,
                           fold_conv_bn(sd, f"{p}.depthwise", eps, b.stride, b.mid_channels), se,
                           fold_conv_bn(sd, f"{p}.project", eps))
    assert b.block is BlockType.FUSED_MBCONV, b.block
    return FoldedBlock(b, fold_conv_bn(sd, f"{p}.expand", eps, b.stride), None, se,
                       fold_conv_bn(sd, f"{p}.project", eps) if b.has_project else None)


def fold(plan: Plan, state_dict: dict[str, torch.Tensor]) -> FoldedNet:
    """Fold every BatchNorm of an ``EfficientConvNet`` state dict into its conv, guided by the plan."""
    sd = {k: v.detach() for k, v in state_dict.items()}
    st: StemSpec = plan.stem
    stem = fold_conv_bn(sd, "stem", st.bn_eps, st.stride)
    hd: HeadSpec = plan.head
    head = fold_conv_bn(sd, "head", hd.bn_eps) if hd.conv_channels is not None else None
    classifier = ((sd["classifier.weight"].float(), sd["classifier.bias"].float())
                  if hd.num_classes else None)
    return FoldedNet(plan, stem, tuple(_fold_block(sd, b) for b in plan.blocks), head, classifier)
