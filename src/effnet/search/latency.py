"""A latency lookup table: each distinct block timed once on the device, summed into a network's latency.

The key of an entry is what decides a block's cost: its :class:`~effnet.plan.BlockSpec` without the
position fields (index, stage, drop-path rate), the input size, the batch and the mode
(``inference`` forward, or ``train-step`` forward + backward).  The stem and the head (conv, pool,
classifier) are entries of their own.  A table is cached as JSON per device, so a search times a
block once across runs; :func:`check` compares predicted with measured whole-network latency.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from effnet.analysis.timing import time_fn
from effnet.blocks import build_block
from effnet.config import ModelConfig
from effnet.io import write_atomic
from effnet.layers import ConvNormAct
from effnet.model import EfficientConvNet
from effnet.plan import BlockSpec, Plan, expand

MODES = ("inference", "train-step")
Timer = Callable[[nn.Module, torch.Tensor], float]  # seconds per call of the module on the input


def block_key(b: BlockSpec, size: int) -> str:
    """What a block's latency depends on, as a string key (where it sits and its drop rate left out)."""
    d = asdict(b)
    for k in ("index", "stage", "position", "drop_path_rate"):
        d.pop(k)
    d["block"] = b.block.value
    return json.dumps({**d, "size": size}, sort_keys=True)


def plan_entries(plan: Plan, resolution: int) -> list[tuple[str, Callable[[], tuple[nn.Module, tuple]]]]:
    """(key, builder of (module, input shape)) for the stem, every block and the head, in order."""
    st, hd = plan.stem, plan.head
    size = -(-resolution // st.stride)
    entries = [(json.dumps({"stem": asdict(st), "size": resolution}, sort_keys=True),
                lambda: (ConvNormAct(st.in_channels, st.out_channels, st.kernel, st.stride, activation=st.activation,
                                     padding=st.padding, bn_eps=st.bn_eps), (st.in_channels, resolution)))]
    for b in plan.blocks:
        entries.append((block_key(b, size), lambda b=b, s=size: (build_block(b), (b.in_channels, s))))
        size = -(-size // b.stride)
    entries.append((json.dumps({"head": asdict(hd), "size": size}, sort_keys=True),
                    lambda s=size: (_Head(hd), (hd.in_channels, s))))
    return entries


class _Head(nn.Module):
    def __init__(self, hd) -> None:
        super().__init__()
        self.conv = (nn.Identity() if hd.conv_channels is None
                     else ConvNormAct(hd.in_channels, hd.conv_channels, 1, activation=hd.activation, bn_eps=hd.bn_eps))
        self.fc = nn.Linear(hd.num_features, hd.num_classes) if hd.num_classes else nn.Identity()

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def torch_timer(device: str, mode: str, runs: int = 20) -> Timer:
    """Fastest of ``runs`` calls with effnet's timer: forward (inference) or forward + backward.

    The fastest, not the median: on a shared machine a whole network is preempted more often than
    one short block, so medians of the two disagree while their minima agree.
    """
    if mode not in MODES:
        raise ValueError(f"unknown latency mode {mode!r}; allowed: {', '.join(MODES)}")

    def timer(module: nn.Module, x: torch.Tensor) -> float:
        module = module.to(device)
        x = x.to(device)
        if mode == "inference":
            module.eval()
            with torch.inference_mode():
                return time_fn(lambda: module(x), warmup=3, runs=runs, device=device).min
        module.train()
        x.requires_grad_(True)

        def step():
            module(x).float().sum().backward()

        return time_fn(step, warmup=3, runs=runs, device=device).min

    return timer


@dataclass
class LatencyTable:
    """Seconds per entry key, for one device, mode and batch; filled lazily by ``timer``."""

    device: str
    mode: str
    batch: int
    entries: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    timed: int = 0  # entries timed in this process (the rest came from the cache)

    @staticmethod
    def open(cache_dir: str | Path, device_name: str, mode: str, batch: int) -> LatencyTable:
        """The cached table of this device/mode/batch (empty when none is cached yet)."""
        safe = "".join(c if c.isalnum() else "-" for c in device_name).strip("-").lower()
        path = Path(cache_dir, f"latency-{safe}-{mode}-b{batch}.json")
        entries = json.loads(path.read_text())["entries"] if path.exists() else {}
        return LatencyTable(device_name, mode, batch, entries, path)

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            doc = {"device": self.device, "mode": self.mode, "batch": self.batch, "entries": self.entries}
            write_atomic(self.path, json.dumps(doc, indent=0).encode())

    def predict(self, config: ModelConfig, timer: Timer) -> float:
        """Predicted seconds of the whole network: the sum of its entries, timing the missing ones,
        plus the calibrated cost between blocks (:meth:`calibrate`) per block."""
        config = _timed(config)
        plan = expand(config)
        total = self.entries.get(GLUE, 0.0) * len(plan.blocks)
        for key, build in plan_entries(plan, config.resolution):
            if key not in self.entries:
                module, (channels, size) = build()
                self.entries[key] = timer(module, torch.randn(self.batch, channels, size, size))
                self.timed += 1
            total += self.entries[key]
        return total


    def calibrate(self, config: ModelConfig, timer: Timer) -> float:
        """Time ``config`` whole once and store what its blocks' sum misses, per block (Python and
        framework calls between blocks, the stage containers); returns that per-block share."""
        if GLUE in self.entries:
            return self.entries[GLUE]
        self.entries[GLUE] = 0.0
        parts = self.predict(config, timer)
        whole = measure_network(config, timer, self.batch)
        self.entries[GLUE] = max(0.0, (whole - parts) / len(expand(config).blocks))
        return self.entries[GLUE]


GLUE = "between-blocks"  # the calibrated per-block cost outside the blocks


def _timed(config: ModelConfig) -> ModelConfig:
    # Stochastic depth and dropout skip work at random in training: time the network without them.
    return replace(config, drop_path_rate=0.0, drop_rate=0.0)


def measure_network(config: ModelConfig, timer: Timer, batch: int, repeats: int = 3) -> float:
    """Measured seconds of the whole network with the same timer as the table (the fastest of
    ``repeats`` timings: a whole network spans more of another process's bursts than one block)."""
    config = _timed(config)
    model = EfficientConvNet(config)
    x = torch.randn(batch, config.in_chans, config.resolution, config.resolution)
    return min(timer(model, x) for _ in range(repeats))


def check(table: LatencyTable, configs: list[ModelConfig], timer: Timer, tolerance: float = 0.10) -> dict:
    """Predicted vs measured whole-network latency; ``ok`` when every error is within ``tolerance``."""
    rows = []
    for c in configs:
        predicted = table.predict(c, timer)
        measured = measure_network(c, timer, table.batch)
        rows.append({"name": c.name, "predicted_ms": predicted * 1e3, "measured_ms": measured * 1e3,
                     "error": predicted / measured - 1})
    worst = max(abs(r["error"]) for r in rows)
    return {"device": table.device, "mode": table.mode, "batch": table.batch, "tolerance": tolerance,
            "worst_error": worst, "ok": worst <= tolerance, "networks": rows}


def random_configs(sample: Callable[[random.Random], ModelConfig], n: int, seed: int = 0) -> list[ModelConfig]:
    rng = random.Random(seed)
    return [sample(rng) for _ in range(n)]
