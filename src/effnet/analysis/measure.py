"""Measured latency, per layer and for the whole forward, joined with the analytic profile as a roofline.

How the per-layer times are taken, and what that costs:

* Each module is timed between a forward pre-hook and a forward hook: CUDA events on a GPU, a host
  clock on a CPU (where kernels run synchronously).  A hook runs Python between every two layers,
  so layers are timed as if run one after the other, each with its own launch cost; the sum of the
  per-layer times is compared with the whole forward timed *without* hooks, and the gap is reported
  as the unaccounted share (negative when the hooks themselves add time).
* Functional operations that are no module (the residual ``add``, SE's pooling and gating) are
  timed as the time their parent module spends outside its children.
* With ``compile=True`` the graph is fused across layers, so per-layer times mean nothing: only the
  whole forward is timed, and the layer rows keep their predictions only.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from effnet.analysis.ceilings import Ceilings, get_ceilings, resolve_device
from effnet.analysis.hooks import HookTimer, attribute, hook_overhead, plan

if TYPE_CHECKING:
    from effnet.analysis.profile import LayerRecord, Profile


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` (a no-op on CPU)."""
    d = torch.device(device)
    if d.type == "cuda":
        return lambda: torch.cuda.synchronize(d)
    return lambda: None


@dataclass(frozen=True)
class Timing:
    """Seconds per call of ``runs`` timed calls; the median is the number to quote."""

    times: tuple[float, ...]
    warmup: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def iqr(self) -> float:
        """Inter-quartile range: the spread to compare a difference against."""
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    def to_dict(self) -> dict:
        return {"median_s": self.median, "min_s": self.min, "iqr_s": self.iqr, "runs": len(self.times),
                "warmup": self.warmup}


