"""Device ceilings, measured rather than taken from a datasheet: peak matmul rate and memory bandwidth.

The roofline of a device has two roofs: how fast it multiplies (a large matrix product in the dtype
of interest) and how fast it moves bytes (a large device-to-device copy, counting bytes read plus
bytes written).  Both are measured once per device, dtype and library versions and cached as JSON
under the user cache dir (``$EFFNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/effnet``, else
``~/.cache/effnet``); ``EFFNET_NO_CACHE=1`` or ``use_cache=False`` measures afresh.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from effnet.analysis.timing import time_fn
from effnet.devices import resolve_device
from effnet.io import write_atomic

CACHE_FILE = "ceilings.json"
DEFAULT_SIZES = {  # (matmul n, copy bytes): large enough to leave the caches, small enough to be quick
    "cpu": (2048, 256 * 2**20),
    "cuda": (8192, 1024 * 2**20),
}


@dataclass(frozen=True)
class Ceilings:
    """The two roofs of one device for one dtype, and how they were measured."""

    device: str  # "cpu" or "cuda:0"
    device_name: str  # CPU model or GPU name
    dtype: str  # e.g. "float32", "bfloat16"
    peak_flops: float  # FLOP/s of the best large matmul run (1 MAC = 2 FLOPs)
    bandwidth: float  # bytes/s of the best large copy run, bytes read + bytes written
    matmul_size: int = 0
    copy_bytes: int = 0
    versions: dict = field(default_factory=dict)  # torch, CUDA, threads: a cached entry is reused only if equal
    measured_at: str = ""

    @property
    def ridge_intensity(self) -> float:
        """FLOPs per byte above which a layer is compute-bound rather than memory-bound."""
        return self.peak_flops / self.bandwidth

    def predicted_time(self, flops: float, nbytes: float) -> float:
        """Roofline lower bound on the time of a layer: ``max(flops / peak, bytes / bandwidth)``."""
        return max(flops / self.peak_flops, nbytes / self.bandwidth)

    def bound(self, flops: float, nbytes: float) -> str:
        """``"compute"`` when the arithmetic takes longer than the traffic at the ceilings, else ``"memory"``."""
        return "compute" if flops / self.peak_flops >= nbytes / self.bandwidth else "memory"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Ceilings:
        return Ceilings(**d)


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(device: torch.device) -> dict:
    """What a measurement depends on besides the hardware: versions and, on CPU, the thread count."""
    v = {"torch": torch.__version__}
    if device.type == "cuda":
        v["cuda"] = str(torch.version.cuda)
        v["cudnn_tf32"] = str(torch.backends.cudnn.allow_tf32)  # the float32 roof is TF32 when this is on
    else:
        v["threads"] = str(torch.get_num_threads())
    return v


def _best_time(fn, device: torch.device, warmup: int, runs: int) -> float:
    """Fastest of ``runs`` synchronised calls after ``warmup``: a ceiling is the best the device can do."""
    return time_fn(fn, warmup=warmup, runs=runs, device=device).min


def _matmul_rate(d: torch.device, dtype: torch.dtype, n: int, warmup: int, runs: int) -> float:
    # Random operands: zeros can run faster than real data on some matrix units.
    a = torch.randn(n, n, device=d).to(dtype)
    b = torch.randn(n, n, device=d).to(dtype)
    out = torch.empty(n, n, device=d, dtype=dtype)
    return 2 * n**3 / _best_time(lambda: torch.mm(a, b, out=out), d, warmup, runs)


def _copy_bandwidth(d: torch.device, dtype: torch.dtype, nbytes: int, warmup: int, runs: int) -> tuple[float, int]:
    src = torch.randn(max(1, nbytes // torch.empty((), dtype=dtype).element_size()), device=d).to(dtype)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()  # each byte read once and written once
    return moved / _best_time(lambda: dst.copy_(src), d, warmup, runs), moved


def measure_ceilings(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                     matmul_size: int | None = None, copy_bytes: int | None = None,
                     warmup: int = 2, runs: int = 5) -> Ceilings:
    """Measure peak matmul FLOP/s for ``dtype`` and copy bandwidth on ``device`` (no cache)."""
    d = resolve_device(device)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype}")
    n_default, bytes_default = DEFAULT_SIZES[d.type]
    n = matmul_size or n_default
    nbytes = copy_bytes or bytes_default
    if n < 1 or nbytes < 1:
        raise ValueError(f"matmul_size and copy_bytes must be positive, got {n}, {nbytes}")

    # cuDNN runs float32 convolutions on TF32 tensor cores unless told not to (PyTorch's default), so
    # the float32 roof for convolutions is the TF32 matmul rate: measure the matmul the same way.
    tf32 = d.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 or saved
    try:
        peak = _matmul_rate(d, dtype, n, warmup, runs)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    bandwidth, moved = _copy_bandwidth(d, dtype, nbytes, warmup, runs)
    return Ceilings(
        device=str(d), device_name=device_name(d), dtype=str(dtype).removeprefix("torch."),
        peak_flops=peak, bandwidth=bandwidth, matmul_size=n, copy_bytes=moved,
        versions=library_versions(d), measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def cache_dir() -> Path:
    """Where measured ceilings are kept between runs."""
    if os.environ.get("EFFNET_CACHE_DIR"):
        return Path(os.environ["EFFNET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "effnet"


def _cache_key(d: torch.device, dtype: torch.dtype) -> str:
    return f"{device_name(d)}|{d}|{str(dtype).removeprefix('torch.')}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache is measured again, never trusted


def get_ceilings(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                 use_cache: bool = True, cache_path: str | Path | None = None, **measure_kwargs) -> Ceilings:
    """Cached ceilings for ``device`` and ``dtype``; measured (and cached) when absent or stale."""
    d = resolve_device(device)
    use_cache = use_cache and not os.environ.get("EFFNET_NO_CACHE")
    path = Path(cache_path) if cache_path else cache_dir() / CACHE_FILE
    key = _cache_key(d, dtype)
    if use_cache:
        entry = _read_cache(path).get(key)
        if entry and entry.get("versions") == library_versions(d):
            try:
                return Ceilings.from_dict(entry)
            except TypeError:
                pass  # written by another effnet version: measure again
    c = measure_ceilings(d, dtype, **measure_kwargs)
    if use_cache:
        try:
            data = _read_cache(path)
            data[key] = c.to_dict()
            write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError:
            pass  # a read-only home must not stop a measurement
    return c
