"""Per-module wall time from forward hooks, and its attribution to the analytic profile's records.

A forward pre-hook and a forward hook stamp each chosen module: CUDA events on a GPU (recorded in
the stream, so they read the GPU's own timeline), the host clock on a CPU.  Records that are
modules get their own time; functional records (``stages.1.0.add``, ``...se.mul``) share the time
their parent module spends outside its children.  Hooks cost time themselves; on a CPU that cost
is calibrated on a chain of ``nn.Identity`` modules and subtracted (:func:`hook_overhead`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from effnet.analysis.records import LayerRecord


class HookTimer:
    """Start/end stamps of chosen modules during one forward, by forward pre-hooks and hooks."""

    def __init__(self, model: nn.Module, names: set[str], device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: dict[str, list[list]] = {}
        self.handles = []
        for name, m in model.named_modules():
            if name in names:
                self.handles.append(m.register_forward_pre_hook(self._pre(name)))
                self.handles.append(m.register_forward_hook(self._post(name)))

    def _stamp(self) -> object:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _pre(self, name: str) -> Callable:
        def hook(module, args):
            self.spans.setdefault(name, []).append([self._stamp(), None])
        return hook

    def _post(self, name: str) -> Callable:
        def hook(module, args, output):
            self.spans[name][-1][1] = self._stamp()
        return hook

    def run(self, fn: Callable[[], object]) -> dict[str, list[float]]:
        """Seconds spent inside each hooked module during ``fn()``, one entry per call of the module."""
        self.spans = {}
        fn()
        if self.cuda:
            torch.cuda.synchronize()  # events are only readable once the GPU has passed them
            return {n: [a.elapsed_time(b) / 1e3 for a, b in spans] for n, spans in self.spans.items()}
        return {n: [b - a for a, b in spans] for n, spans in self.spans.items()}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _base(name: str) -> str:
    """The profile names a module's second call ``path#1``: the module path without that suffix."""
    return name.split("#", 1)[0]


def _parent(name: str, modules: set[str]) -> str:
    """The innermost module whose qualified name is a prefix of ``name`` ("" is the model itself)."""
    parts = _base(name).split(".")
    for i in range(len(parts) - 1, 0, -1):
        p = ".".join(parts[:i])
        if p in modules:
            return p
    return ""


@dataclass(frozen=True)
class HookPlan:
    """Which modules to hook and how their times become per-record times."""

    hooked: set[str]  # every module timed
    tree_parent: dict[str, str]  # hooked module -> nearest hooked ancestor
    functional: dict[str, list[str]]  # hooked module -> records timed as its time outside its children
    calls: dict[str, list[str]]  # module that is a record -> its records, one per call ("p", "p#1", ...)


def hook_plan(records: list[LayerRecord], modules: set[str]) -> HookPlan:
    """Hook the modules that are records, the parents of functional records and what lies between."""
    calls: dict[str, list[str]] = {}
    functional: dict[str, list[str]] = {}
    for r in records:
        if _base(r.name) in modules and _base(r.name):
            calls.setdefault(_base(r.name), []).append(r.name)
        else:
            functional.setdefault(_parent(r.name, modules), []).append(r.name)
    hooked = set(calls) | set(functional) | {""}
    for name in list(hooked):  # ancestors too, so that "time outside children" is defined everywhere
        parts = name.split(".") if name else []
        hooked.update(p for p in (".".join(parts[:i]) for i in range(len(parts))) if p in modules)
    for parent in functional:  # and the direct children of a parent of functional records
        hooked.update(m for m in modules if m and _parent(m, modules) == parent)
    return HookPlan(hooked, {m: _parent(m, hooked) for m in hooked if m}, functional, calls)


def attribute(inclusive: dict[str, list[float]], p: HookPlan, predicted: dict[str, float],
              overhead: tuple[float, float] = (0.0, 0.0)) -> tuple[dict[str, float], float, float]:
    """Per-record seconds from per-module per-call seconds.

    ``overhead`` is (inside a hooked span, per gap between spans) as :func:`hook_overhead` measures it;
    it is taken off each span and each gap.  Returns the per-record times, the time that belongs to
    no record (containers' own Python), and the hook overhead taken off.
    """
    inside, gap = overhead
    exclusive = {m: sum(ts) for m, ts in inclusive.items()}
    children = {m: 0 for m in inclusive}
    for m, parent in p.tree_parent.items():
        if m in inclusive and parent in exclusive:
            exclusive[parent] -= sum(inclusive[m])
            children[parent] += len(inclusive[m])
    out: dict[str, float] = {}
    unattributed = removed = 0.0
    for m, t in exclusive.items():
        calls = len(inclusive[m])
        cost = calls * inside + ((children[m] + calls) * gap if children[m] else 0.0)  # k children: k + 1 gaps
        cost = min(max(t, 0.0), cost)
        t -= cost
        removed += cost
        if m in p.calls:  # a module that is a record: one record per call, split as the calls took
            per_call, total = inclusive[m], sum(inclusive[m]) or 1.0
            for name, call in zip(p.calls[m], per_call):
                out[name] = t * call / total
        elif m in p.functional:  # time outside children, shared by the functional ops by prediction
            names = p.functional[m]
            weights = [predicted.get(n, 0.0) for n in names]
            total = sum(weights)
            for n, w in zip(names, weights):
                out[n] = t * (w / total if total else 1 / len(names))
        else:
            unattributed += t  # containers' own Python: the Sequential loop, argument passing
    return out, unattributed, removed


def hook_overhead(device: torch.device, n: int = 64, repeats: int = 7) -> tuple[float, float]:
    """Seconds a pair of timing hooks adds (inside a span, per gap between spans), on a chain of Identity.

    Measured only on a CPU, where the host clock sees it; on a GPU the events sit in the stream and
    the host's hook cost is hidden whenever the GPU has queued work (reported, not subtracted, there).
    """
    if device.type != "cpu":
        return 0.0, 0.0
    chain = nn.Sequential(*[nn.Identity() for _ in range(n)])
    names = {str(i) for i in range(n)}
    timer = HookTimer(chain, names | {""}, device)
    x = torch.zeros(1)
    inside, gaps = [], []
    try:
        for _ in range(repeats):
            inc = timer.run(lambda: chain(x))
            spans = [inc[k][0] for k in names]
            inside.append(statistics.median(spans))
            gaps.append((inc[""][0] - sum(spans)) / (n + 1))
    finally:
        timer.remove()
    return statistics.median(inside), max(0.0, statistics.median(gaps))
