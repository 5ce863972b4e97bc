"""A latency lookup table: each distinct block timed once on the device, summed into a network's latency.

The key of an entry is what decides a block's cost: its :class:`~effnet.plan.BlockSpec` without the
position fields (index, stage, drop-path rate), the input size, the batch and the mode
(``inference`` forward, or ``train-step`` forward + backward).  The stem and the head (conv, pool,
classifier) are entries of their own.  A table is cached as JSON per device, so a search times a
block once across runs; :func:`check` compares predicted with measured whole-network latency.

Why the parts add up to the whole: every part is timed as it runs inside a network (a train-step
block computes the gradient of its input from an upstream gradient, the stem does not: its input is
the image), nothing is timed that the network does not do (no loss reduction per block, no
gradient accumulation into leaves), and what a block costs inside a network beyond its time alone,
less the timing harness's own cost per part, is one calibrated number per block type
(:meth:`LatencyTable.calibrate`), signed: on a GPU one synchronisation per part costs more than the
whole network spends between blocks, while on a CPU an MBConv's saved activations have left the
cache by the time a network's backward reads them.  Whole networks and parts are timed in
interleaved rounds (:func:`fastest`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from effnet.analysis.timing import capture_graph, time_fn
from effnet.blocks import build_block
from effnet.config import ModelConfig
from effnet.io import write_atomic
from effnet.layers import ConvNormAct
from effnet.model import EfficientConvNet
from effnet.plan import BlockSpec, Plan, expand
from effnet.tables import BlockType

MODES = ("inference", "train-step")
Timer = Callable[[nn.Module, torch.Tensor], float]  # seconds per call of the module on the input
METHOD = 3  # how entries are timed; a cached table timed another way is not reused
CLOCKS = ("auto", "wall", "thread", "graph")


def block_key(b: BlockSpec, size: int) -> str:
    """What a block's latency depends on, as a string key (where it sits and its drop rate left out)."""
    d = asdict(b)
    for k in ("index", "stage", "position", "drop_path_rate"):
        d.pop(k)
    d["block"] = b.block.value
    return json.dumps({**d, "size": size}, sort_keys=True)


