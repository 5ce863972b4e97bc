"""The layer graph: an ordered list of nodes, each an op whose inputs are earlier nodes by index.

The design notes' OpenCL engine, in Python::

    g = Graph(input_shape=(3, 224, 224))          # node 0 is the input
    g.add(ops.Conv(g.back(), 32, 3, stride=2))
    g.add(ops.BatchNorm(g.back(), eps=1e-5))
    g.add(ops.ReLU6(g.back()))
    ...
    g.add(ops.Add(g.back(), g[16]))               # the shortcut names node 16

Shapes are inferred as nodes are added, so a bad reference or a shape mismatch fails at ``add``,
naming the node and the shapes.  Each node also records the plan block it came from (``block``,
an index into ``model.plan.blocks``, or None for stem and head) so a backend can group a block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from effnet.errors import CheckpointError
from effnet.runtime import files, ops
from effnet.runtime.ops import GraphError, OpSpec


@dataclass(frozen=True)
class Node:
    """One layer: op, attributes, input node indices, its tensors and its per-sample output shape."""

    index: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict
    params: dict[str, np.ndarray] = field(repr=False)
    shape: tuple[int, ...]
    block: int | None = None

    def with_(self, **changes) -> Node:
        """A copy with some fields changed (nodes are immutable; passes build new ones)."""
        fields = {"index": self.index, "op": self.op, "inputs": self.inputs, "attrs": self.attrs,
                  "params": self.params, "shape": self.shape, "block": self.block}
        return Node(**{**fields, **changes})


class Graph:
    """An ordered list of :class:`Node`; node 0 is the input, the last node is the output."""

    def __init__(self, input_shape: Sequence[int] | None = None) -> None:
        self.nodes: list[Node] = []
        if input_shape is not None:
            if len(input_shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in input_shape):
                raise GraphError(f"input_shape must be (C, H, W) of positive ints, got {tuple(input_shape)}")
            self.add(ops.Input(*input_shape))

    # -- building ---------------------------------------------------------------------------------------------
    def back(self) -> Node:
        """The last node added (the notes' ``model.back()``)."""
        if not self.nodes:
            raise GraphError("the graph is empty: create it with Graph(input_shape=(C, H, W))")
        return self.nodes[-1]

    def __getitem__(self, index: int) -> Node:
        if not isinstance(index, int) or not -len(self.nodes) <= index < len(self.nodes):
            raise GraphError(f"no node {index!r}: the graph has nodes 0..{len(self.nodes) - 1}")
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def add(self, spec: OpSpec, *, block: int | None = None) -> Node:
        """Append ``spec`` as a new node; its shape is inferred and its tensors checked or created."""
        if not isinstance(spec, OpSpec):
            raise TypeError(f"Graph.add takes an op from effnet.runtime.ops, got {type(spec).__name__}")
        index = len(self.nodes)
        if spec.op == "input" and index != 0:
            raise GraphError(f"node {index} (input): only node 0 can be the input")
        if spec.op != "input" and index == 0:
            raise GraphError("node 0 must be the input: create the graph with Graph(input_shape=(C, H, W))")
        inputs = tuple(self._resolve(index, spec.op, ref) for ref in spec.inputs)
        in_shapes = [self.nodes[i].shape for i in inputs]
        shape = ops.out_shape(index, spec.op, spec.attrs, in_shapes)
        params = self._params(index, spec, in_shapes[0] if in_shapes else ())
        node = Node(index, spec.op, inputs, dict(spec.attrs), params, tuple(shape), block)
        self.nodes.append(node)
        return node

    def _resolve(self, index: int, op: str, ref) -> int:
        i = ref.index if isinstance(ref, Node) else ref
        if isinstance(ref, Node) and (i >= len(self.nodes) or self.nodes[i] is not ref):
            raise GraphError(f"node {index} ({op}): input node {i} belongs to another graph")
        if not isinstance(i, int) or isinstance(i, bool):
            raise GraphError(f"node {index} ({op}): inputs are nodes or node indices, got {ref!r}")
        if i < 0 or i >= index:
            raise GraphError(f"node {index} ({op}): input {i} does not exist yet "
                             f"(inputs must be earlier nodes, 0..{index - 1})")
        return i

    @staticmethod
    def _params(index: int, spec: OpSpec, in_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        want = ops.param_shapes(spec.op, spec.attrs, in_shape)
        extra = sorted(set(spec.params) - set(want))
        if extra:
            raise GraphError(f"node {index} ({spec.op}): unknown tensor(s) {', '.join(extra)}; "
                             f"expected {', '.join(want) or 'none'}")
        out = {}
        for name, shape in want.items():
            if name in spec.params:
                value = np.ascontiguousarray(np.asarray(spec.params[name], dtype=np.float32))
                if value.shape != shape:
                    raise GraphError(f"node {index} ({spec.op}): tensor {name} has shape {value.shape}, "
                                     f"expected {shape}")
                out[name] = value
            else:
                out[name] = ops.default_param(name, shape)
        return out

    def set_params(self, index: int, params: Mapping[str, np.ndarray]) -> None:
        """Give node ``index`` some of its tensors (checked against the shapes it expects)."""
        node = self[index]
        spec = OpSpec(node.op, (), node.attrs, {**node.params, **params})
        in_shape = self.nodes[node.inputs[0]].shape if node.inputs else ()
        self.nodes[node.index] = node.with_(params=self._params(node.index, spec, in_shape))

    # -- reading ----------------------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.back().shape

    def consumers(self) -> list[list[int]]:
        """For each node, the nodes that read it."""
        users: list[list[int]] = [[] for _ in self.nodes]
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n.index)
        return users

    def in_shape(self, node: Node) -> tuple[int, ...]:
        """The shape of a node's first input (its own shape for the input node)."""
        return self.nodes[node.inputs[0]].shape if node.inputs else node.shape

    def rows(self) -> list[dict]:
        """One dict per node: index, op, inputs, output shape, params and MACs (per sample)."""
        return [{"index": n.index, "op": n.op, "inputs": list(n.inputs), "shape": n.shape, "block": n.block,
                 "act": n.attrs.get("act") or n.attrs.get("kind"),
                 "params": ops.learned_params(n.op, n.params),
                 "macs": ops.macs(n.op, n.attrs, self.in_shape(n), n.shape)} for n in self.nodes]

    def totals(self) -> dict:
        """Nodes, learned parameters and MACs per sample: the same conventions as effnet.analysis.profile."""
        rows = self.rows()
        return {"nodes": len(rows), "params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows)}

    def summary(self, file=None) -> str:
        """The table the notes' engine prints: one row per node, then totals; printed and returned."""
        lines = [f"{'#':>4}  {'op':<15} {'inputs':<9} {'block':>5}  {'output':<16} {'params':>11} {'MACs':>14}"]
        for r in self.rows():
            # "pwconv+relu6": a fused activation; "se(silu)": SE's inner one; "activation:relu6": standalone
            op = r["op"] + (f"+{r['act']}" if r["act"] else "")
            if r["op"] in ("activation", "se"):
                op = f"{r['op']}:{r['act']}" if r["op"] == "activation" else f"se({r['act']})"
            block = "" if r["block"] is None else str(r["block"])
            lines.append(f"{r['index']:>4}  {op:<15} {','.join(map(str, r['inputs'])):<9} {block:>5}  "
                         f"{tuple(r['shape'])!s:<16} {r['params']:>11,} {r['macs']:>14,}")
        t = self.totals()
        lines.append(f"total: {t['nodes']} nodes, {t['params']:,} params, {t['macs']:,} MACs per sample "
                     f"({t['macs'] / 1e6:.1f} M)")
        text = "\n".join(lines)
        print(text, file=file)
        return text

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, input {self.input_shape if self.nodes else None})"

    # -- files ------------------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the graph as one effnet checkpoint file (kind "graph"): node list in the metadata,
        tensors named ``"<node>.<tensor>"`` (``"3.weight"``)."""
        nodes = [{"op": n.op, "inputs": list(n.inputs), "attrs": n.attrs, "block": n.block} for n in self.nodes]
        tensors = {f"{n.index}.{k}": v for n in self.nodes for k, v in n.params.items()}
        files.write_graph(path, nodes, tensors)

    @classmethod
    def from_nodes(cls, nodes: Sequence[Node]) -> Graph:
        """A graph of already-built nodes (re-checked by adding them again in order)."""
        g = cls()
        for n in nodes:
            g.add(OpSpec(n.op, n.inputs, n.attrs, n.params), block=n.block)
        return g


def load(path) -> Graph:
    """Read a graph file written by :meth:`Graph.save` (or ``effnet runtime export``); numpy only."""
    nodes, tensors = files.read_graph(path)
    g = Graph()
    for i, n in enumerate(nodes):
        try:
            first = n["inputs"][0] if n["inputs"] else None
            in_shape = g.nodes[first].shape if first is not None and 0 <= first < i else ()
            names = ops.param_shapes(n["op"], n["attrs"], in_shape) if first is None or in_shape else {}
        except (KeyError, TypeError, IndexError) as e:
            raise CheckpointError(f"{path}: bad graph node {i}: {e!r}") from None
        params = {}
        for name, shape in names.items():
            key = f"{i}.{name}"
            if key not in tensors:
                raise CheckpointError(f"{path}: graph file has no tensor {key!r} (node {i}, {n['op']})")
            if tuple(tensors[key].shape) != shape:
                raise CheckpointError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                                            f"node {i} ({n['op']}) needs {shape}")
            params[name] = tensors[key]
        try:
            g.add(OpSpec(n["op"], tuple(n["inputs"]), n["attrs"], params), block=n["block"])
        except (GraphError, KeyError, TypeError, IndexError) as e:
            raise CheckpointError(f"{path}: bad graph node {i}: {e}") from None
    return g
