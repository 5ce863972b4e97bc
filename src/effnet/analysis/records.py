"""The analytic profile's data: one record per layer, and the profile of one forward with its roll-ups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

# Layer kinds, in the order roll-ups list them.
KINDS = ("conv", "depthwise", "pointwise", "fused-conv", "se", "linear", "norm-act", "add", "pool", "other")


@dataclass(frozen=True)
class LayerRecord:
    """One layer (a leaf module's call, or one functional op of a container) and its costs."""

    name: str  # qualified module name ("stages.1.0.depthwise.conv"), or "<module>.<op>" for functional ops
    kind: str  # one of KINDS
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int  # parameters first used here (shared ones are counted once)
    macs: int  # multiply-accumulates of convolutions and matrix products
    activations: int  # output elements
    bytes_read: int  # inputs + weights + buffers, each once, at the profiled dtype
    bytes_written: int  # outputs at the profiled dtype
    block: str | None  # enclosing block's qualified name, e.g. "stages.1.0"
    stage: str | None  # top-level grouping: "stem", "stages.1", "head", "classifier", ...
    role: str | None = None  # effnet models: the part of the block or model, from the plan ("expand", "se", ...)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    def as_dict(self) -> dict:
        """Fields plus the derived flops, bytes and intensity (JSON-ready)."""
        return {**asdict(self), "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "flops": self.flops, "bytes": self.bytes, "intensity": self.intensity}


def summarize(records: Iterable[LayerRecord]) -> dict:
    """Sums over ``records``: layers, params, macs, flops, activations, bytes and overall intensity."""
    s = {"layers": 0, "params": 0, "macs": 0, "activations": 0, "bytes_read": 0, "bytes_written": 0}
    for r in records:
        s["layers"] += 1
        for k in ("params", "macs", "activations", "bytes_read", "bytes_written"):
            s[k] += getattr(r, k)
    s["flops"] = 2 * s["macs"]
    s["bytes"] = s["bytes_read"] + s["bytes_written"]
    s["intensity"] = s["flops"] / s["bytes"] if s["bytes"] else 0.0
    return s


@dataclass
class Profile:
    """Per-layer records of one forward pass, with totals and roll-ups."""

    layers: list[LayerRecord]
    input_size: tuple[int, ...]  # full input shape, batch first
    dtype: torch.dtype

    def totals(self) -> dict:
        return summarize(self.layers)

    def _group(self, key) -> dict[str, dict]:
        groups: dict[str, list[LayerRecord]] = {}
        for r in self.layers:
            groups.setdefault(key(r), []).append(r)
        return {k: summarize(v) for k, v in groups.items()}

    def by_kind(self) -> dict[str, dict]:
        """Roll-up per layer kind, in :data:`KINDS` order."""
        groups = self._group(lambda r: r.kind)
        return {k: groups[k] for k in KINDS if k in groups}

    def by_block(self) -> dict[str, dict]:
        """Roll-up per block in execution order; layers outside any block are grouped by their stage."""
        return self._group(lambda r: r.block or r.stage or "(model)")

    def by_stage(self) -> dict[str, dict]:
        """Roll-up per top-level stage in execution order."""
        return self._group(lambda r: r.stage or "(model)")

    def get(self, name: str) -> LayerRecord:
        """The record called ``name``."""
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r} in this profile")
