"""Timing a call the way a caller waits for it: warm-up, then synchronised runs, median and minimum.

The runs are taken by ``timeit.Timer.repeat`` (the standard library's timer, which
:class:`torch.utils.benchmark.Timer` is built on: garbage collection off while timing) with a timer
function that first waits for the device, as ``torch.utils.benchmark.timer`` does, so each sample
spans the queued work and not only its launch.  ``benchmark.Timer``'s own methods do not fit here:
``timeit(number=1)`` adds two warm-up calls to every sample, and ``blocked_autorange`` reports means
of blocks of calls, which hide the fastest single call that the ceilings need and the spread of
single calls that a latency is quoted with.
"""

from __future__ import annotations

import statistics
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` (a no-op on CPU)."""
    d = torch.device(device)
    if d.type == "cuda":
        return lambda: torch.cuda.synchronize(d)
    return lambda: None


@dataclass(frozen=True)
class Timing:
    """Seconds per call of ``runs`` timed calls; the median is the number to quote, the minimum the floor."""

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
            clock: Callable[[], float] = time.perf_counter, number: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``runs`` samples of ``number`` calls each between two
    synchronisations, in seconds per call.

    The host clock read after a device synchronisation measures what a caller waits for, launch
    overhead included, which is the latency a user of the model sees (``number=1``).  With
    ``number > 1`` the calls of a sample queue behind each other, as the steps of a loop do: the
    time per call in a steady stream.
    """
    if warmup < 0 or runs < 1 or number < 1:
        raise ValueError(f"need warmup >= 0, runs >= 1 and number >= 1, got warmup={warmup}, runs={runs}, "
                         f"number={number}")
    sync = synchronize or synchronizer(device)

    def stamp() -> float:
        sync()  # work is only queued: wait for it (and, at the start, for earlier work) before the clock
        return clock()

    for _ in range(warmup):  # first calls pay for allocation, autotuning, compilation
        fn()
    samples = timeit.Timer(fn, timer=stamp).repeat(repeat=runs, number=number)
    return Timing(tuple(t / number for t in samples), warmup)


def capture_graph(fn: Callable[[], object]) -> tuple[torch.cuda.CUDAGraph, object]:
    """``fn()`` captured in a CUDA graph; returns the graph and what the captured call returned.

    ``fn`` runs once first (Triton compiles, the tuner times, memory is allocated: none of that may
    happen inside a capture), then once on a side stream, as CUDA graph capture requires.
    """
    fn()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
