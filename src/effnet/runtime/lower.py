"""Lowering: a model's block plan and state dict -> a layer graph, one node per module.

Reads ``model.plan`` (what each block is) and ``model.state_dict()`` (the tensors, by the module
names the blocks give them); never inspects module classes.  Inference semantics: BatchNorm uses
its running statistics, dropout and stochastic depth are identities.  Needs no torch import: the
model hands over its tensors and they become numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from effnet.plan import BlockSpec, Plan
from effnet.runtime import ops
from effnet.runtime.graph import Graph, Node
from effnet.runtime.passes import optimize_graph
from effnet.tables import BlockType


def from_model(model, *, optimize: bool = True, input_size: int | Sequence[int] | None = None) -> Graph:
    """The graph of an ``EfficientConvNet`` (optimised by default; ``optimize=False`` keeps one node
    per module).  ``input_size``: an int or ``(H, W)``; default the model's ``config.resolution``."""
    plan = getattr(model, "plan", None)
    if not isinstance(plan, Plan) or not hasattr(model, "state_dict"):
        raise TypeError(f"from_model takes an effnet EfficientConvNet (a model with a .plan), "
                        f"got {type(model).__name__}")
    size = model.config.resolution if input_size is None else input_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    sd = {k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()
          if v.is_floating_point()}
    g = Graph(input_shape=(plan.stem.in_channels, h, w))
    lower = _Lowering(g, sd)
    st = plan.stem
    x = lower.conv_norm_act("stem", g.back(), "conv", st.out_channels, st.kernel, st.stride, st.padding,
                            st.bn_eps, st.activation, None)
    first_of_stage = {}
    for b in plan.blocks:
        first_of_stage.setdefault(b.stage, b.index)
        x = lower.block(f"stages.{b.stage}.{b.index - first_of_stage[b.stage]}", x, b)
    hd = plan.head
    if hd.conv_channels is not None:
        x = lower.conv_norm_act("head", x, "pwconv", hd.conv_channels, 1, 1, "symmetric", hd.bn_eps,
                                hd.activation, None)
    x = g.add(ops.GlobalAvgPool(x))
    x = g.add(ops.Identity(x, "dropout"))
    if hd.num_classes:
        g.add(ops.Linear(x, hd.num_classes, params=lower.take("classifier", "weight", "bias")))
    return optimize_graph(g) if optimize else g


class _Lowering:
    """Adds the nodes of one module at a time, taking its tensors from the state dict by name."""

    def __init__(self, g: Graph, sd: dict[str, np.ndarray]) -> None:
        self.g, self.sd = g, sd

    def take(self, prefix: str, *names: str) -> dict[str, np.ndarray]:
        return {n: self.sd[f"{prefix}.{n}"] for n in names}

    def conv_norm_act(self, prefix: str, x: Node, op: str, out: int, kernel: int, stride: int, padding: str,
                      eps: float, act: str | None, block: int | None) -> Node:
        g, conv = self.g, self.take(f"{prefix}.conv", "weight")
        if op == "dwconv":
            x = g.add(ops.DWConv(x, kernel, stride, padding=padding, params=conv), block=block)
        elif op == "pwconv":
            x = g.add(ops.PWConv(x, out, params=conv), block=block)
        else:
            x = g.add(ops.Conv(x, out, kernel, stride, padding=padding, params=conv), block=block)
        norm = self.take(f"{prefix}.norm", "weight", "bias", "running_mean", "running_var")
        x = g.add(ops.BatchNorm(x, eps, params=norm), block=block)
        return g.add(ops.Activation(x, act), block=block) if act else x

    def block(self, p: str, x: Node, b: BlockSpec) -> Node:
        """One block's nodes, read from its BlockSpec: what the paper's figure draws, in order."""
        g, i, inp = self.g, b.index, x
        if b.block is BlockType.DEPTHWISE_SEPARABLE:
            x = self.conv_norm_act(f"{p}.depthwise", x, "dwconv", b.in_channels, b.kernel, b.stride, b.padding,
                                   b.bn_eps, b.activation, i)
            return self.conv_norm_act(f"{p}.pointwise", x, "pwconv", b.out_channels, 1, 1, "symmetric",
                                      b.bn_eps, b.activation, i)
        if b.block is BlockType.MBCONV:
            if b.has_expand:
                x = self.conv_norm_act(f"{p}.expand", x, "pwconv", b.mid_channels, 1, 1, "symmetric",
                                       b.bn_eps, b.activation, i)
            x = self.conv_norm_act(f"{p}.depthwise", x, "dwconv", b.mid_channels, b.kernel, b.stride,
                                   b.padding, b.bn_eps, b.activation, i)
        else:  # Fused-MBConv: one kxk conv in place of expand + depthwise
            x = self.conv_norm_act(f"{p}.expand", x, "conv", b.mid_channels, b.kernel, b.stride, b.padding,
                                   b.bn_eps, b.activation, i)
        if b.has_se:
            se = self.take(f"{p}.se", "reduce.weight", "reduce.bias", "expand.weight", "expand.bias")
            x = g.add(ops.SE(x, b.se_channels, b.activation, params=se), block=i)
        if b.has_project:
            x = self.conv_norm_act(f"{p}.project", x, "pwconv", b.out_channels, 1, 1, "symmetric", b.bn_eps,
                                   None, i)
        if b.residual:
            x = g.add(ops.Identity(x, "drop_path"), block=i)
            x = g.add(ops.Add(x, inp), block=i)
        return x
