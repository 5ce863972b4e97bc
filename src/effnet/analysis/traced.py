"""Per-layer times from torch.profiler's records: GPU kernels on CUDA, top-level aten ops on a CPU.

Two passes, so that what labels the work does not slow the work being timed:

1. **Labelling pass** (one forward): every module call is a ``record_function`` range, opened and
   closed by forward hooks, under the profiler with CPU activity (and CUDA activity on a GPU).  Each
   unit of work -- a kernel, linked to the aten op that launched it, or on a CPU an aten op called
   from a module's Python -- is labelled with the innermost module call around it and the chain of
   ops that led to it.
2. **Timing pass** (``runs`` rounds): no hooks, no ranges; on a GPU only CUDA activity, so the
   profiler records kernels and adds (almost) nothing on the host.  Each round is one forward timed
   with the tracer off (the whole forward), then one traced forward to warm the tracer up (dropped)
   and one traced forward that is kept: the whole forward and the traced one are neighbours in
   time, so a host that changes speed between rounds (other processes, clocks) moves both alike.
   The work of each traced forward must come in the same sequence as in the labelling pass (checked
   by name); it takes its label from the same position there.

A layer's time in one forward is its work's share of the device timeline: each unit's duration
plus the idle time just before it, when the device waited for that unit to be launched.  At
batch 256 that idle time is near zero and a layer's time is its kernel time; at batch 1 a GPU
waits for the host most of the time, and that wait belongs to the layer being launched.  The
per-layer times of one forward add up to the span from its first unit's start to its last unit's
end, so their sum stands against the whole forward timed without the profiler.  The kernel time
alone (``busy``) is kept beside it.

Work inside a module that is a profile record belongs to that record (``relu``, ``relu#1`` for a
second call).  Work inside a container's own ``forward`` belongs to its functional records
(``stages.1.1.add``, ``...se.mul``), found by the aten op's name and its count within the forward,
as the analytic profile names them; work that matches none is shared by the container's
functional records in proportion to their roofline predictions.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from effnet.analysis.timing import time_fn

RANGE = "effnet.module:"  # prefix of the labelling pass's ranges; what follows is the module call's name


@dataclass(frozen=True)
class Work:
    """One unit of device work: a kernel (or memcpy/memset) on a GPU, a top-level aten op on a CPU."""

    name: str
    start_us: float
    end_us: float
    module: str | None = None  # innermost module call around it ("stages.1.0.se", "relu#1"); labelling pass only
    ops: tuple[str, ...] = ()  # aten ops from the module's forward down to the launch, outermost first
    call: int = -1  # profiler id of the outermost of those ops: the kernels of one op call share it


@dataclass
class TracedTimes:
    """Per-record seconds of one model's forward, medians (and minima) over the timed runs."""

    per_record: dict[str, float]  # median over runs of each record's share of the device timeline
    per_record_min: dict[str, float]
    busy: dict[str, float]  # median over runs of each record's kernel (or op) time alone
    unattributed_s: float  # median over runs of work no record claims
    spans: tuple[float, ...]  # per run, as traced: first unit's start to last unit's end, seconds
    wholes: tuple[float, ...]  # per round, the forward timed with the tracer off, seconds
    units: int  # units of work per forward
    unmatched: int = 0  # units matched to no record by name (shared within their container, or unattributed)
    tracer_cost_s: float = 0.0  # the tracer's calibrated cost per launch
    removed_s: float = 0.0  # median over runs of the tracer's cost taken off the waits for launches, per forward
    notes: list[str] = field(default_factory=list)


class ModuleRanges:
    """Forward pre-hooks and hooks that put every module call in a ``record_function`` range."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: dict[str, int] = {}
        self.open: list[record_function] = []
        self.handles = []
        for name, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._enter(name)))
            self.handles.append(m.register_forward_hook(self._exit, always_call=True))

    def _enter(self, name: str) -> Callable:
        def hook(module, args):
            n = self.calls.get(name, 0)
            self.calls[name] = n + 1  # a module's second call is "name#1", as the analytic profile names it
            r = record_function(RANGE + (name if n == 0 else f"{name}#{n}"))
            r.__enter__()
            self.open.append(r)
        return hook

    def _exit(self, module, args, output) -> None:
        self.open.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _is_range(e) -> bool:
    return e.name.startswith(RANGE)


def _is_step(e) -> bool:
    """The profiler's own range around each step of a schedule (``ProfilerStep#3``, ``ProfilerStep*``)."""
    return e.name.startswith("ProfilerStep")


