"""Measured latency, per layer and for the whole forward, joined with the analytic profile as a roofline.

The whole forward is timed without any instrumentation (:func:`~effnet.analysis.timing.time_fn`);
with the profiler method, in rounds between the traced forwards.
Per layer there are two methods (``per_layer=``):

* ``"profiler"`` (the default on a GPU): torch.profiler's kernel records, labelled by module in one
  forward and timed in others without hooks (:mod:`effnet.analysis.traced`).  Each layer gets its
  share of the GPU timeline, kernels plus the time the GPU waited for their launch, so the layers
  add up to the forward; the kernel time alone is kept as ``busy_s``.
* ``"hooks"`` (the default on a CPU, where work runs synchronously on the host): each module is
  timed between a forward pre-hook and a forward hook on the host clock, the hooks' own cost
  calibrated and taken off (:mod:`effnet.analysis.hooks`).  Functional operations that are no
  module (the residual ``add``, SE's pooling and gating) get the time their parent module spends
  outside its children.

The sum of the per-layer times is compared with the whole forward; the gap is reported as the
unaccounted share.  With ``compile=True`` the graph is fused across layers, so per-layer times mean
nothing: only the whole forward is timed, and the layer rows keep their predictions only.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field

import torch
from torch import nn

from effnet.analysis.ceilings import Ceilings, get_ceilings
from effnet.analysis.hooks import HookTimer, attribute, hook_overhead, hook_plan
from effnet.analysis.profile import LayerRecord, Profile, profile
from effnet.analysis.timing import Timing, synchronizer, time_fn
from effnet.analysis.traced import trace_layers
from effnet.devices import resolve_device

PER_LAYER_METHODS = ("profiler", "hooks")


@dataclass(frozen=True)
class LayerTime:
    """One profile record with its roofline prediction and, unless compiled, its measured time."""

    record: LayerRecord
    predicted_s: float
    bound: str  # "compute" or "memory"
    measured_s: float | None
    busy_s: float | None = None  # profiler method: the record's kernel time alone, without launch waits

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
                "measured_s": self.measured_s, "busy_s": self.busy_s, "achieved_flops": self.achieved_flops,
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
    whole: Timing  # the forward with nothing attached
    per_layer: str | None = None  # "profiler" or "hooks"; None when compiled
    instrumented: Timing | None = None  # the forwards the layers were timed in: hooked totals, or traced spans
    unattributed_s: float = 0.0  # inside those forwards, time that belongs to no record
    overhead_s: float = 0.0  # the per-layer method's own calibrated cost per forward, taken off the layer times
    per_layer_min_sum_s: float | None = None  # sum of each layer's fastest run: robust to preemption
    notes: list[str] = field(default_factory=list)

    @property
    def per_layer_sum_s(self) -> float | None:
        if self.compiled:
            return None
        return sum(t.measured_s or 0.0 for t in self.layers)

    @property
    def busy_sum_s(self) -> float | None:
        """Profiler method: the kernels' own time, summed (the rest of the forward the device waited)."""
        if self.per_layer != "profiler":
            return None
        return sum(t.busy_s or 0.0 for t in self.layers)

    @property
    def unaccounted_share(self) -> float | None:
        """``1 - sum(per-layer) / whole``: launch gaps, Python and framework overhead outside the layers."""
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
            lines += self._per_layer_lines()
            lines.append("time by kind: share of the per-layer sum, achieved FLOP/s, share of the roof reached, "
                         "memory-bound layers")
            for kind, k in self.by_kind().items():
                rate = "-" if k["achieved_flops"] is None else f"{k['achieved_flops'] / 1e9:.1f} GFLOP/s"
                reached = "-" if k["fraction"] is None else f"{k['fraction']:.0%}"
                lines.append(f"  {kind:<10} {k['share'] or 0:6.1%}  {k['measured_s'] * 1e3:9.3f} ms  {rate:>16}  "
                             f"{reached:>5} of roof  {k['memory_bound']}/{k['layers']} memory-bound")
        lines.extend(self.notes)
        return lines

    def _per_layer_lines(self) -> list[str]:
        s = self.per_layer_sum_s or 0.0
        share = self.unaccounted_share or 0.0
        verdict = "within 15%" if abs(share) <= 0.15 else "NOT within 15%"
        how = ("torch.profiler kernel records, GPU timeline incl. launch waits" if self.per_layer == "profiler"
               and self.device.startswith("cuda") else "torch.profiler op records" if self.per_layer == "profiler"
               else "forward hooks")
        lines = [(f"per-layer sum ({how}): {s * 1e3:.3f} ms = {s / self.whole.median:.1%} of the whole forward; "
                  f"unaccounted {share:+.1%} ({verdict}; negative = the per-layer method's own cost)")]
        if self.busy_sum_s is not None:
            b = self.busy_sum_s
            lines.append(f"busy: the layers' own kernel/op time sums to {b * 1e3:.3f} ms = "
                         f"{b / self.whole.median:.1%} of the whole forward (the rest the device waited for launches)")
        if self.overhead_s:
            what = "the tracer's" if self.per_layer == "profiler" else "the timing hooks'"
            lines.append(f"{what} own cost, calibrated apart from the model and taken off the layer times: "
                         f"{self.overhead_s * 1e3:.3f} ms per forward")
        if self.per_layer_min_sum_s:
            # A long forward is interrupted by other processes more often than a short layer, so
            # on a shared machine medians of the two disagree; the fastest runs show the floor.
            lines.append(f"fastest runs: per-layer minima sum to {self.per_layer_min_sum_s * 1e3:.3f} ms = "
                         f"{self.per_layer_min_sum_s / self.whole.min:.1%} of the fastest whole forward "
                         f"({self.whole.min * 1e3:.3f} ms)")
        return lines

    def to_dict(self) -> dict:
        return {"model": self.model, "device": self.device, "dtype": self.dtype, "batch_size": self.batch_size,
                "channels_last": self.channels_last, "compiled": self.compiled, "per_layer": self.per_layer,
                "ceilings": self.ceilings.to_dict(), "whole": self.whole.to_dict(),
                "instrumented": self.instrumented.to_dict() if self.instrumented else None,
                "per_layer_sum_s": self.per_layer_sum_s, "busy_sum_s": self.busy_sum_s,
                "unaccounted_share": self.unaccounted_share, "unattributed_s": self.unattributed_s,
                "overhead_s": self.overhead_s, "per_layer_min_sum_s": self.per_layer_min_sum_s,
                "by_kind": self.by_kind(), "layers": [t.to_dict() for t in self.layers], "notes": self.notes}


