"""Per-layer-shape tile choice: a few candidate configs timed once per shape, the winner cached on disk.

The cache is one JSON file per card and Triton version under ``~/.cache/effnet`` (``$XDG_CACHE_HOME``
honoured).  Under Triton's interpreter (``TRITON_INTERPRET=1``, kernels run on the CPU) and during CUDA
graph capture nothing is timed: the first candidate (or the cached winner) is used.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import torch


# Candidates, best guess first.  BM/BN/BK: tile sizes; warps, stages: Triton's num_warps / num_stages.
def config(**kw: int) -> dict:
    return kw


# The first three of each list are run 8's (docs/benchmarks/fused.md); the rest came with EfficientNetV2-S's
# wide layers (run 9): bigger tiles, BK=64 and deeper pipelines for K and N in the hundreds to 1536.
POINTWISE = [config(BM=128, BN=64, BK=32, warps=4, stages=3), config(BM=128, BN=128, BK=32, warps=8, stages=3),
             config(BM=64, BN=64, BK=64, warps=4, stages=3),
             config(BM=128, BN=128, BK=64, warps=8, stages=3), config(BM=128, BN=256, BK=64, warps=8, stages=3),
             config(BM=128, BN=64, BK=64, warps=4, stages=4), config(BM=64, BN=128, BK=64, warps=4, stages=4),
             config(BM=128, BN=128, BK=64, warps=4, stages=4)]
# With an SE gate: tiles that may straddle two samples (each row scaled by its own sample's gate), for maps
# whose pixel count is not a multiple of BM (12x12 = 144 pixels: per-sample tiles of 128 waste 44%).
POINTWISE_SPAN = [config(BM=128, BN=128, BK=64, warps=8, stages=3, SPAN=1),
                  config(BM=128, BN=64, BK=64, warps=4, stages=4, SPAN=1),
                  config(BM=64, BN=128, BK=64, warps=4, stages=4, SPAN=1)]
# TMA: triton_gemm's kernel (operands by the TMA copy engine, grouped launch order; plain, gate or residual).
POINTWISE_TMA = [config(BM=128, BN=128, BK=64, warps=8, stages=3, GROUP=8, TMA=1),
                 config(BM=128, BN=256, BK=64, warps=8, stages=3, GROUP=8, TMA=1),
                 config(BM=128, BN=64, BK=64, warps=4, stages=4, GROUP=8, TMA=1),
                 config(BM=64, BN=128, BK=64, warps=4, stages=4, GROUP=8, TMA=1),
                 config(BM=128, BN=128, BK=64, warps=4, stages=4, GROUP=8, TMA=1),
                 config(BM=128, BN=128, BK=64, warps=8, stages=3, GROUP=8, TMA=1, PERSIST=1),
                 config(BM=128, BN=256, BK=64, warps=8, stages=3, GROUP=8, TMA=1, PERSIST=1),
                 config(BM=128, BN=128, BK=64, warps=4, stages=4, GROUP=8, TMA=1, PERSIST=1),
                 config(BM=128, BN=64, BK=64, warps=4, stages=4, GROUP=8, TMA=1, PERSIST=2)]
# TAPS: triton_conv's tap-loop kernel (taps as the pipelined loop, the fused project in mid-channel chunks of BN);
# TH/TW: its TMA kernel.
CONV = [config(BM=128, BN=64, BK=32, warps=4, stages=3), config(BM=64, BN=64, BK=32, warps=4, stages=3),
        config(BM=128, BN=64, BK=16, warps=4, stages=3, TAPS=1), config(BM=128, BN=64, BK=32, warps=4, stages=3, TAPS=1),
        config(BM=128, BN=64, BK=64, warps=4, stages=3, TAPS=1), config(BM=128, BN=128, BK=32, warps=8, stages=3, TAPS=1),
        config(BM=64, BN=64, BK=32, warps=4, stages=4, TAPS=1), config(BM=128, BN=32, BK=32, warps=4, stages=3, TAPS=1),
        # TH x TW output tiles, every tap's input one TMA box (stride 1; triton_conv.tma_fits)
        config(TH=8, TW=16, BN=64, BK=16, warps=4, stages=3), config(TH=8, TW=16, BN=64, BK=32, warps=4, stages=3),
        config(TH=8, TW=16, BN=64, BK=64, warps=4, stages=3), config(TH=8, TW=16, BN=128, BK=32, warps=8, stages=3),
        config(TH=8, TW=16, BN=32, BK=32, warps=4, stages=4),
        # after run 9's first call (H200): the 24-channel maps at 192 px and the 96 px stage's 48 -> 192 convs
        config(BM=256, BN=32, BK=32, warps=8, stages=3, TAPS=1), config(BM=128, BN=32, BK=16, warps=4, stages=3, TAPS=1),
        config(BM=256, BN=64, BK=16, warps=8, stages=3, TAPS=1), config(BM=128, BN=64, BK=16, warps=4, stages=4, TAPS=1),
        config(TH=16, TW=16, BN=32, BK=32, warps=8, stages=3), config(TH=8, TW=32, BN=32, BK=32, warps=4, stages=4),
        # few input channels only (the stem)
        config(BM=64, BN=32, BK=32, warps=2, stages=2, FLAT=1), config(BM=32, BN=32, BK=32, warps=1, stages=2, FLAT=1)]

# Time candidates on first use of a shape; off: the cached winner or the first candidate (quick start-up).
enabled = True
# Launch every candidate once and choose nothing (fills Triton's compile cache, e.g. in parallel worker
# processes, so that the timing later, on an idle GPU, compiles nothing).
compile_only = False
# With compile_only: (i, n) launches only this worker's share of the candidates (n workers compile one model's
# kernels side by side, each a different share; the first candidate is still launched by every worker).
shard: tuple[int, int] | None = None

# Part of the cache file's name: raised when the candidate lists change, so that shapes tuned among the old
# candidates are timed again among the new ones (2: run 9's GEMM / conv candidates).
CACHE_VERSION = 3  # 3: candidates timed as replays of a CUDA graph (were event-timed eager calls)

_memory: dict[str, dict] = {}
_loaded: set[Path] = set()


def interpreting() -> bool:
    """Is Triton's CPU interpreter on?  (Triton reads the same variable.)"""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def cache_path() -> Path:
    import triton

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "effnet"
    card = torch.cuda.get_device_name().replace(" ", "_").replace("/", "_")
    return base / f"kernels{CACHE_VERSION}-{card}-triton{triton.__version__}.json"