def plan_entries(plan: Plan, resolution: int) -> list[tuple[str, Callable[[], tuple[nn.Module, tuple]]]]:
    """(key, builder of (module, (channels, size, input_grad))) for the stem, every block and the head, in order.

    ``input_grad``: whether a training step computes the gradient of the part's input (every part's
    but the stem's, whose input is the image)."""
    st, hd = plan.stem, plan.head
    size = -(-resolution // st.stride)
    entries = [(json.dumps({"stem": asdict(st), "size": resolution}, sort_keys=True),
                lambda: (ConvNormAct(st.in_channels, st.out_channels, st.kernel, st.stride, activation=st.activation,
                                     padding=st.padding, bn_eps=st.bn_eps), (st.in_channels, resolution, False)))]
    for b in plan.blocks:
        entries.append((block_key(b, size), lambda b=b, s=size: (build_block(b), (b.in_channels, s, True))))
        size = -(-size // b.stride)
    entries.append((json.dumps({"head": asdict(hd), "size": size}, sort_keys=True),
                    lambda s=size: (_Head(hd), (hd.in_channels, s, True))))
    return entries


class _Head(nn.Module):
    def __init__(self, hd) -> None:
        super().__init__()
        self.conv = (nn.Identity() if hd.conv_channels is None
                     else ConvNormAct(hd.in_channels, hd.conv_channels, 1, activation=hd.activation, bn_eps=hd.bn_eps))
        self.fc = nn.Linear(hd.num_features, hd.num_classes) if hd.num_classes else nn.Identity()

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def resolve_clock(device: str, clock: str = "auto") -> str:
    """``wall``; ``thread``: the CPU time of the calling thread, which a CPU running torch on one
    thread spends on the computation itself; or ``graph`` (CUDA): each part and each network captured
    as one CUDA graph and replayed, so what is timed is the device's work without the host's
    per-operation launch cost.  ``auto`` picks ``thread`` on a one-thread CPU (on a shared machine
    time spent preempted by other processes is not the network's), ``graph`` on a GPU (an eager
    PyTorch step of a small network is bound by the host's launches, whose cost does not add up block
    by block: docs/search.md), else ``wall``."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; allowed: {', '.join(CLOCKS)}")
    if clock == "graph" and torch.device(device).type != "cuda":
        raise ValueError(f"clock 'graph' (CUDA graphs) needs a CUDA device, got {device}")
    single_thread_cpu = torch.device(device).type == "cpu" and torch.get_num_threads() == 1
    if clock == "thread" and not single_thread_cpu:
        raise ValueError(f"clock 'thread' needs device cpu with one torch thread (OMP_NUM_THREADS=1), "
                         f"got {device} with {torch.get_num_threads()} threads")
    if clock == "auto":
        return "thread" if single_thread_cpu else "graph" if torch.device(device).type == "cuda" else "wall"
    return clock


def torch_timer(device: str, mode: str, runs: int = 20, clock: str = "auto", steps: int = 5,
                evict_mib: int = 64) -> Timer:
    """Fastest of ``runs`` calls with effnet's timer: forward (inference) or a training step's share.

    ``train-step``: forward in training mode, then the gradients of every parameter and, where the
    input requires grad (every part of a network but the stem), of the input, from an upstream
    gradient of the output's shape (``torch.autograd.grad``: dense kernels cost the same whatever
    its values).  No loss, no accumulation into ``.grad``, no optimizer step, for a part and for a
    whole network alike, so the parts add up to the whole.

    On a CPU a train-step part's caches are evicted between its forward and its backward (writing
    ``evict_mib`` MiB, untimed): in a network's training step the rest of the network runs in between,
    so the activations a block's backward reads have left the cache, while a part timed alone would
    find them there.

    The fastest, not the median: on a shared machine a whole network is preempted more often than
    one short block, so medians of the two disagree while their minima agree.  ``clock``: see
    :func:`resolve_clock`.

    On a GPU a train-step sample is ``steps`` calls between two synchronisations, per call: the time
    a training loop spends per step, where the host queues the next step while the device runs this
    one.  A part synchronised after every call would pay one device round trip per part, which a
    network pays once per step.
    """
    if mode not in MODES:
        raise ValueError(f"unknown latency mode {mode!r}; allowed: {', '.join(MODES)}")
    clock = resolve_clock(device, clock)
    clock_fn = time.thread_time if clock == "thread" else time.perf_counter
    on_gpu = torch.device(device).type == "cuda"
    number = steps if mode == "train-step" and on_gpu else 1
    evict = torch.zeros(evict_mib * 2**20 // 4) if mode == "train-step" and not on_gpu and evict_mib else None

    def timer(module: nn.Module, x: torch.Tensor) -> float:
        module = module.to(device)
        xd = x.detach().to(device).requires_grad_(x.requires_grad)
        if mode == "inference":
            module.eval()
            with torch.inference_mode():
                return run(lambda: module(xd), 1)
        module.train()
        wrt = [p for p in module.parameters() if p.requires_grad] + ([xd] if xd.requires_grad else [])
        upstream = torch.randn_like(module(xd))

        if evict is not None and not isinstance(module, EfficientConvNet):  # a network's backward follows its forward
            return _cold_backward(module, xd, wrt, upstream, runs, clock_fn, evict)

        def step():
            torch.autograd.grad(module(xd), wrt, upstream)

        return run(step, number)

    def run(fn: Callable[[], object], number: int) -> float:
        if clock != "graph":
            return time_fn(fn, warmup=3, runs=runs, device=device, clock=clock_fn, number=number).min
        graph, _ = capture_graph(fn)  # replays queue behind each other: the device's time per call
        return time_fn(graph.replay, warmup=3, runs=runs, device=device, number=steps).min

    return timer


def _cold_backward(module: nn.Module, x: torch.Tensor, wrt: list, upstream: torch.Tensor, runs: int,
                   clock: Callable[[], float], evict: torch.Tensor) -> float:
    """Fastest forward + backward of ``runs`` (after 3 warm-up), the caches evicted between the two
    (untimed): in a network's training step the rest of the network runs between a block's forward
    and its backward, so what the backward reads comes from memory, not from the cache."""
    best = math.inf
    for i in range(runs + 3):
        t0 = clock()
        out = module(x)
        t1 = clock()
        evict.add_(1.0)  # read and write more than the last-level cache holds
        upstream.add_(0.0)  # the upstream gradient was just written by the next block's backward: warm
        t2 = clock()
        torch.autograd.grad(out, wrt, upstream)
        t3 = clock()
        if i >= 3:
            best = min(best, t1 - t0 + t3 - t2)
    return best


@dataclass
class LatencyTable:
    """Seconds per entry key, for one device, mode, batch and clock; filled lazily by ``timer``."""

    device: str
    mode: str
    batch: int
    clock: str = "wall"  # what the entries were timed with (:func:`resolve_clock`)
    entries: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    timed: int = 0  # entries timed in this process (the rest came from the cache)

    @staticmethod
    def open(cache_dir: str | Path, device_name: str, mode: str, batch: int, clock: str = "wall") -> LatencyTable:
        """The cached table of this device/mode/batch/clock (empty when none is cached, or it was timed another way)."""
        safe = "".join(c if c.isalnum() else "-" for c in device_name).strip("-").lower()
        path = Path(cache_dir, f"latency-{safe}-{mode}-b{batch}-{clock}.json")
        doc = json.loads(path.read_text()) if path.exists() else {}
        entries = doc["entries"] if doc.get("method") == METHOD and doc.get("clock") == clock else {}
        return LatencyTable(device_name, mode, batch, clock, entries, path)

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            doc = {"device": self.device, "mode": self.mode, "batch": self.batch, "clock": self.clock,
                   "method": METHOD, "entries": self.entries}
            write_atomic(self.path, json.dumps(doc, indent=0).encode())

    def predict(self, config: ModelConfig, timer: Timer) -> float:
        """Predicted seconds of the whole network: the sum of its entries, timing the missing ones,
        plus each block's calibrated in-network share (:meth:`calibrate`)."""
        config = _timed(config)
        plan = expand(config)
        total = sum(self.glue(b.block) for b in plan.blocks)
        for key, build in plan_entries(plan, config.resolution):
            if key not in self.entries:
                module, shape = build()
                self.entries[key] = timer(module, _input(self.batch, shape))
                self.timed += 1
            total += self.entries[key]
        return total

    def glue(self, block: BlockType) -> float:
        """The calibrated in-network share of one block of this type (seconds; 0 before calibration;
        the mean share of the calibrated types for a type no calibration network had)."""
        shares = {k: v for k, v in self.entries.items() if k.startswith(GLUE)}
        return shares.get(glue_key(block), sum(shares.values()) / len(shares) if shares else 0.0)

    def calibrate(self, configs: ModelConfig | list[ModelConfig], timer: Timer, rounds: int = 5) -> dict[str, float]:
        """Store, per block type, what a block adds inside a network to the sum of its parts: the
        network's own work between blocks (stage containers, its forward's Python), the cost of its
        activations going cold before its backward reads them, less the harness's cost per part (a
        synchronisation each on a GPU), so a share can be negative.  Least squares over ``configs``
        (whole minus parts = sum over block types of count x share; the search passes its base and the
        base with every stage's block type swapped, so each type is fitted).  Wholes and parts are
        timed in turn for ``rounds`` rounds, the fastest of each kept, so all are measured under the
        same load; the parts' minima also refine their entries.  Returns the shares by key."""
        configs = [_timed(c) for c in (configs if isinstance(configs, list) else [configs])]
        if not configs:
            raise ValueError("calibrate needs at least one network")
        known = {k: v for k, v in self.entries.items() if k.startswith(GLUE)}
        if known:
            return known
        plans = [expand(c) for c in configs]
        items = {}
        for c, plan in zip(configs, plans):
            items.update({key: _part(build, self.batch) for key, build in plan_entries(plan, c.resolution)})
        items.update({(_WHOLE, i): _network(c, self.batch) for i, c in enumerate(configs)})
        best = fastest(items, timer, rounds)
        self.entries.update({k: min(t, self.entries.get(k, math.inf)) for k, t in best.items() if isinstance(k, str)})
        types = sorted({b.block for plan in plans for b in plan.blocks}, key=lambda t: t.value)
        counts = torch.tensor([[float(sum(b.block is t for b in plan.blocks)) for t in types] for plan in plans],
                              dtype=torch.float64)
        rest = torch.tensor([[best[(_WHOLE, i)] - sum(self.entries[k] for k, _ in plan_entries(plan, c.resolution))]
                             for i, (c, plan) in enumerate(zip(configs, plans))], dtype=torch.float64)
        shares = torch.linalg.lstsq(counts, rest).solution[:, 0].tolist()  # repeats share a key: one term each
        glue = {glue_key(t): v for t, v in zip(types, shares)}
        self.entries.update(glue)
        return glue

    def missing(self, config: ModelConfig) -> dict[str, tuple[nn.Module, torch.Tensor]]:
        """The parts of ``config`` the table has no entry for, built: key -> (module, input)."""
        config = _timed(config)
        return {key: _part(build, self.batch) for key, build in plan_entries(expand(config), config.resolution)
                if key not in self.entries}


