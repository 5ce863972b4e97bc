"""The reference executor: every op in plain numpy, float32, batch first (N, C, H, W)."""

from __future__ import annotations

import numpy as np

from effnet.runtime.graph import Graph, Node
from effnet.runtime.ops import pads


def activate(x: np.ndarray, kind: str | None) -> np.ndarray:
    """Apply activation ``kind`` (None: none)."""
    if kind is None:
        return x
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "relu6":
        return np.clip(x, 0, 6)
    if kind == "silu":
        return x * _sigmoid(x)
    if kind == "hardswish":
        return x * np.clip(x + 3, 0, 6) / 6
    if kind == "sigmoid":
        return _sigmoid(x)
    raise ValueError(f"unknown activation {kind!r}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _conv(node: Node, x: np.ndarray) -> np.ndarray:
    """Direct convolution as a sum over the kxk taps of shifted (strided) views: no im2col copy."""
    a = node.attrs
    k, s = a["kernel"], a["stride"]
    top, bottom, left, right = pads(a, x.shape[1:])
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, (oh, ow) = x.shape[0], node.shape[1:]
    w = node.params["weight"]
    out = np.zeros((n, node.shape[0], oh, ow), dtype=np.float32)
    for i in range(k):
        for j in range(k):
            view = xp[:, :, i: i + s * (oh - 1) + 1: s, j: j + s * (ow - 1) + 1: s]
            if node.op == "dwconv":
                out += view * w[None, :, 0, i, j, None, None]
            else:
                out += np.einsum("oc,nchw->nohw", w[:, :, i, j], view, optimize=True)
    if a["bias"]:
        out += node.params["bias"][None, :, None, None]
    return activate(out, a["act"])


def run_node(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    """One node's output from its inputs' outputs."""
    op, a, p = node.op, node.attrs, node.params
    x = xs[0] if xs else None
    if op in ("conv", "dwconv"):
        return _conv(node, x)
    if op == "pwconv":
        n, c, h, w = x.shape
        out = np.matmul(p["weight"][:, :, 0, 0], x.reshape(n, c, h * w)).reshape(n, -1, h, w)
        if a["bias"]:
            out += p["bias"][None, :, None, None]
        return activate(out, a["act"])
    if op == "batchnorm":
        scale = p["weight"] / np.sqrt(p["running_var"] + a["eps"])
        shift = p["bias"] - p["running_mean"] * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]
    if op == "activation":
        return activate(x, a["kind"])
    if op == "se":
        s = x.mean(axis=(2, 3))
        s = activate(s @ p["reduce.weight"][:, :, 0, 0].T + p["reduce.bias"], a["act"])
        gate = _sigmoid(s @ p["expand.weight"][:, :, 0, 0].T + p["expand.bias"])
        return x * gate[:, :, None, None]
    if op == "add":
        return activate(x + xs[1], a["act"])
    if op == "global_avgpool":
        return x.mean(axis=(2, 3))
    if op == "linear":
        out = x @ p["weight"].T
        if a["bias"]:
            out = out + p["bias"]
        return activate(out, a["act"])
    if op == "identity":
        return x
    raise ValueError(f"node {node.index}: the numpy backend has no op {op!r}")


class NumpyEngine:
    """Runs a graph node by node; a node's output is freed once its last reader has run."""

    backend = "numpy"

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        users = graph.consumers()
        self.last_use = [max(u, default=len(graph)) for u in users]

    def run(self, x: np.ndarray) -> np.ndarray:
        values: dict[int, np.ndarray] = {0: x}
        for node in self.graph.nodes[1:]:
            values[node.index] = run_node(node, [values[i] for i in node.inputs]).astype(np.float32, copy=False)
            for i in node.inputs:
                if self.last_use[i] == node.index:
                    values.pop(i, None)
        return values[len(self.graph) - 1]
