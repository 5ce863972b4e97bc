"""Optimisation passes: each a pure function Graph -> Graph that leaves the graph's outputs unchanged.

- :func:`drop_identities`: dropout and stochastic depth are the identity at inference.
- :func:`fold_batchnorm`: BatchNorm after a conv becomes the conv's weights and bias.
- :func:`fuse_activations`: an activation after a conv, linear or add runs inside its producer.

A node is folded into its producer only when it directly follows it and is its only reader, so the
rewritten graph keeps execution order and its last node stays the output.
"""

from __future__ import annotations

import numpy as np

from effnet.runtime.graph import Graph, Node
from effnet.runtime.ops import CONV_OPS, OpSpec

FUSES_ACTIVATION = (*CONV_OPS, "linear", "add")


def _rewrite(g: Graph, replace: dict[int, Node], alias: dict[int, int]) -> Graph:
    """A new graph: nodes in ``alias`` are dropped (readers use the aliased node), ``replace`` swaps nodes."""
    new, remap = Graph(), {}
    for n in g.nodes:
        if n.index in alias:
            remap[n.index] = remap[alias[n.index]]
            continue
        m = replace.get(n.index, n)
        node = new.add(OpSpec(m.op, tuple(remap[i] for i in m.inputs), m.attrs, m.params), block=m.block)
        remap[n.index] = node.index
    assert remap[len(g) - 1] == len(new) - 1, "a pass moved the graph's output"
    return new


def _fusable(g: Graph, users: list[list[int]], n: Node, ops_: tuple[str, ...]) -> Node | None:
    """The producer of ``n`` if ``n`` can be folded into it: right before ``n``, read only by ``n``."""
    p = g.nodes[n.inputs[0]]
    if p.index == n.index - 1 and users[p.index] == [n.index] and p.op in ops_ and p.attrs.get("act") is None:
        return p
    return None


def drop_identities(g: Graph) -> Graph:
    """Remove ``identity`` nodes (eval-mode dropout, stochastic depth); their readers read the input."""
    alias = {n.index: n.inputs[0] for n in g.nodes if n.op == "identity" and n.index != len(g) - 1}
    last = g.back()
    if last.op == "identity" and last.inputs[0] == last.index - 1:
        alias[last.index] = last.inputs[0]
    return _rewrite(g, {}, alias)


def fold_batchnorm(g: Graph) -> Graph:
    """Fold each BatchNorm into the conv before it: ``w * s``, ``(b - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)``, computed in float64."""
    users, replace, alias = g.consumers(), {}, {}
    for n in g.nodes:
        if n.op != "batchnorm":
            continue
        p = _fusable(g, users, n, CONV_OPS)
        if p is None:
            continue
        bn = {k: v.astype(np.float64) for k, v in n.params.items()}
        scale = bn["weight"] / np.sqrt(bn["running_var"] + n.attrs["eps"])
        bias = p.params["bias"].astype(np.float64) if p.attrs["bias"] else np.zeros_like(scale)
        params = {"weight": (p.params["weight"] * scale[:, None, None, None]).astype(np.float32),
                  "bias": ((bias - bn["running_mean"]) * scale + bn["bias"]).astype(np.float32)}
        replace[p.index] = p.with_(attrs={**p.attrs, "bias": True}, params=params)
        alias[n.index] = p.index
    return _rewrite(g, replace, alias)


def fuse_activations(g: Graph) -> Graph:
    """Move each standalone activation into the conv, linear or add that produces its input."""
    users, replace, alias = g.consumers(), {}, {}
    for n in g.nodes:
        if n.op != "activation":
            continue
        p = _fusable(g, users, n, FUSES_ACTIVATION)
        if p is not None:
            replace[p.index] = p.with_(attrs={**p.attrs, "act": n.attrs["kind"]})
            alias[n.index] = p.index
    return _rewrite(g, replace, alias)


def optimize_graph(g: Graph) -> Graph:
    """All passes, in the order that lets each see the most: identities, BatchNorm, activations."""
    return fuse_activations(fold_batchnorm(drop_identities(g)))
