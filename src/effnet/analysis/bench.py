"""Throughput and latency across models, batch sizes, memory formats, torch.compile and dtypes.

The question it answers is the design notes' pitfall: do fewer MACs mean proportionally less time?
Each case is timed with :func:`effnet.analysis.measure.time_fn` (warm-up, synchronised, median), and
reported with the model's MACs per image (from the analytic profile) and the *achieved MAC rate*,
images/s x MACs per image: a model that uses the device as well as a dense ResNet-50 reaches a
similar rate; a model bound by memory traffic or launch overhead reaches a fraction of it.

Modes: ``eager`` (NCHW), ``channels_last`` (NHWC memory format), ``compile`` (``torch.compile`` of
the channels_last model, default mode, so compilation time stays out of the timing via warm-up).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from effnet.analysis.ceilings import device_name, resolve_device
from effnet.analysis.measure import make_input, prepare, time_fn
from effnet.io import write_atomic

MODES = ("eager", "channels_last", "compile")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
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
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return list(EFFNET_DEFAULTS)
    return [*EFFNET_DEFAULTS, BASELINE]


def build_model(name: str) -> tuple[nn.Module, int, str]:
    """``(model, resolution, source)`` for an effnet zoo name or a torchvision classification model name."""
    import effnet

    if name in effnet.list_models():
        model = effnet.create_model(name)
        return model, model.config.resolution, "effnet"
    try:
        import torchvision
    except ImportError:
        torchvision = None
    if torchvision is not None and name in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(name, weights=None), 224, "torchvision"
    hint = "" if torchvision is not None else " (torchvision is not installed, so only effnet names work)"
    raise ValueError(f"unknown model {name!r}: use an effnet zoo name (effnet models) "
                     f"or a torchvision classification model such as resnet50{hint}")


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
    x = make_input((batch_size, in_chans, resolution, resolution), device, dtype,
                   channels_last=mode in ("channels_last", "compile"))
    with torch.inference_mode():
        # compilation happens in the first calls: at least two untimed ones, whatever --warmup says
        return time_fn(lambda: fwd(x), warmup=max(warmup, 2 if mode == "compile" else 0), runs=runs,
                       device=device)


def check_model_name(name: str) -> None:
    """Raise ValueError for a name that is neither an effnet zoo model nor a torchvision one (builds nothing)."""
    import effnet

    if name in effnet.list_models():
        return
    try:
        import torchvision
    except ImportError:
        torchvision = None
    if torchvision is not None and name in torchvision.models.list_models(module=torchvision.models):
        return
    build_model(name)  # raises the explanatory error


def run_bench(models: list[str], device: str | torch.device = "cpu", *, batch_sizes: tuple[int, ...] = (1,),
              modes: tuple[str, ...] = ("eager",), dtypes: tuple[str, ...] = ("float32",), warmup: int = 2,
              runs: int = 5, resolution: int | None = None, log: Callable[[str], None] = print,
              on_result: Callable[[dict], None] | None = None) -> dict:
    """Time every case; a case that fails (out of memory, compile error) is recorded, not fatal."""
    from effnet.analysis.profile import profile

    d = resolve_device(device)
    bad = [m for m in modes if m not in MODES] + [t for t in dtypes if t not in DTYPES]
    if bad:
        raise ValueError(f"unknown mode/dtype {bad}: modes are {MODES}, dtypes {tuple(DTYPES)}")
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
        model, res, source = build_model(name)
        res = resolution or res
        totals = profile(model, res).totals()  # per image: batch 1, analytic on the meta device
        in_chans = getattr(getattr(model, "config", None), "in_chans", 3)
        for dtype in usable:
            for mode in modes:
                fwd = None
                for batch in batch_sizes:
                    r = BenchResult(name, source, str(d), dtype, batch, mode, res, totals["macs"], totals["params"])
                    try:
                        fwd = fwd or prepare_mode(model, d, DTYPES[dtype], mode)
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


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (temp file in the same folder, then rename)."""
    return write_atomic(path, text.encode())


def write_json(data: dict, path: str | Path) -> Path:
    """Write ``data`` as JSON atomically."""
    return write_text(path, json.dumps(data, indent=1))


def merge_by_device(datasets: list[dict]) -> list[dict]:
    """Results files of the same device (e.g. an eager run and a compile run) merged into one dataset."""
    merged: dict[tuple[str, str], dict] = {}
    for data in datasets:
        key = (data["env"]["device_name"], data["env"]["device"])
        if key not in merged:
            merged[key] = {**data, "results": list(data["results"]), "skipped": list(data.get("skipped", [])),
                           "ceilings": dict(data.get("ceilings", {}))}
            continue
        m = merged[key]
        m["env"] = {**m["env"], "command": f"{m['env']['command']}; {data['env']['command']}"}
        m["results"] += data["results"]
        m["skipped"] += [s for s in data.get("skipped", []) if s not in m["skipped"]]
        m["ceilings"].update(data.get("ceilings", {}))
    return list(merged.values())