def prepare(model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    """An eval-mode copy of ``model`` on ``device`` in ``dtype`` (the caller's model is left as it is)."""
    m = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def make_input(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    x = torch.randn(shape, device=device).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _hooked_times(m: nn.Module, x: torch.Tensor, analytic: Profile, predicted: dict[str, float], d: torch.device,
                  warmup: int, runs: int) -> tuple[dict, float, Timing, float, float]:
    """Hooks method: per-record medians, sum of per-record minima, hooked totals, unattributed and hook cost."""
    overhead = hook_overhead(d)
    p = hook_plan(analytic.layers, {n for n, _ in m.named_modules()})
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
    return (per_record, min_sum, Timing(tuple(totals), warmup), statistics.median(leftovers),
            statistics.median(removed))


def measure(model: nn.Module, input_size: tuple[int, ...] | int, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32, batch_size: int | None = None, channels_last: bool = False,
            compile: bool = False, *, warmup: int | None = None, runs: int | None = None,
            ceilings: Ceilings | None = None, analytic: Profile | None = None, name: str | None = None,
            per_layer: str | None = None) -> Measurement:
    """Time ``model`` per layer and whole, and join the times with its analytic profile and the ceilings.

    ``per_layer``: ``"profiler"`` or ``"hooks"`` (default: profiler on a GPU, hooks on a CPU).
    """
    d = resolve_device(device)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    method = per_layer or ("profiler" if d.type == "cuda" else "hooks")
    if method not in PER_LAYER_METHODS:
        raise ValueError(f"per_layer must be one of {PER_LAYER_METHODS}, got {per_layer!r}")
    warmup = (10 if d.type == "cuda" else 3) if warmup is None else warmup
    runs = (50 if d.type == "cuda" else 10) if runs is None else runs
    analytic = analytic or profile(model, input_size, dtype, batch_size=batch_size)
    batch_size = analytic.input_size[0]  # an (N, C, H, W) input_size carries the batch
    ceilings = ceilings or get_ceilings(d, dtype)
    predicted = {r.name: ceilings.predicted_time(r.flops, r.bytes) for r in analytic.layers}

    m = prepare(model, d, dtype, channels_last)
    x = make_input(tuple(analytic.input_size), d, dtype, channels_last)
    fwd = torch.compile(m, dynamic=False) if compile else m
    notes: list[str] = []
    per_record: dict[str, float] = {}
    busy: dict[str, float] = {}
    instrumented, unattributed, overhead, min_sum = None, 0.0, 0.0, None
    with torch.inference_mode():
        whole = time_fn(lambda: fwd(x), warmup=warmup, runs=runs, device=d)
        if compile:
            notes.append("torch.compile: per-layer times not measured, only the whole forward")
        elif method == "hooks":
            per_record, min_sum, instrumented, unattributed, overhead = _hooked_times(
                m, x, analytic, predicted, d, warmup, runs)
        else:
            traced = trace_layers(m, x, [r.name for r in analytic.layers], predicted, d, runs, synchronizer(d))
            per_record, busy, unattributed = traced.per_record, traced.busy, traced.unattributed_s
            min_sum, overhead = sum(traced.per_record_min.values()), traced.removed_s
            instrumented = Timing(traced.spans, 1)
            notes += traced.notes
            # The whole forward as timed between the traced ones, round by round: a host that speeds
            # up or slows down meanwhile (clocks, other load) moves both alike.
            whole = Timing(traced.wholes, whole.warmup + len(whole.times))
    if not compile:
        missing = [r.name for r in analytic.layers if r.name not in per_record and (r.bytes or r.flops)]
        if missing:
            notes.append(f"{len(missing)} profile records got no time (no work of theirs was seen): {missing[:3]}")
    layers = [LayerTime(r, predicted[r.name], ceilings.bound(r.flops, r.bytes),
                        None if compile else per_record.get(r.name, 0.0), busy.get(r.name) if busy else None)
              for r in analytic.layers]
    model_name = name or getattr(getattr(model, "config", None), "name", None) or type(model).__name__
    return Measurement(model_name, str(d), str(dtype).removeprefix("torch."), batch_size, channels_last,
                       compile, ceilings, layers, whole, None if compile else method, instrumented, unattributed,
                       overhead, min_sum, notes)
