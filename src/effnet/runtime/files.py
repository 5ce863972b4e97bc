"""Graph files: effnet's one file format (:mod:`effnet.weights.format`) with ``"kind": "graph"``.

The metadata's ``"graph"`` entry is the JSON node list (``{"op", "inputs", "attrs", "block"}``);
the arrays are named ``"<node index>.<tensor>"`` (``"3.weight"``, ``"12.running_var"``).  Reading
needs json, safetensors and numpy only, and never unpickles anything; writing is atomic.
"""

from __future__ import annotations

import os

import numpy as np

from effnet.errors import CheckpointError
from effnet.weights.format import Metadata, read_arrays, read_metadata, write_arrays

__all__ = ["CheckpointError", "read_graph", "read_kind", "write_graph"]


def write_graph(path: str | os.PathLike, nodes: list[dict], tensors: dict[str, np.ndarray]) -> None:
    """Write ``nodes`` (JSON-ready dicts) and ``tensors`` to ``path`` atomically."""
    write_arrays(path, {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()},
                 Metadata(kind="graph", graph=nodes))


def read_graph(path: str | os.PathLike) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The node list and tensors of a graph file; CheckpointError (one line) for anything wrong."""
    if read_kind(path) != "graph":
        raise CheckpointError(f"{path}: holds a {read_kind(path)}, not a graph (load a model file with "
                              "effnet.load; make a graph file with effnet runtime export)")
    tensors, meta = read_arrays(path)
    nodes = meta.graph
    if not all(isinstance(n, dict) and {"op", "inputs", "attrs"} <= set(n) for n in nodes):
        raise CheckpointError(f'{path}: the "graph" metadata is not a valid node list '
                              "(expected {op, inputs, attrs, block} objects)")
    for n in nodes:
        n.setdefault("block", None)
    return nodes, tensors


def read_kind(path: str | os.PathLike) -> str:
    """The ``"kind"`` of an effnet file: "graph" or "model" (CheckpointError if it is no effnet file)."""
    return read_metadata(path).kind