def _device_work(events) -> list:
    """Kernel, memcpy and memset records of the device, in start order (annotations left out)."""
    return sorted((e for e in events if e.device_type == DeviceType.CUDA and not _is_range(e) and not _is_step(e)
                   and not getattr(e, "is_user_annotation", False)), key=lambda e: e.time_range.start)


def _context(op) -> tuple[str | None, tuple[str, ...], int]:
    """The innermost module range around CPU event ``op``, the op chain from it down to ``op``, the chain's top id."""
    chain, e = [], op
    while e is not None and not _is_range(e):
        chain.append(e)
        e = e.cpu_parent
    module = e.name[len(RANGE):] if e is not None else None
    return module, tuple(c.name for c in reversed(chain)), chain[-1].id


def _launchers(cpu: list, kernels: list) -> list:
    """Per device record, the aten op that launched it.

    By the profiler's correlation id where the events carry it (``linked_correlation_id``); else, or
    when that op was folded into its parent by the event tree, by the op's own kernel list (name and
    duration), taking ops in start order.
    """
    by_id = {e.id: e for e in cpu}
    listed: dict[tuple[str, float], list] = {}
    for op in sorted(cpu, key=lambda e: e.time_range.start, reverse=True):
        for kn in op.kernels:
            listed.setdefault((kn.name, kn.duration), []).append(op)  # reversed: pop() gives the earliest
    out = []
    for k in kernels:
        op = by_id.get(getattr(k, "linked_correlation_id", None))
        ops = listed.get((k.name, k.time_range.end - k.time_range.start))
        if op is None and ops:
            op = ops.pop()
        out.append(op)
    return out


def _descendants(op) -> list[str]:
    out = [op.name]
    for c in op.cpu_children:
        out += _descendants(c)
    return out


def labelled_work(events, device: torch.device) -> list[Work]:
    """The labelling pass's work, each unit with its module call and op chain."""
    if device.type == "cuda":
        cpu = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
        kernels = _device_work(events)
        launched_by = _launchers(cpu, kernels)
        out = []
        for k, op in zip(kernels, launched_by):
            module, ops, call = _context(op) if op is not None else (None, (), -1)
            out.append(Work(k.name, k.time_range.start, k.time_range.end, module, ops, call))
        return out
    # On a CPU the unit is an aten op called straight from a module's Python: its time includes its callees.
    top = [e for e in events if e.device_type == DeviceType.CPU and not _is_range(e) and e.cpu_parent is not None
           and _is_range(e.cpu_parent)]
    return [Work(e.name, e.time_range.start, e.time_range.end, e.cpu_parent.name[len(RANGE):], tuple(_descendants(e)),
                 e.id) for e in sorted(top, key=lambda e: e.time_range.start)]


def timed_work(events, device: torch.device) -> list[Work]:
    """The timing pass's work in start order: device records on a GPU, top-level aten ops on a CPU."""
    if device.type == "cuda":
        return [Work(k.name, k.time_range.start, k.time_range.end) for k in _device_work(events)]
    top = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async and e.name.startswith("aten::")
           and (e.cpu_parent is None or _is_step(e.cpu_parent))]
    return [Work(e.name, e.time_range.start, e.time_range.end) for e in sorted(top, key=lambda e: e.time_range.start)]


def _op(name: str) -> str:
    """``aten::add_`` -> ``add``: the op name as the analytic profile's dispatch mode spells it."""
    return name.rpartition("::")[2].strip("_")


def _base(name: str) -> str:
    return name.split("#", 1)[0]