GLUE = "between-blocks"  # prefix of the calibrated in-network share of one block, per type (seconds; may be < 0)


def glue_key(block: BlockType) -> str:
    return f"{GLUE}:{block.value}"


_WHOLE = object()  # the whole network's key among a calibration's timed items


def _input(batch: int, shape: tuple[int, int, bool]) -> torch.Tensor:
    channels, size, grad = shape
    return torch.randn(batch, channels, size, size).requires_grad_(grad)


def _part(build: Callable[[], tuple[nn.Module, tuple]], batch: int) -> tuple[nn.Module, torch.Tensor]:
    module, shape = build()
    return module, _input(batch, shape)


def _network(config: ModelConfig, batch: int) -> tuple[nn.Module, torch.Tensor]:
    return EfficientConvNet(config), _input(batch, (config.in_chans, config.resolution, False))


def _timed(config: ModelConfig) -> ModelConfig:
    # Stochastic depth and dropout skip work at random in training: time the network without them.
    return replace(config, drop_path_rate=0.0, drop_rate=0.0)


def fastest(items: dict, timer: Timer, rounds: int) -> dict:
    """The fastest time of each ``(module, input)`` over ``rounds`` rounds that time every item once in
    turn: a burst of another process's load (or a slower clock) then costs every item one round,
    not one item all of its runs, and parts and wholes are measured under the same conditions."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    best = dict.fromkeys(items, math.inf)
    for _ in range(rounds):
        for key, (module, x) in items.items():
            best[key] = min(best[key], timer(module, x))
    return best


def check(table: LatencyTable, configs: list[ModelConfig], timer: Timer, tolerance: float = 0.10,
          rounds: int = 5) -> dict:
    """Predicted vs measured whole-network latency; ``ok`` when every error is within ``tolerance``.

    The table's missing entries and the whole networks are timed together in ``rounds`` interleaved
    rounds (:func:`fastest`); entries already in the table (the calibration's) are used as stored.
    """
    items: dict = {}
    for c in configs:
        items.update(table.missing(c))
    items.update({i: _network(_timed(c), table.batch) for i, c in enumerate(configs)})
    best = fastest(items, timer, rounds)
    table.entries.update({k: t for k, t in best.items() if isinstance(k, str)})
    table.timed += sum(isinstance(k, str) for k in best)
    rows = []
    for i, c in enumerate(configs):
        predicted, measured = table.predict(c, timer), best[i]
        parts = predicted - sum(table.glue(b.block) for b in expand(_timed(c)).blocks)
        rows.append({"name": c.name, "predicted_ms": predicted * 1e3, "measured_ms": measured * 1e3,
                     "parts_ms": parts * 1e3,
                     "error": predicted / measured - 1})
    worst = max(abs(r["error"]) for r in rows)
    return {"device": table.device, "mode": table.mode, "batch": table.batch, "clock": table.clock,
            "tolerance": tolerance,
            "worst_error": worst, "ok": worst <= tolerance,
            "between_blocks_ms": {k.split(":", 1)[1]: v * 1e3 for k, v in table.entries.items() if k.startswith(GLUE)},
            "rounds": rounds, "networks": rows}


def random_configs(sample: Callable[[random.Random], ModelConfig], n: int, seed: int = 0) -> list[ModelConfig]:
    rng = random.Random(seed)
    return [sample(rng) for _ in range(n)]