def load_results(path: str | Path) -> dict:
    """A results JSON written by :func:`run_bench` (plain JSON: nothing is unpickled)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read bench results from {path}: {e}") from e
    if not isinstance(data, dict) or "results" not in data or "env" not in data:
        raise ValueError(f"{path} is not an effnet bench results file (no 'env'/'results')")
    return data


def _ok(data: dict) -> list[dict]:
    return [r for r in data["results"] if r.get("median_s")]


def _best(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Fastest case per (model, batch size) over modes and dtypes."""
    best: dict[tuple[str, int], dict] = {}
    for r in rows:
        k = (r["model"], r["batch_size"])
        if k not in best or r["median_s"] < best[k]["median_s"]:
            best[k] = r
    return best


def markdown_report(data: dict) -> str:
    """Markdown tables: per dtype and batch size, every model and mode, with ratios to ResNet-50."""
    env = data["env"]
    lines = [f"### {env['device_name']} ({env['device']})", "",
             f"torch {env['torch']}" + "".join(f", {k} {env[k]}" for k in ("torchvision", "cuda", "triton")
                                               if env.get(k)) + f"; Python {env['python']}; "
             f"{env['threads']} CPU threads; load average {env.get('load_average', 'n/a')}; {env['date']}", "",
             f"Command: `{env['command']}`", ""]
    lines += [f"Skipped: {s}" for s in data.get("skipped", [])]
    for name, c in data.get("ceilings", {}).items():
        lines.append(f"Measured ceilings, {name}: {c['peak_flops'] / 1e12:.3g} TFLOP/s matmul "
                     f"({c['peak_flops'] / 2e9:.1f} GMAC/s), {c['bandwidth'] / 1e9:.1f} GB/s copy.  ")
    rows = data["results"]
    keys = sorted({(r["dtype"], r["batch_size"]) for r in rows}, key=lambda k: (k[0] != "float32", k[0], k[1]))
    for dtype, batch in keys:
        lines += ["", f"#### {dtype}, batch {batch}", "",
                  ("| model | mode | GMACs/img | median ms | IQR ms | img/s | img/s vs resnet50 | achieved GMAC/s "
                   "| MAC rate vs resnet50 |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
        sel = sorted((r for r in rows if r["dtype"] == dtype and r["batch_size"] == batch),
                     key=lambda r: (order[r["model"]], MODES.index(r["mode"]) if r["mode"] in MODES else 9))
        base = {r["mode"]: r for r in sel if r["model"] == BASELINE and r.get("median_s")}
        for r in sel:
            if not r.get("median_s"):
                lines.append(f"| {r['model']} | {r['mode']} | {r['macs'] / 1e9:.3f} | failed: {r['error']} "
                             "| | | | | |")
                continue
            b = base.get(r["mode"])
            ratio_t = f"{r['throughput'] / b['throughput']:.2f}x" if b else "-"
            ratio_m = f"{r['mac_rate'] / b['mac_rate']:.2f}x" if b else "-"
            lines.append(f"| {r['model']} | {r['mode']} | {r['macs'] / 1e9:.3f} | {r['median_s'] * 1e3:.3f} | "
                         f"{r['iqr_s'] * 1e3:.3f} | {r['throughput']:.1f} | {ratio_t} | "
                         f"{r['mac_rate'] / 1e9:.1f} | {ratio_m} |")
    return "\n".join(lines) + "\n"


def plot_macs_vs_latency(datasets: list[dict], path: str | Path) -> Path:
    """MACs per image against measured time per image, one panel per results file (e.g. CPU and GPU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from effnet.analysis.roofline import save_figure

    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 6), squeeze=False)
    markers = "osD^vPX*<>hp"
    for ax, data in zip(axes[0], datasets):
        best = _best(_ok(data))
        models = list(dict.fromkeys(m for m, _ in best))
        batches = sorted({b for _, b in best})
        for colour, batch in zip(("tab:blue", "tab:red", "tab:green", "tab:purple"), batches):
            pts = [r for (_, b), r in best.items() if b == batch]
            for r in pts:
                ax.scatter(r["macs"] / 1e9, r["median_s"] / batch * 1e3, color=colour, s=36,
                           marker=markers[models.index(r["model"]) % len(markers)])
            base = next((r for r in pts if r["model"] == BASELINE), None)
            if base:  # where the models would sit if time were proportional to MACs
                k = base["median_s"] / batch * 1e3 / (base["macs"] / 1e9)
                xs = [r["macs"] / 1e9 for r in pts]
                grid = [min(xs) / 1.5, max(xs) * 1.5]
                ax.plot(grid, [k * g for g in grid], ls="--", color=colour, lw=0.8)
            ax.plot([], [], color=colour, marker="o", ls="--", lw=0.8,
                    label=f"batch {batch} (dashed: time proportional to MACs, through {BASELINE})")
        for i, name in enumerate(models):  # legend entries for the marker shapes
            ax.scatter([], [], color="black", marker=markers[i % len(markers)], label=name)
        env = data["env"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, and no labels on minor ticks to collide
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("GMACs per image (analytic)")
        ax.set_ylabel("measured ms per image (median, fastest mode and dtype)")
        ax.set_title(f"{env['device_name']} ({env['device']}), torch {env['torch']}", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
        ax.grid(True, which="both", alpha=0.2)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