def time_fn(fn: Callable[[], object], *, warmup: int = 3, runs: int = 20, device: str | torch.device = "cpu",
            synchronize: Callable[[], None] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``runs`` calls each between two synchronisations.

    The host clock after a device synchronisation measures what a caller waits for, launch
    overhead included, which is the latency a user of the model sees.
    """
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    sync = synchronize or synchronizer(device)
    for _ in range(warmup):  # first calls pay for allocation, autotuning, compilation
        fn()
    times = []
    for _ in range(runs):
        sync()  # start from an idle device, so earlier queued work is not counted
        t0 = clock()
        fn()
        sync()  # the work was only queued: wait for it before reading the clock
        times.append(clock() - t0)
    return Timing(tuple(times), warmup)


@dataclass(frozen=True)
class LayerTime:
    """One profile record with its roofline prediction and, unless compiled, its measured time."""

    record: LayerRecord
    predicted_s: float
    bound: str  # "compute" or "memory"
    measured_s: float | None

    @property
    def achieved_flops(self) -> float | None:
        return self.record.flops / self.measured_s if self.measured_s else None

    @property
    def achieved_bandwidth(self) -> float | None:
        return self.record.bytes / self.measured_s if self.measured_s else None

    @property
    def fraction(self) -> float | None:
        """Share of the roofline reached: predicted over measured time (1 = at the ceiling)."""
        return self.predicted_s / self.measured_s if self.measured_s else None

    def to_dict(self) -> dict:
        r = self.record
        return {"name": r.name, "kind": r.kind, "block": r.block, "stage": r.stage, "flops": r.flops,
                "bytes": r.bytes, "intensity": r.intensity, "predicted_s": self.predicted_s, "bound": self.bound,
                "measured_s": self.measured_s, "achieved_flops": self.achieved_flops,
                "fraction": self.fraction}


@dataclass
class Measurement:
    """Per-layer roofline view and whole-model latency of one model on one device."""

    model: str
    device: str
    dtype: str
    batch_size: int
    channels_last: bool
    compiled: bool
    ceilings: Ceilings
    layers: list[LayerTime]
    whole: Timing  # the forward without hooks
    hooked: Timing | None = None  # the forward with hooks (None when compiled)
    unattributed_s: float = 0.0  # inside the hooked forward, time that belongs to no record
    hook_overhead_s: float = 0.0  # the hooks' own calibrated cost, taken off the per-layer times (CPU only)
    per_layer_min_sum_s: float | None = None  # sum of each layer's fastest run: robust to preemption
    notes: list[str] = field(default_factory=list)

    @property
    def per_layer_sum_s(self) -> float | None:
        if self.compiled:
            return None
        return sum(t.measured_s or 0.0 for t in self.layers)

    @property
    def unaccounted_share(self) -> float | None:
        """``1 - sum(per-layer) / whole``: launch gaps, Python and framework overhead between layers."""
        s = self.per_layer_sum_s
        return None if s is None else 1.0 - s / self.whole.median

    @property
    def predicted_s(self) -> float:
        return sum(t.predicted_s for t in self.layers)

    def by_kind(self) -> dict[str, dict]:
        """Per layer kind: count, FLOPs, bytes, predicted and measured seconds, share of measured time."""
        out: dict[str, dict] = {}
        for t in self.layers:
            k = out.setdefault(t.record.kind, {"layers": 0, "flops": 0, "bytes": 0, "predicted_s": 0.0,
                                               "measured_s": 0.0, "memory_bound": 0})
            k["layers"] += 1
            k["flops"] += t.record.flops
            k["bytes"] += t.record.bytes
            k["predicted_s"] += t.predicted_s
            k["measured_s"] += t.measured_s or 0.0
            k["memory_bound"] += t.bound == "memory"
        total = self.per_layer_sum_s or 0.0
        for k in out.values():
            k["share"] = k["measured_s"] / total if total else None
            k["achieved_flops"] = k["flops"] / k["measured_s"] if k["measured_s"] else None
            k["fraction"] = k["predicted_s"] / k["measured_s"] if k["measured_s"] else None
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["measured_s"]))

    def summary(self) -> list[str]:
        """A few lines for the terminal: whole-model latency, the per-layer sum and what is unaccounted."""
        c = self.ceilings
        mode = (", channels_last" if self.channels_last else "") + (", torch.compile" if self.compiled else "")
        lines = [
            f"{self.model} on {c.device_name} ({self.device}), {self.dtype}, batch {self.batch_size}{mode}",
            (f"ceilings: {c.peak_flops / 1e9:.1f} GFLOP/s matmul, {c.bandwidth / 1e9:.1f} GB/s copy "
             f"(ridge {c.ridge_intensity:.1f} FLOP/byte)"),
            (f"whole forward: {self.whole.median * 1e3:.3f} ms median of {len(self.whole.times)} "
             f"(roofline floor {self.predicted_s * 1e3:.3f} ms)"),
        ]
        if self.compiled:
            lines.append("per-layer times: not measured (torch.compile fuses across layers; whole model only)")
        else:
            s = self.per_layer_sum_s or 0.0
            share = self.unaccounted_share or 0.0
            verdict = "within 15%" if abs(share) <= 0.15 else "NOT within 15%"
            lines.append(f"per-layer sum: {s * 1e3:.3f} ms = {s / self.whole.median:.1%} of the whole forward; "
                         f"unaccounted {share:+.1%} ({verdict}; launch gaps and framework overhead, "
                         f"negative = the timing hooks' own cost)")
            if self.hook_overhead_s:
                lines.append(f"timing hooks' own cost, calibrated and taken off the layer times: "
                             f"{self.hook_overhead_s * 1e3:.3f} ms per forward")
            elif self.device.startswith("cuda"):
                lines.append("timing hooks' host cost is not taken off: it shows in the layer times only where "
                             "the GPU waits for the host (small batches)")
            if self.per_layer_min_sum_s:
                # A long forward is interrupted by other processes more often than a short layer, so
                # on a shared machine medians of the two disagree; the fastest runs show the floor.
                lines.append(f"fastest runs: per-layer minima sum to {self.per_layer_min_sum_s * 1e3:.3f} ms = "
                             f"{self.per_layer_min_sum_s / self.whole.min:.1%} of the fastest whole forward "
                             f"({self.whole.min * 1e3:.3f} ms)")
        if not self.compiled:
            lines.append("time by kind: share of the per-layer sum, achieved FLOP/s, share of the roof reached, "
                         "memory-bound layers")
            for kind, k in self.by_kind().items():
                rate = "-" if k["achieved_flops"] is None else f"{k['achieved_flops'] / 1e9:.1f} GFLOP/s"
                reached = "-" if k["fraction"] is None else f"{k['fraction']:.0%}"
                lines.append(f"  {kind:<10} {k['share'] or 0:6.1%}  {k['measured_s'] * 1e3:9.3f} ms  {rate:>16}  "
                             f"{reached:>5} of roof  {k['memory_bound']}/{k['layers']} memory-bound")
        lines.extend(self.notes)
        return lines

    def to_dict(self) -> dict:
        return {"model": self.model, "device": self.device, "dtype": self.dtype, "batch_size": self.batch_size,
                "channels_last": self.channels_last, "compiled": self.compiled,
                "ceilings": self.ceilings.to_dict(), "whole": self.whole.to_dict(),
                "hooked": self.hooked.to_dict() if self.hooked else None,
                "per_layer_sum_s": self.per_layer_sum_s, "unaccounted_share": self.unaccounted_share,
                "unattributed_s": self.unattributed_s, "hook_overhead_s": self.hook_overhead_s,
                "per_layer_min_sum_s": self.per_layer_min_sum_s, "by_kind": self.by_kind(),
                "layers": [t.to_dict() for t in self.layers], "notes": self.notes}


def prepare(model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    """An eval-mode copy of ``model`` on ``device`` in ``dtype`` (the caller's model is left as it is)."""
    m = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def make_input(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    x = torch.randn(shape, device=device).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def measure(model: nn.Module, input_size: tuple[int, ...] | int, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32, batch_size: int = 1, channels_last: bool = False,
            compile: bool = False, *, warmup: int | None = None, runs: int | None = None,
            ceilings: Ceilings | None = None, analytic: Profile | None = None, name: str | None = None,
            ) -> Measurement:
    """Time ``model`` per layer and whole, and join the times with its analytic profile and the ceilings."""
    d = resolve_device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    warmup = (10 if d.type == "cuda" else 3) if warmup is None else warmup
    runs = (50 if d.type == "cuda" else 10) if runs is None else runs
    if analytic is None:
        from effnet.analysis.profile import profile

        analytic = profile(model, input_size, dtype, batch_size=batch_size)
    ceilings = ceilings or get_ceilings(d, dtype)
    predicted = {r.name: ceilings.predicted_time(r.flops, r.bytes) for r in analytic.layers}

    m = prepare(model, d, dtype, channels_last)
    x = make_input(tuple(analytic.input_size), d, dtype, channels_last)
    fwd = torch.compile(m, dynamic=False) if compile else m
    notes: list[str] = []
    with torch.inference_mode():
        whole = time_fn(lambda: fwd(x), warmup=warmup, runs=runs, device=d)
        per_record: dict[str, float] = {}
        hooked, unattributed, hook_cost, min_sum = None, 0.0, 0.0, None
        if compile:
            notes.append("torch.compile: per-layer times not measured, only the whole forward")
        else:
            overhead = hook_overhead(d)
            p = plan(analytic.layers, {n for n, _ in m.named_modules()})
            timer = HookTimer(m, p.hooked, d)
            try:
                samples, totals, leftovers, removed = [], [], [], []
                for i in range(warmup + runs):
                    inclusive = timer.run(lambda: m(x))
                    if i >= warmup:
                        rec, left, cost = attribute(inclusive, p, predicted, overhead)
                        samples.append(rec)
                        totals.append(sum(inclusive[""]))
                        leftovers.append(left)
                        removed.append(cost)
            finally:
                timer.remove()
            per_record = {n: statistics.median(s[n] for s in samples) for n in samples[0]}
            min_sum = sum(min(s[n] for s in samples) for n in samples[0])
            hooked = Timing(tuple(totals), warmup)
            unattributed = statistics.median(leftovers)
            hook_cost = statistics.median(removed)
            missing = [r.name for r in analytic.layers if r.name not in per_record]
            if missing:
                notes.append(f"{len(missing)} profile records were not reached by the forward: {missing[:3]}")
    layers = [LayerTime(r, predicted[r.name], ceilings.bound(r.flops, r.bytes), per_record.get(r.name))
              for r in analytic.layers]
    model_name = name or getattr(getattr(model, "config", None), "name", None) or type(model).__name__
    return Measurement(model_name, str(d), str(dtype).removeprefix("torch."), batch_size, channels_last,
                       compile, ceilings, layers, whole, hooked, unattributed, hook_cost, min_sum, notes)
