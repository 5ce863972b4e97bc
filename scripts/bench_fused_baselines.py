"""``PARTS=baselines`` of scripts/bench_fused.py: torch.compile baselines and the fused engine, timed alone.

torchvision + compile and BN-folded effnet + compile are compiled at the same time, each in its own process
(and the fused engine's Triton kernels compiled alongside, ``tune.compile_only``), then timed one at a time
on the otherwise idle GPU; then the fused engine is tuned and timed in the calling process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from bench_fused import MODELS, bench, channels_last_input, emit, randomize_bn
from torch import nn

import effnet
from effnet.kernels.parallel_compile import spawn


def fold_bn(m: nn.Module) -> nn.Module:
    """As /work/shared/probes/fold_probe.py: BN folded into each ConvNormAct's conv (bias added)."""
    from effnet.layers import ConvNormAct

    for mod in m.modules():
        if isinstance(mod, ConvNormAct) and isinstance(mod.norm, nn.BatchNorm2d):
            c, bn = mod.conv, mod.norm
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            c.weight.data = c.weight.data * s[:, None, None, None]
            c.bias = nn.Parameter(bn.bias - bn.running_mean * s)
            mod.norm = nn.Identity()
    return m


def _baseline_runner(who: str, name: str, batch: int):
    """The timed call of one torch.compile baseline, compiled and warmed up."""
    import torchvision

    tv_name, res = MODELS[name]
    torch.backends.cudnn.benchmark = True
    m = getattr(torchvision.models, tv_name)() if who == "torchvision_compile" else fold_bn(
        randomize_bn(effnet.create_model(name)))
    m = randomize_bn(m).cuda().eval().to(memory_format=torch.channels_last)
    cm = torch.compile(m, mode="reduce-overhead" if batch == 1 else None)
    xf = channels_last_input(batch, res).float().contiguous(memory_format=torch.channels_last)

    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return cm(xf)
    run()
    run()
    torch.cuda.synchronize()
    return run


@torch.no_grad()
def case_process(folder: str, i: int, who: str, name: str, batch: int) -> None:
    """One baseline in its own process: compile while the others compile, time only when told (alone)."""
    t0 = time.time()
    run = _baseline_runner(who, name, batch)
    setup = time.time() - t0
    open(os.path.join(folder, f"ready_{i}"), "w").close()
    while not os.path.exists(os.path.join(folder, f"go_{i}")):
        time.sleep(0.1)
    ms = bench(run, 100 if batch == 1 else 20)
    res = MODELS[name][1]
    row = {"part": "speed_final", "who": who, "model": name, "res": res, "batch": batch, "ms": ms,
           "img_s": batch / ms * 1e3, "setup_s": setup}
    with open(os.path.join(folder, f"row_{i}.json"), "w") as f:
        json.dump(row, f)


# DW_PROJECT=0 forbids the depthwise-in-project MBConv path (the record script sets it when that kernel's
# GPU check fails); unset, the tuner times it with the other paths.
DW_PROJECT = False if os.environ.get("DW_PROJECT") == "0" else None


def _wait(paths: list[str], procs: list, deadline: float) -> None:
    while time.time() < deadline and not all(os.path.exists(p) or pr.poll() is not None
                                             for p, pr in zip(paths, procs)):
        time.sleep(0.2)


@torch.no_grad()
def part_baselines() -> None:
    """torchvision + compile and BN-folded effnet + compile, each compiled in its own process at the same time
    (and the fused engine's kernels compiled alongside), then timed one at a time on the idle GPU; then the
    fused engine, tuned and timed in this process."""
    from effnet.kernels import FusedNet

    torch.backends.cudnn.benchmark = True  # as in the baselines (the fused engine's library paths use cuDNN)
    only = os.environ.get("ONLY", ",".join(MODELS)).split(",")
    cases = [(who, name, batch) for name in MODELS if name in only
             for who in ("torchvision_compile", "effnet_folded_compile")
             for batch in ((256, 1) if name == "efficientnet_b0" else (256,))]
    folder = tempfile.mkdtemp()
    me = os.path.abspath(__file__)
    t_start = time.time()
    procs = [subprocess.Popen([sys.executable, me, "__case__", folder, str(i), who, name, str(batch)])
             for i, (who, name, batch) in enumerate(cases)]
    shards = int(os.environ.get("PRECOMPILE_SHARDS", "3"))  # workers per model and batch (each a share)
    pre = [p for name in MODELS if name in only for batch in ((256, 1) if name == "efficientnet_b0" else (256,))
           for p in spawn(effnet.create_model(name), torch.empty(batch, 3, MODELS[name][1], MODELS[name][1],
                                                                 dtype=torch.bfloat16, device="cuda"),
                          shards, folder, dw_project=DW_PROJECT)]
    deadline = time.time() + float(os.environ.get("COMPILE_LIMIT_S", "420"))
    _wait([os.path.join(folder, f"ready_{i}") for i in range(len(cases))], procs, deadline)
    for p in pre:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    emit(part="baseline_compile", seconds=time.time() - t_start, precompile_rcs=[p.returncode for p in pre])
    for i, (who, name, batch) in enumerate(cases):
        open(os.path.join(folder, f"go_{i}"), "w").close()
        try:
            procs[i].wait(timeout=120)
        except subprocess.TimeoutExpired:
            procs[i].kill()
        path = os.path.join(folder, f"row_{i}.json")
        if os.path.exists(path):
            with open(path) as f:
                emit(**json.load(f))
        else:
            emit(part="speed_final", who=who, model=name, batch=batch, error=f"case process exit {procs[i].returncode}")
    for name, (_, res) in MODELS.items():
        if name not in only:
            continue
        for batch in (256, 1) if name == "efficientnet_b0" else (256,):
            x = channels_last_input(batch, res)
            t0 = time.time()
            fn = FusedNet(randomize_bn(effnet.create_model(name)).cuda().eval(), dtype=torch.bfloat16,
                          dw_project=DW_PROJECT)
            fn(x)
            torch.cuda.synchronize()
            ms = bench(lambda fn=fn, x=x: fn(x), 100 if batch == 1 else 20)
            emit(part="speed_final", who="effnet_fused", model=name, res=res, batch=batch, ms=ms,
                 img_s=batch / ms * 1e3, setup_s=time.time() - t0)
            fn = None
            torch.cuda.empty_cache()




if __name__ == "__main__":  # the worker processes part_baselines starts
    if sys.argv[1] == "__case__":
        folder, i, who, name, batch = sys.argv[2:7]
        case_process(folder, int(i), who, name, int(batch))
