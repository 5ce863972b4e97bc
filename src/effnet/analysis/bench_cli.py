"""``effnet bench``: throughput, latency and achieved MAC rate of several models; MACs-vs-latency chart.

    effnet bench                                   # defaults for the device (CPU: a few minutes)
    effnet bench --device cuda --out docs/benchmarks/gpu
    effnet bench --combine cpu/bench-cpu.json gpu/bench-cuda.json --out docs/benchmarks
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.analysis import bench, bench_report
from effnet.analysis.ceilings import get_ceilings
from effnet.analysis.models import DTYPES, check_model_name
from effnet.devices import resolve_device, set_threads
from effnet.io import check_writable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated model names (effnet zoo or torchvision); "
                   f"default: {','.join(bench.EFFNET_DEFAULTS)},{bench.BASELINE} (if torchvision is installed)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--batch-sizes", help="comma-separated (default: CPU 1,16; CUDA 1,256)")
    p.add_argument("--modes", help=f"comma-separated of {','.join(bench.MODES)} "
                   "(default: CPU eager,channels_last; CUDA all three)")
    p.add_argument("--dtypes", help=f"comma-separated of {','.join(DTYPES)} "
                   "(default: CPU float32; CUDA float32,bfloat16); unsupported ones are skipped")
    p.add_argument("--runs", type=int, help="timed runs per case, median reported (default: CPU 5, CUDA 30)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default: CPU 2, CUDA 10)")
    p.add_argument("--resolution", type=int, help="one input size for all models (default: each model's own)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--out", default="bench-results", help="folder for bench-<device>.json/.md and the PNG")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring the device's matmul/copy ceilings")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="no timing: draw and tabulate saved results files side by side, one panel per device "
                   "(files of the same device are merged, e.g. an eager run and a compile run)")


def _list(text: str | None, default, cast=str) -> tuple:
    if text is None:
        return tuple(default)
    try:
        items = tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise ValueError(f"cannot read the list {text!r}: {e}") from e
    if not items:
        raise ValueError(f"empty list {text!r}")
    return items


def run(args: argparse.Namespace, engines: dict | None = None) -> int:
    """``engines``: more modes (name -> factory), passed in by the command layer (effnet.bench_command)."""
    out = Path(args.out)
    if args.combine:
        check_writable(out / "bench-combined.md", "--out")
        datasets = bench_report.merge_by_device([bench_report.load_results(p) for p in args.combine])
        png = bench_report.plot_macs_vs_latency(datasets, out / "macs-vs-latency.png")
        md = out / "bench-combined.md"
        bench_report.write_text(md, "\n".join(bench_report.markdown_report(d) for d in datasets))
        print(f"wrote {png} and {md}")
        return 0

    d = resolve_device(args.device or "auto")
    set_threads(args.threads)
    check_writable(out / f"bench-{d.type}.json", "--out")  # before minutes of timing, not after
    defaults = bench.DEVICE_DEFAULTS[d.type]
    models = list(_list(args.models, bench.default_models()))
    batch_sizes = _list(args.batch_sizes, defaults["batch_sizes"], int)
    modes = _list(args.modes, defaults["modes"])
    modes = (*modes, *(m for m in engines or {} if m not in modes))  # each engine passed in is one more mode
    dtypes = _list(args.dtypes, defaults["dtypes"])
    runs = defaults["runs"] if args.runs is None else args.runs
    warmup = defaults["warmup"] if args.warmup is None else args.warmup
    for name in models:  # fail on a misspelt name before any timing starts
        check_model_name(name)
    json_path = out / f"bench-{d.type}.json"
    data = bench.run_bench(models, d, batch_sizes=batch_sizes, modes=modes, dtypes=dtypes, warmup=warmup,
                           runs=runs, resolution=args.resolution, engines=engines,
                           on_result=lambda partial: bench_report.write_json(partial, json_path))
    if not args.no_ceilings:
        data["ceilings"] = {}
        for name in dtypes:
            if bench.dtype_supported(d, DTYPES[name])[0]:
                c = get_ceilings(d, DTYPES[name])
                data["ceilings"][name] = c.to_dict()
                print(f"ceilings {name}: {c.peak_flops / 1e9:.1f} GFLOP/s matmul, {c.bandwidth / 1e9:.1f} GB/s copy")
    bench_report.write_json(data, json_path)
    md = out / f"bench-{d.type}.md"
    bench_report.write_text(md, bench_report.markdown_report(data))
    png = bench_report.plot_macs_vs_latency([data], out / f"macs-vs-latency-{d.type}.png")
    print(f"wrote {json_path}, {md} and {png}")
    return 0