def assign(work: Sequence[Work], records: Iterable[str], modules: set[str]) -> list[tuple[str, str]]:
    """Per unit of labelled work: ``("record", name)``, ``("share", container)`` or ``("none", "")``.

    A unit inside a module call that is a record belongs to it; inside a container, to the
    container's functional record of the same op, counted in call order as the profile counts them
    (``p.add``, then ``p.add#1``); failing that, it is shared among the container's functional records.
    """
    records = set(records)
    functional: dict[str, set[str]] = {}  # container path -> ops of its functional records
    for r in records:
        if _base(r) not in modules:
            parent, _, op = _base(r).rpartition(".")
            functional.setdefault(parent, set()).add(op)
    counts: dict[str, int] = {}
    named: dict[int, str] = {}  # op call -> its record, so an op's second kernel is not counted as a second call
    out = []
    for w in work:
        if w.module is None:
            out.append(("none", ""))
        elif w.module in records:
            out.append(("record", w.module))
        else:
            path = _base(w.module)
            ops = functional.get(path, set())
            match = next((_op(o) for o in w.ops if _op(o) in ops), None)
            if match is None:
                out.append(("share", path) if ops else ("none", ""))
                continue
            if w.call not in named:
                stem = f"{path}.{match}" if path else match
                n = counts.get(stem, 0)
                counts[stem] = n + 1
                named[w.call] = stem if n == 0 else f"{stem}#{n}"
            name = named[w.call]
            out.append(("record", name) if name in records else ("share", path))
    return out


def functional_records(records: Iterable[str], modules: set[str]) -> dict[str, list[str]]:
    """Container path -> its functional records (those that are no module), in profile order."""
    out: dict[str, list[str]] = {}
    for r in records:
        if _base(r) not in modules:
            out.setdefault(_base(r).rpartition(".")[0], []).append(r)
    return out


def split_forward(chunk: Sequence[Work], cost_s: float = 0.0) -> tuple[list[float], list[float]]:
    """Per unit, in seconds: its share of the device timeline (idle time before it + its own), and its own time.

    The shares add up to the span from the first unit's start to the last one's end; units that
    overlap (several streams) are not counted twice.  ``cost_s``, the tracer's own cost per unit
    (:func:`tracer_cost`), is taken off each idle time before a unit: the tracer delays every launch
    by about that much, which shows only where the device was waiting for the launch.
    """
    shares, own = [], []
    last_end = chunk[0].start_us if chunk else 0.0
    for w in chunk:
        idle = max(w.start_us - last_end, 0.0) * 1e-6
        mine = max(w.end_us - max(w.start_us, last_end), 0.0) * 1e-6
        shares.append(max(idle - cost_s, 0.0) + mine)
        own.append((w.end_us - w.start_us) * 1e-6)
        last_end = max(last_end, w.end_us)
    return shares, own


def tracer_cost(device: torch.device, sync: Callable[[], None], launches: int = 200, runs: int = 9) -> float:
    """Seconds the timing pass's tracer adds to each launch, on a chain of tiny kernels (ops on a CPU).

    Each ``x + 1`` on a one-element tensor is one launch of a kernel far shorter than its launch, so
    the chain runs at the launch rate: timed with and without the tracer, the difference per launch
    is what tracing costs the host, calibrated apart from the model being measured.
    """
    x = torch.zeros(1, device=device)

    def chain() -> None:
        y = x
        for _ in range(launches):
            y = y + 1

    plain = time_fn(chain, warmup=2, runs=runs, synchronize=sync).median
    with profile(activities=[_timing_activity(device)]):
        traced = time_fn(chain, warmup=2, runs=runs, synchronize=sync).median
    return max(traced - plain, 0.0) / launches


def _timing_activity(device: torch.device) -> ProfilerActivity:
    return ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU


def attribute(labels: Sequence[tuple[str, str]], times: Sequence[float], functional: dict[str, list[str]],
              predicted: dict[str, float]) -> tuple[dict[str, float], float]:
    """Per-record seconds of one forward from per-unit seconds and labels; returns them and what no record claims."""
    out: dict[str, float] = {}
    unattributed = 0.0
    for (how, name), t in zip(labels, times):
        if how == "record":
            out[name] = out.get(name, 0.0) + t
        elif how == "share":  # a container's own work that matched no op: shared by roofline prediction
            names = functional[name]
            weights = [predicted.get(n, 0.0) for n in names]
            total = sum(weights)
            for n, wt in zip(names, weights):
                out[n] = out.get(n, 0.0) + t * (wt / total if total else 1 / len(names))
        else:
            unattributed += t
    return out, unattributed


