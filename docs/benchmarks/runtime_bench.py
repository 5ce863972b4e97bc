"""effnet.runtime's OpenCL engine against PyTorch eager (and onnxruntime on the CPU), fp32.

    PYTHONPATH=src python docs/benchmarks/runtime_bench.py --device cuda --out OUT     # GPU: NVIDIA OpenCL
    POCL_MAX_PTHREAD_COUNT=2 PYTHONPATH=src python docs/benchmarks/runtime_bench.py --device cpu --out OUT

Per model and batch size: median seconds of ``--runs`` timed runs after ``--warmup`` untimed ones.
- ``eager``: PyTorch eval, input already on the device, synchronised; on CUDA with TF32 off (the
  engine computes in strict fp32) and, for reference, with PyTorch's default (cuDNN may use TF32).
- ``opencl``: ``engine(x)`` from a host numpy array to a host numpy array (upload, kernels, read back).
- ``opencl-resident``: the kernels alone, input already on the device (host clock around a finish).
- ``onnxruntime`` (CPU only): the ``effnet.export_onnx`` file, CPU provider, same thread count.
Then a per-node table of OpenCL profiling-event times for one batch-1 run of each model.
Writes ``runtime-<device>.json`` and ``runtime-<device>.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import effnet
from effnet import runtime as rt


def _median_time(fn, warmup: int, runs: int, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, args, results: list, tables: dict) -> None:
    torch.manual_seed(0)
    model = effnet.create_model(name).eval()
    size = model.config.resolution
    graph = rt.from_model(model, input_size=size)
    engine = rt.compile(graph, "opencl", device=args.cl_device)
    dev = torch.device(args.device)
    tmodel = model.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ort = _onnx_session(model, size, args) if args.device == "cpu" else None
    if dev.type == "cuda":  # the reference in strict fp32, like the engine (cuDNN's default may use TF32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for batch in args.batch_sizes:
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        xt = torch.from_numpy(x).to(dev)
        with torch.inference_mode():
            ref = tmodel(xt).float().cpu().numpy()
        out = engine(x)
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        row = {"model": name, "batch": batch, "size": size, "rel_err_vs_eager": err}
        with torch.inference_mode():
            if dev.type == "cuda":
                for tf32, key in ((False, "eager"), (True, "eager-tf32")):
                    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
                    row[key] = _median_time(lambda xt=xt: tmodel(xt), args.warmup, args.runs, sync)
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            else:
                row["eager"] = _median_time(lambda xt=xt: tmodel(xt), args.warmup, args.runs, sync)
        row["opencl"] = _median_time(lambda x=x: engine(x), args.warmup, args.runs)
        row["opencl-resident"] = engine.impl.run_resident(x, args.runs)
        if ort is not None:
            row["onnxruntime"] = _median_time(lambda x=x: ort.run(None, {ort.get_inputs()[0].name: x}), args.warmup,
                                              args.runs)
        results.append(row)
        print(json.dumps(row), flush=True)
    for batch in sorted({1, max(args.batch_sizes)}):
        xb = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        times = engine.impl.profile(xb, repeats=max(3, args.runs // 4))
        tables[f"{name}, batch {batch}"] = [
            {"node": n.index, "op": n.op + (f"+{n.attrs['act']}" if n.attrs.get("act") else ""),
             "block": n.block, "shape": list(n.shape), "us": 1e6 * times[n.index]}
            for n in graph.nodes if n.index in times]


def _onnx_session(model, size: int, args):
    import onnxruntime as ort

    path = Path(args.out) / f"{model.config.name}.onnx"
    effnet.export_onnx(model, path, size, check=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def markdown(results: list, tables: dict, env: dict) -> str:
    cols = [c for c in ("eager", "eager-tf32", "onnxruntime", "opencl", "opencl-resident") if c in results[0]]
    lines = [f"Device: {env['device_name']}; OpenCL: {env['opencl_device']}", "",
             f"versions: {env['versions']}", "", f"command: `{env['command']}`", "",
             "| model | batch | " + " | ".join(f"{c} ms" for c in cols) + " | opencl / eager | max rel err |",
             "|---|---:|" + "---:|" * len(cols) + "---:|---:|"]
    for r in results:
        ms = " | ".join(f"{1e3 * r[c]:.3f}" for c in cols)
        lines.append(f"| {r['model']} | {r['batch']} | {ms} | {r['opencl'] / r['eager']:.2f}x "
                     f"| {r['rel_err_vs_eager']:.1e} |")
    lines += ["", "Throughput (images/s): " + "; ".join(
        f"{r['model']} b{r['batch']}: " + ", ".join(f"{c} {r['batch'] / r[c]:,.0f}" for c in cols)
        for r in results if r["batch"] > 1)]
    for name, rows in tables.items():
        total = sum(r["us"] for r in rows)
        lines += ["", f"### Per-node OpenCL time, {name} (profiling events, median; total {total:.0f} us)", "",
                  "| node | op | block | output | us | % |", "|---:|---|---:|---|---:|---:|"]
        lines += [f"| {r['node']} | {r['op']} | {'' if r['block'] is None else r['block']} | "
                  f"{tuple(r['shape'])} | {r['us']:.1f} | {100 * r['us'] / total:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where PyTorch runs")
    p.add_argument("--cl-device", default=None, help="OpenCL device index or name substring")
    p.add_argument("--models", default="mobilenet_v2_100,efficientnet_b0")
    p.add_argument("--batch-sizes", default="1,64", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and onnxruntime")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cl_device is not None and args.cl_device.isdigit():
        args.cl_device = int(args.cl_device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    results, tables = [], {}
    for name in args.models.split(","):
        bench_model(name, args, results, tables)
    import pyopencl as cl

    engine_dev = rt.opencl.select_device(args.cl_device)
    env = {"device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
           or platform.machine(),
           "opencl_device": f"{engine_dev.name.strip()} ({engine_dev.platform.name.strip()}, "
                            f"{engine_dev.driver_version})",
           "versions": f"torch {torch.__version__}, pyopencl {cl.VERSION_TEXT}, numpy {np.__version__}, "
                       f"python {platform.python_version()}"
                       + (f", cuDNN {torch.backends.cudnn.version()}" if args.device == "cuda" else "")
                       + (f", onnxruntime {__import__('onnxruntime').__version__}" if args.device == "cpu" else "")
                       + f", POCL_MAX_PTHREAD_COUNT={os.environ.get('POCL_MAX_PTHREAD_COUNT', '-')}",
           "command": " ".join(["python", *sys.argv])}
    out = Path(args.out)
    (out / f"runtime-{args.device}.json").write_text(json.dumps({"env": env, "results": results, "nodes": tables},
                                                                indent=1))
    (out / f"runtime-{args.device}.md").write_text(markdown(results, tables, env))
    print(markdown(results, tables, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
