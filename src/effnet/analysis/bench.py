"""Throughput and latency across models, batch sizes, memory formats, torch.compile and dtypes.

The question it answers is the design notes' pitfall: do fewer MACs mean proportionally less time?
Each case is timed with :func:`effnet.analysis.timing.time_fn` (warm-up, synchronised, median), and
reported with the model's MACs per image (from the analytic profile) and the *achieved MAC rate*,
images/s x MACs per image: a model that uses the device as well as a dense ResNet-50 reaches a
similar rate; a model bound by memory traffic or launch overhead reaches a fraction of it.

Modes: ``eager`` (NCHW), ``channels_last`` (NHWC memory format), ``compile`` (``torch.compile`` of
the channels_last model, default mode, so compilation time stays out of the timing via warm-up).
Engines from higher layers join as more modes through ``run_bench(engines=...)`` (``triton``: the fused
kernels of ``effnet.kernels``, passed in by the ``effnet bench --engine triton`` command), so this module
imports nothing above the analysis layer.
Tables and the chart of saved results are :mod:`effnet.analysis.bench_report`'s.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.analysis.ceilings import device_name
from effnet.analysis.measure import make_input, prepare
from effnet.analysis.models import DTYPES, build_model, peer_library
from effnet.analysis.profile import profile
from effnet.analysis.timing import time_fn
from effnet.devices import resolve_device

MODES = ("eager", "channels_last", "compile")
ENGINE_MODES = ("triton",)  # rows of engines passed in by a higher layer (run_bench's ``engines``)
EFFNET_DEFAULTS = ("mobilenet_v1_100", "mobilenet_v2_100", "efficientnet_b0", "efficientnet_lite0",
                   "efficientnet_v2_s")
BASELINE = "resnet50"  # the dense contrast, from torchvision
# Per device: batch sizes, modes, warm-up and timed runs.  The CPU defaults keep a run to minutes.
DEVICE_DEFAULTS = {
    "cpu": {"batch_sizes": (1, 16), "modes": ("eager", "channels_last"), "dtypes": ("float32",),
            "warmup": 2, "runs": 5},
    "cuda": {"batch_sizes": (1, 256), "modes": MODES, "dtypes": ("float32", "bfloat16"), "warmup": 10, "runs": 30},
}


def default_models() -> list[str]:
    """The notes' comparison: MobileNetV1/V2, EfficientNet-B0/Lite0/V2-S, and ResNet-50 if torchvision is there."""
    return [*EFFNET_DEFAULTS, BASELINE] if peer_library("torchvision") else list(EFFNET_DEFAULTS)


def dtype_supported(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    """Whether the device runs ``dtype`` natively, and why not when it does not."""
    if dtype == torch.float32:
        return True, ""
    if device.type == "cuda":
        ok = dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
        return ok, "" if ok else "this GPU has no bfloat16 support"
    flags = _cpu_flags()
    if dtype == torch.bfloat16 and flags & {"avx512_bf16", "amx_bf16"}:
        return True, ""
    if dtype == torch.float16 and flags & {"avx512_fp16", "amx_fp16"}:
        return True, ""
    return False, f"this CPU has no native {str(dtype).removeprefix('torch.')} instructions (it would be emulated)"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass
class BenchResult:
    """One timed case."""

    model: str
    source: str  # "effnet" or "torchvision"
    device: str
    dtype: str
    batch_size: int
    mode: str
    resolution: int
    macs: int  # per image
    params: int
    median_s: float | None = None  # per forward of the whole batch
    iqr_s: float | None = None
    runs: int = 0
    error: str | None = None

    @property
    def throughput(self) -> float | None:
        """Images per second."""
        return self.batch_size / self.median_s if self.median_s else None

    @property
    def mac_rate(self) -> float | None:
        """Achieved MACs per second: images/s x MACs per image."""
        t = self.throughput
        return t * self.macs if t else None

    def to_dict(self) -> dict:
        return {**asdict(self), "throughput": self.throughput, "mac_rate": self.mac_rate}


def environment(device: torch.device) -> dict:
    """What the numbers depend on: hardware, library versions, threads, load, the command."""
    env = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(["effnet", *sys.argv[1:]])}
    for lib in ("torchvision", "timm", "triton"):
        try:
            env[lib] = __import__(lib).__version__
        except ImportError:
            pass
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    if hasattr(os, "getloadavg"):
        env["load_average"] = os.getloadavg()[0]  # others' work on a shared machine shows here
    return env