def _load(path: Path) -> None:
    if path in _loaded:
        return
    _loaded.add(path)
    try:
        _memory.update(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass  # no cache yet, or an unreadable one: tune again


def _save(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_memory, f, indent=0, sort_keys=True)
    os.replace(tmp, path)


def _clipped(candidates: list[dict], clip: dict[str, int]) -> list[dict]:
    out: list[dict] = []
    for c in candidates:
        c = {k: min(v, clip[k]) if k in clip else v for k, v in c.items()}
        if c not in out:
            out.append(c)
    return out


def capturing() -> bool:
    """Is a CUDA graph being captured on the current stream?  (Nothing may be timed then.)"""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def known(kind: str, key: tuple) -> bool:
    """Has a choice for this shape been made (in this process, or cached on disk)?"""
    name = f"{kind}{key}"
    if name not in _memory and not interpreting():
        _load(cache_path())
    return interpreting() or name in _memory


def graph_ms(fn: Callable[[], object], calls: int = 5, replays: int = 7) -> float:
    """Median milliseconds of one ``fn()`` as the engine runs it: ``calls`` calls captured in one CUDA graph,
    replayed.  An event-timed eager call would add the host's launch gaps (small blocks launch faster than
    the device runs them only inside a graph) and, with an L2 flush before each call as ``do_bench`` does,
    read a block's input from memory where the engine finds it in L2, just written by the block before."""
    from effnet.analysis.timing import capture_graph

    graph, _ = capture_graph(lambda: [fn() for _ in range(calls)])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    del graph
    return sorted(times)[len(times) // 2]


def pick(kind: str, key: tuple, candidates: list[dict], run: Callable[[dict], object],
         clip: dict[str, int] | None = None) -> dict:
    """The config to launch ``kind`` with for this shape ``key``; ``run(config)`` launches it once."""
    name = f"{kind}{key}"
    if name in _memory:  # the hot path: one dict lookup per launch
        return _memory[name]
    cands = _clipped(candidates, clip or {})
    if interpreting():
        return cands[0]
    if compile_only and not capturing():
        for j, c in enumerate(cands):
            if shard is not None and (zlib.crc32(name.encode()) + j) % shard[1] != shard[0]:
                continue
            with contextlib.suppress(Exception):  # as when timing: a config this card cannot run is skipped
                run(c)
        return cands[0]
    _load(cache_path())
    if name in _memory:
        return _memory[name]
    if not enabled or capturing():
        return cands[0]
    times = []
    for c in cands:
        try:
            times.append(graph_ms(lambda c=c: run(c)))
        except Exception:  # noqa: BLE001  a config this card cannot run (too much shared memory, ...): skip it
            times.append(float("inf"))
    _memory[name] = cands[min(range(len(cands)), key=times.__getitem__)]
    _save(cache_path())
    return _memory[name]
