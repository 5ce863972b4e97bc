"""The runtime's operators: what each one takes, what shape it gives, what it holds and costs.

Written by hand like the design notes' OpenCL engine, one op per layer, inputs named by node::

    g.add(ops.PWConv(g.back(), 96, bias=False))
    g.add(ops.BatchNorm(g.back(), eps=1e-5))
    g.add(ops.ReLU6(g.back()))
    g.add(ops.Add(g.back(), g[16]))

An op made here is a request (:class:`OpSpec`); :meth:`effnet.runtime.Graph.add` checks it against
its inputs' shapes and turns it into a node.  Shapes are per sample: ``(C, H, W)`` for maps and
``(F,)`` after global pooling.  Pure numpy; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Fused or standalone activations; "sigmoid" is SE's gate.  The graph names them, the engines map them.
ACTIVATIONS = ("relu", "relu6", "silu", "hardswish", "sigmoid")
PADDINGS = ("symmetric", "same")  # "same": TensorFlow's SAME, asymmetric at stride 2
CONV_OPS = ("conv", "dwconv", "pwconv")
OPS = ("input", *CONV_OPS, "batchnorm", "activation", "se", "add", "global_avgpool", "linear", "identity")


class GraphError(ValueError):
    """A node that does not fit the graph: bad reference, shape or channel mismatch, bad attribute."""


@dataclass(frozen=True)
class OpSpec:
    """An op before it joins a graph: inputs (node indices or nodes), attributes and optional tensors."""

    op: str
    inputs: tuple = ()
    attrs: dict = field(default_factory=dict)
    params: Mapping[str, np.ndarray] = field(default_factory=dict)


def _act(act: str | None) -> str | None:
    if act is not None and act not in ACTIVATIONS:
        raise GraphError(f"unknown activation {act!r}; allowed: {', '.join(ACTIVATIONS)} or None")
    return act


def _conv(op: str, x, out_channels: int | None, kernel: int, stride: int, padding: str, bias: bool,
          act: str | None, params: Mapping | None) -> OpSpec:
    if stride not in (1, 2):
        raise GraphError(f"stride must be 1 or 2, got {stride}")
    if not (isinstance(kernel, int) and kernel >= 1 and kernel % 2 == 1):
        raise GraphError(f"kernel size must be a positive odd integer, got {kernel}")
    if padding not in PADDINGS:
        raise GraphError(f"padding must be one of {PADDINGS}, got {padding!r}")
    attrs = {"kernel": kernel, "stride": stride, "padding": padding, "bias": bool(bias), "act": _act(act)}
    if out_channels is not None:
        attrs["out_channels"] = int(out_channels)
    return OpSpec(op, (x,), attrs, dict(params or {}))


def Input(channels: int, height: int, width: int) -> OpSpec:
    """The image: ``(channels, height, width)`` per sample; the batch size is free."""
    return OpSpec("input", (), {"shape": [int(channels), int(height), int(width)]})


def Conv(x, out_channels: int, kernel: int = 3, stride: int = 1, *, padding: str = "symmetric",
         bias: bool = False, act: str | None = None, params: Mapping | None = None) -> OpSpec:
    """Dense kxk convolution (groups 1)."""
    return _conv("conv", x, out_channels, kernel, stride, padding, bias, act, params)


def DWConv(x, kernel: int = 3, stride: int = 1, *, padding: str = "symmetric", bias: bool = False,
           act: str | None = None, params: Mapping | None = None) -> OpSpec:
    """Depthwise kxk convolution: one filter per channel, channel count unchanged."""
    return _conv("dwconv", x, None, kernel, stride, padding, bias, act, params)


def PWConv(x, out_channels: int, bias: bool = False, *, act: str | None = None,
           params: Mapping | None = None) -> OpSpec:
    """Pointwise (1x1) convolution: a matrix product over channels at every pixel."""
    return _conv("pwconv", x, out_channels, 1, 1, "symmetric", bias, act, params)


def BatchNorm(x, eps: float = 1e-5, *, params: Mapping | None = None) -> OpSpec:
    """Inference BatchNorm: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``."""
    return OpSpec("batchnorm", (x,), {"eps": float(eps)}, dict(params or {}))


def Activation(x, kind: str) -> OpSpec:
    """A standalone activation (one of :data:`ACTIVATIONS`)."""
    if kind not in ACTIVATIONS:
        raise GraphError(f"unknown activation {kind!r}; allowed: {', '.join(ACTIVATIONS)}")
    return OpSpec("activation", (x,), {"kind": kind})


def ReLU(x) -> OpSpec:
    return Activation(x, "relu")


def ReLU6(x) -> OpSpec:
    return Activation(x, "relu6")


def SiLU(x) -> OpSpec:
    return Activation(x, "silu")


def HardSwish(x) -> OpSpec:
    return Activation(x, "hardswish")


def Sigmoid(x) -> OpSpec:
    return Activation(x, "sigmoid")


def SE(x, squeeze_channels: int, act: str = "silu", *, params: Mapping | None = None) -> OpSpec:
    """Squeeze-excitation: pool -> 1x1 reduce (+bias) -> act -> 1x1 expand (+bias) -> sigmoid -> scale x."""
    if act not in ACTIVATIONS:
        raise GraphError(f"unknown activation {act!r}; allowed: {', '.join(ACTIVATIONS)}")
    return OpSpec("se", (x,), {"squeeze_channels": int(squeeze_channels), "act": act}, dict(params or {}))


def Add(a, b, *, act: str | None = None) -> OpSpec:
    """Elementwise sum of two maps of the same shape (the residual shortcut)."""
    return OpSpec("add", (a, b), {"act": _act(act)})


def GlobalAvgPool(x) -> OpSpec:
    """Mean over the spatial axes: ``(C, H, W) -> (C,)``."""
    return OpSpec("global_avgpool", (x,), {})


def Linear(x, out_features: int, bias: bool = True, *, act: str | None = None,
           params: Mapping | None = None) -> OpSpec:
    """Fully connected layer on a ``(F,)`` vector."""
    return OpSpec("linear", (x,), {"out_features": int(out_features), "bias": bool(bias), "act": _act(act)},
                  dict(params or {}))


def Identity(x, role: str = "") -> OpSpec:
    """Passes its input on (dropout and stochastic depth in eval mode); the drop-identities pass removes it."""
    return OpSpec("identity", (x,), {"role": role})


# --- shapes, tensors and costs of a node, from its attributes and its inputs' shapes -------------------------

def pads(attrs: dict, in_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a conv node for an input of ``in_shape``."""
    k, s = attrs["kernel"], attrs["stride"]
    if attrs["padding"] == "symmetric":
        p = (k - 1) // 2
        return p, p, p, p

    def same(size: int) -> tuple[int, int]:
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    return (*same(in_shape[1]), *same(in_shape[2]))