def prepare_mode(model: nn.Module, device: torch.device, dtype: torch.dtype, mode: str) -> Callable:
    """The forward to time for ``mode``: an eval copy, channels_last for the last two, compiled for the last."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    m = prepare(model, device, dtype, channels_last=mode in ("channels_last", "compile"))
    # dynamic=False: one static graph per batch size, as a deployment at a fixed batch would compile
    return torch.compile(m, dynamic=False) if mode == "compile" else m


def time_case(fwd: Callable, device: torch.device, dtype: torch.dtype, batch_size: int, mode: str,
              resolution: int, in_chans: int, warmup: int, runs: int):
    """Median forward time of one (model, dtype, batch size, mode) case."""
    x = make_input((batch_size, in_chans, resolution, resolution), device, dtype, channels_last=mode != "eager")
    with torch.inference_mode():
        # compilation happens in the first calls: at least two untimed ones, whatever --warmup says
        return time_fn(lambda: fwd(x), warmup=max(warmup, 2 if mode == "compile" else 0), runs=runs,
                       device=device)


def run_bench(models: list[str], device: str | torch.device = "cpu", *, batch_sizes: tuple[int, ...] = (1,),
              modes: tuple[str, ...] = ("eager",), dtypes: tuple[str, ...] = ("float32",), warmup: int = 2,
              runs: int = 5, resolution: int | None = None, log: Callable[[str], None] = print,
              on_result: Callable[[dict], None] | None = None,
              engines: dict[str, Callable[[nn.Module, torch.device, torch.dtype], Callable]] | None = None) -> dict:
    """Time every case; a case that fails (out of memory, compile error) is recorded, not fatal.

    ``engines``: more modes, name -> factory(model, device, dtype) -> forward taking a channels_last
    batch; they run effnet models only (a peer's model gets a row saying so)."""
    d = resolve_device(device)
    engines = engines or {}
    allowed = (*MODES, *engines)
    bad = [m for m in modes if m not in allowed] + [t for t in dtypes if t not in DTYPES]
    if bad:
        raise ValueError(f"unknown mode/dtype {bad}: modes are {allowed}, dtypes {tuple(DTYPES)}")
    if not models or any(b < 1 for b in batch_sizes) or runs < 1 or warmup < 0:
        raise ValueError("need at least one model, batch sizes >= 1, runs >= 1 and warmup >= 0")
    data = {"env": environment(d), "settings": {"batch_sizes": list(batch_sizes), "modes": list(modes),
                                                 "dtypes": list(dtypes), "warmup": warmup, "runs": runs},
            "skipped": [], "results": []}
    usable = []
    for name in dtypes:
        ok, why = dtype_supported(d, DTYPES[name])
        if ok:
            usable.append(name)
        else:
            data["skipped"].append(f"{name}: {why}")
            log(f"skipping {name}: {why}")
    for name in models:
        named = build_model(name)
        model, source, in_chans, res = named.model, named.source, named.in_chans, resolution or named.resolution
        totals = profile(model, res).totals()  # per image: batch 1, analytic on the meta device
        for dtype in usable:
            for mode in modes:
                fwd = None
                for batch in batch_sizes:
                    r = BenchResult(name, source, str(d), dtype, batch, mode, res, totals["macs"], totals["params"])
                    try:
                        if mode in engines and source != "effnet":
                            raise RuntimeError(f"the {mode} engine runs effnet models (it reads the block plan); "
                                               f"{name} is {source}'s")
                        if fwd is None:
                            fwd = (engines[mode](model, d, DTYPES[dtype]) if mode in engines
                                   else prepare_mode(model, d, DTYPES[dtype], mode))
                        t = time_case(fwd, d, DTYPES[dtype], batch, mode, res, in_chans, warmup, runs)
                        r.median_s, r.iqr_s, r.runs = t.median, t.iqr, len(t.times)
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # compile/OOM: keep going
                        r.error = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    finally:
                        if d.type == "cuda":
                            torch.cuda.empty_cache()
                    data["results"].append(r.to_dict())
                    log(_line(r))
                    if on_result:
                        on_result(data)
    return data


def _line(r: BenchResult) -> str:
    if r.error:
        return f"{r.model:<20} {r.dtype:<8} b{r.batch_size:<4} {r.mode:<13} FAILED: {r.error}"
    return (f"{r.model:<20} {r.dtype:<8} b{r.batch_size:<4} {r.mode:<13} {r.median_s * 1e3:9.3f} ms "
            f"{r.throughput:10.1f} img/s  {r.macs / 1e9:6.3f} GMAC  {r.mac_rate / 1e9:9.1f} GMAC/s")
