"""Graph files: effnet's one checkpoint format (safetensors), with ``"kind": "graph"``.

Metadata (all strings): ``"format": "effnet"``, ``"format_version": "2"``, ``"kind": "graph"`` and
``"graph"``, the JSON list of nodes (``{"op", "inputs", "attrs", "block"}``).  Tensors are named
``"<node index>.<tensor>"`` (``"3.weight"``, ``"12.running_var"``).  Reading needs json,
safetensors and numpy only, and never unpickles anything.  Writing goes through effnet.io
(temp file, then rename), so a failed save leaves no half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from effnet.io import atomic_output

FORMAT = "effnet"
FORMAT_VERSION = 2  # the highest version this reader understands
KIND = "graph"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, truncated, foreign, too new, or inconsistent."""


def write_graph(path: str | os.PathLike, nodes: list[dict], tensors: dict[str, np.ndarray]) -> None:
    """Write ``nodes`` (JSON-ready dicts) and ``tensors`` to ``path`` atomically."""
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": KIND, "graph": json.dumps(nodes)}
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)


def read_graph(path: str | os.PathLike) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The node list and tensors of a graph file; CheckpointError (one line) for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such graph file: {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            _check_metadata(path, meta)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except CheckpointError:
        raise
    except (SafetensorError, OSError) as e:  # truncated, corrupt, or not safetensors at all
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): "
                              f"{_first_line(e)}") from None
    try:
        nodes = json.loads(meta["graph"])
        if not isinstance(nodes, list) or not all(
                isinstance(n, dict) and {"op", "inputs", "attrs"} <= set(n) for n in nodes):
            raise ValueError("expected a list of {op, inputs, attrs, block} objects")
    except ValueError as e:
        raise CheckpointError(f"{path}: the \"graph\" metadata is not a valid node list: {e}") from None
    for n in nodes:
        n.setdefault("block", None)
    return nodes, tensors


def read_kind(path: str | os.PathLike) -> str | None:
    """The ``"kind"`` of an effnet safetensors file ("graph", "model"), or None if it has none."""
    try:
        with safe_open(str(path), framework="np") as f:
            return (f.metadata() or {}).get("kind")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _check_metadata(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an effnet file (metadata format={meta.get('format')!r})")
    version = meta.get("format_version", "")
    if not version.isdigit():
        raise CheckpointError(f"{path}: bad format_version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version} is newer than this effnet reads "
                              f"({FORMAT_VERSION}); upgrade effnet")
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path}: holds kind {meta.get('kind')!r}, not a graph "
                              "(load a model checkpoint with effnet.load, or export a graph with "
                              "effnet runtime export)")
    if "graph" not in meta:
        raise CheckpointError(f"{path}: no \"graph\" entry in the metadata")