def out_shape(index: int, op: str, attrs: dict, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The per-sample output shape of node ``index``; GraphError naming the node and shapes if it can't be."""
    where = f"node {index} ({op})"
    if op == "input":
        return tuple(attrs["shape"])
    x = shapes[0]
    if op in ("add",):
        if shapes[0] != shapes[1]:
            raise GraphError(f"{where}: cannot add shapes {shapes[0]} and {shapes[1]}")
        return x
    if op in ("batchnorm", "activation", "se", "identity"):
        if op in ("batchnorm", "se") and len(x) != 3:
            raise GraphError(f"{where}: needs a (C, H, W) map, got input shape {x}")
        return x
    if op == "global_avgpool":
        if len(x) != 3:
            raise GraphError(f"{where}: needs a (C, H, W) map, got input shape {x}")
        return (x[0],)
    if op == "linear":
        if len(x) != 1:
            raise GraphError(f"{where}: needs a (F,) vector (pool first), got input shape {x}")
        return (attrs["out_features"],)
    if op in CONV_OPS:
        if len(x) != 3:
            raise GraphError(f"{where}: needs a (C, H, W) map, got input shape {x}")
        top, bottom, left, right = pads(attrs, x)
        k, s = attrs["kernel"], attrs["stride"]
        h, w = (x[1] + top + bottom - k) // s + 1, (x[2] + left + right - k) // s + 1
        if h < 1 or w < 1:
            raise GraphError(f"{where}: a {k}x{k} kernel does not fit input shape {x}")
        return (x[0] if op == "dwconv" else attrs["out_channels"], h, w)
    raise GraphError(f"{where}: unknown op; allowed: {', '.join(OPS)}")


def param_shapes(op: str, attrs: dict, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a node's tensors (PyTorch's layouts, so state dicts copy straight in)."""
    if op in CONV_OPS:
        c, k = in_shape[0], attrs["kernel"]
        o = c if op == "dwconv" else attrs["out_channels"]
        shapes = {"weight": (o, 1 if op == "dwconv" else c, k, k)}
        return {**shapes, "bias": (o,)} if attrs["bias"] else shapes
    if op == "batchnorm":
        c = in_shape[0]
        return {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}
    if op == "se":
        c, s = in_shape[0], attrs["squeeze_channels"]
        return {"reduce.weight": (s, c, 1, 1), "reduce.bias": (s,), "expand.weight": (c, s, 1, 1),
                "expand.bias": (c,)}
    if op == "linear":
        shapes = {"weight": (attrs["out_features"], in_shape[0])}
        return {**shapes, "bias": (attrs["out_features"],)} if attrs["bias"] else shapes
    return {}


def default_param(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor nobody gave: BatchNorm starts as the identity, everything else at zero."""
    fill = 1.0 if name in ("weight", "running_var") and len(shape) == 1 else 0.0
    return np.full(shape, fill, dtype=np.float32)


def learned_params(op: str, params: Mapping[str, np.ndarray]) -> int:
    """Trainable parameters (BatchNorm's running statistics are buffers, as in PyTorch)."""
    skip = ("running_mean", "running_var") if op == "batchnorm" else ()
    return sum(int(v.size) for k, v in params.items() if k not in skip)


def macs(op: str, attrs: dict, in_shape: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Multiply-accumulates per sample of convolutions and matrix products (the papers' convention)."""
    if op in CONV_OPS:
        per_output = attrs["kernel"] ** 2 * (1 if op == "dwconv" else in_shape[0])
        return math.prod(shape) * per_output
    if op == "se":
        return 2 * in_shape[0] * attrs["squeeze_channels"]
    if op == "linear":
        return in_shape[0] * attrs["out_features"]
    return 0