def timed_rounds(model: nn.Module, x: torch.Tensor, device: torch.device, runs: int,
                 sync: Callable[[], None]) -> tuple[list[list[Work]], list[float]]:
    """``runs`` rounds of a forward timed with the tracer off, then a traced forward (after one to warm up).

    Returns the traced forwards' work and the untraced forwards' seconds, one of each per round.
    """
    traced: list[list[Work]] = []
    wholes: list[float] = []
    rounds = schedule(wait=1, warmup=1, active=1, repeat=runs)  # the tracer is off in the "wait" step
    with warnings.catch_warnings(), profile(activities=[_timing_activity(device)], schedule=rounds,
                                            on_trace_ready=lambda p: traced.append(timed_work(p.events(), device))
                                            ) as prof:
        warnings.filterwarnings("ignore", ".*Profiler clears events at the end of each cycle")  # one cycle a round
        for _ in range(runs):
            wholes.append(time_fn(lambda: model(x), warmup=0, runs=1, synchronize=sync).times[0])
            prof.step()
            for _ in range(2):  # warm-up, then kept
                model(x)
                sync()
                prof.step()
    return traced, wholes


def trace_layers(model: nn.Module, x: torch.Tensor, records: Sequence[str], predicted: dict[str, float],
                 device: torch.device, runs: int, sync: Callable[[], None]) -> TracedTimes:
    """Label the work of one forward of ``model(x)``, time ``runs`` more, and give each record its times."""
    modules = {n for n, _ in model.named_modules()}
    cuda = device.type == "cuda"
    ranges = ModuleRanges(model)
    try:
        with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
            model(x)
            sync()
    finally:
        ranges.remove()
    labelled = labelled_work(prof.events(), device)
    labels = assign(labelled, records, modules)
    # No hooks and, on a GPU, no CPU activity: the host runs the forward as it does untraced, but
    # for the tracer's own cost per launch, calibrated apart and taken off the waits for launches.
    cost = tracer_cost(device, sync)
    rounds, wholes = timed_rounds(model, x, device, runs, sync)
    k = len(labelled)
    names = [w.name for w in labelled]
    chunks = [c for c in rounds if [w.name for w in c] == names] if k else []
    notes = []
    if len(chunks) < len(rounds):
        notes.append(f"{len(rounds) - len(chunks)} of {len(rounds)} traced forwards ran other work than the "
                     f"labelled one ({k} units): left out")
    if not chunks:
        notes.append("per-layer times are the labelling pass's own, module ranges' cost included")
        chunks = [labelled]
    functional = functional_records(records, modules)
    per_run, busy_run, left, spans, removed = [], [], [], [], []
    for c in chunks:
        shares, own = split_forward(c, cost)
        t, u = attribute(labels, shares, functional, predicted)
        per_run.append(t)
        busy_run.append(attribute(labels, own, functional, predicted)[0])
        left.append(u)
        spans.append((max(w.end_us for w in c) - c[0].start_us) * 1e-6 if c else 0.0)
        removed.append(spans[-1] - sum(shares))
    claimed = sorted({n for t in per_run for n in t})
    missing = sum(1 for how, _ in labels if how != "record")
    if missing:
        notes.append(f"{missing} of {k} units of work were matched to no record by name "
                     "(shared by prediction within their container, or unattributed)")
    notes.append(f"traced: {k} units of {'GPU work' if cuda else 'aten ops'} per forward, {len(chunks)} forwards; "
                 f"the tracer's cost per launch, calibrated on a chain of tiny ops: {cost * 1e6:.2f} us")
    return TracedTimes(
        per_record={n: statistics.median(t.get(n, 0.0) for t in per_run) for n in claimed},
        per_record_min={n: min(t.get(n, 0.0) for t in per_run) for n in claimed},
        busy={n: statistics.median(t.get(n, 0.0) for t in busy_run) for n in claimed},
        unattributed_s=statistics.median(left) if left else 0.0, spans=tuple(spans), wholes=tuple(wholes), units=k,
        unmatched=missing,
        tracer_cost_s=cost, removed_s=statistics.median(removed) if removed else 0.0, notes=notes)
