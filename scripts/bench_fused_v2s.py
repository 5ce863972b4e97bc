# ruff: noqa: B023  (every closure below is timed in the iteration that defines it)
"""EfficientNetV2-S (384 px, batch 256) in the fused engine: where its time goes, and run 8's engine ("old": its
tile candidate lists and Fused-MBConv library path) against the current one ("new"), each in its own process
with its own tuning cache.

    PYTHONPATH=src python scripts/bench_fused_v2s.py         # on the GPU box; rows -> $OUT/rows.jsonl

Steps ($STEPS, default all): ``precompile`` (every tile candidate of V2-S's layer shapes, and of the models in
$WHOLE_MODELS, compiled by $SHARDS worker processes, each a share), ``baselines`` (BN-folded effnet and
torchvision + torch.compile, compiled in background processes from the start, timed and profiled by kernel
at the end), and per variant in $VARIANTS (default new,old): the whole model (CUDA graph), each block alone
on its real input (CUDA graph) with the path the tuner chose (FORCED_PATHS=1: also the library's convs
forced / ours forced) and eager effnet, the device time by kernel (torch.profiler), the models in
$WHOLE_MODELS whole, and (``new`` only) V2-S's big 1x1 GEMMs alone, every pointwise candidate vs torch.mm,
and every conv / pointwise candidate's bf16 error on V2-S's shapes (alone: ``STEPS=checks``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch
from bench_fused import (
    bench,
    block_activations,
    channels_last_input,
    emit,
    graph_ms,
    kernel_sums,
    nhwc,
    randomize_bn,
    rel,
)

import effnet

NAME, RES, BATCH = "efficientnet_v2_s", 384, 256
ME = os.path.abspath(__file__)


def _fused_library_run8(self, x, L, pads):
    """Run 8's Fused-MBConv library path (the conv's bias by torch; without a project, activation and residual
    as two more torch passes), for the ``old`` variant."""
    from effnet.kernels.engine import TORCH_ACTS, _library_conv

    s = L["spec"]
    h = _library_conv(x, *L["expand_lib"], s.stride, pads)
    if s.has_project:
        return self.ops.pointwise(h, *L["project"], 0, residual=x if s.residual else None, pre_act=L["act"])
    out = TORCH_ACTS[s.activation](h, inplace=True)
    return out.add_(x) if s.residual else out


def use_variant(variant: str) -> None:
    """``old``: run 8's engine: its candidate lists (the first entries of today's; no straddling-gate, TMA or
    tap-loop tiles) and its Fused-MBConv library path."""
    from effnet.kernels import FusedNet, tune

    if variant == "old":
        tune.POINTWISE, tune.POINTWISE_SPAN, tune.POINTWISE_TMA, tune.CONV = tune.POINTWISE[:3], [], [], tune.CONV[:2]
        FusedNet._fused_library = _fused_library_run8


WHOLE = os.environ.get("WHOLE_MODELS", "efficientnet_b0,mobilenet_v2_100")  # also timed whole, per variant


@torch.no_grad()
def precompile(shard: int, shards: int) -> None:
    from bench_fused import MODELS

    from effnet.kernels import FusedNet, tune

    tune.compile_only, tune.shard = True, (shard, shards)
    for name in [NAME] + [m for m in WHOLE.split(",") if m]:
        fused = FusedNet(randomize_bn(effnet.create_model(name)).cuda().eval(), dtype=torch.bfloat16, cuda_graph=False)
        fused(channels_last_input(BATCH, MODELS[name][1]))
        torch.cuda.synchronize()


@torch.no_grad()
def baseline(folder: str, who: str) -> None:
    """A torch.compile baseline of V2-S (as the baselines part): compile now, time and profile when told."""
    from bench_fused_baselines import _baseline_runner

    t0 = time.time()
    run = _baseline_runner(who, NAME, BATCH)
    open(os.path.join(folder, f"ready_{who}"), "w").close()
    setup = time.time() - t0
    while not os.path.exists(os.path.join(folder, f"go_{who}")):
        time.sleep(0.2)
    ms = bench(run, 20)
    kernels = kernel_sums(run)
    emit(part="baseline", who=who, model=NAME, batch=BATCH, ms=ms, setup_s=setup,
         total_ms=sum(v[0] for v in kernels.values()), kernels=kernels)


@torch.no_grad()
def variant_run(variant: str) -> None:
    from effnet.kernels import FusedNet, tune

    use_variant(variant)
    torch.backends.cudnn.benchmark = True  # as in the baselines (the library paths use cuDNN)
    model = randomize_bn(effnet.create_model(NAME)).cuda().eval()
    x = channels_last_input(BATCH, RES)
    t0 = time.time()
    engines = {"auto": FusedNet(model, dtype=torch.bfloat16)}
    engines["auto"](x)
    setup = time.time() - t0
    ms = bench(lambda: engines["auto"](x), 20)
    emit(part="v2s_speed", variant=variant, ms=ms, img_s=BATCH / ms * 1e3, setup_s=setup)
    if os.environ.get("FORCED_PATHS", "0") == "1":
        engines |= {"library": FusedNet(model, dtype=torch.bfloat16, library_convs=True),
                    "ours": FusedNet(model, dtype=torch.bfloat16, library_convs=False)}
    blocks_ms(variant, model, engines, x)
    emit(part="v2s_choices", variant=variant, choices=tune._memory)
    plain = FusedNet(model, dtype=torch.bfloat16, cuda_graph=False)
    kernels = kernel_sums(lambda: plain(x))
    emit(part="v2s_profile", variant=variant, total_ms=sum(v[0] for v in kernels.values()), kernels=kernels)
    engines = plain = None
    torch.cuda.empty_cache()
    from bench_fused import MODELS

    for name in [m for m in WHOLE.split(",") if m]:
        res = MODELS[name][1]
        xm = channels_last_input(BATCH, res)
        fm = FusedNet(randomize_bn(effnet.create_model(name)).cuda().eval(), dtype=torch.bfloat16)
        fm(xm)
        emit(part="whole_speed", variant=variant, model=name, res=res, batch=BATCH, ms=bench(lambda: fm(xm), 20))
    if variant == "new":
        gemms_alone()
        candidate_errors()


def blocks_ms(variant: str, model, engines: dict, x: torch.Tensor) -> None:
    """Each block alone on its real input (CUDA graph): every engine, and eager effnet (bf16 autocast)."""
    blocks, acts = block_activations(model, x)
    for i, (blk, a) in enumerate(zip(blocks, acts[:-1])):
        a16 = a.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        a_nhwc = nhwc(a16)
        times = {f"{k}_ms": graph_ms(lambda: e.run_block(a_nhwc, e.layers[i])) for k, e in engines.items()}
        s = engines["auto"].layers[i]["spec"]
        emit(part="v2s_block", variant=variant, index=i, stage=s.stage, block=s.block.value, stride=s.stride,
             expand=s.expand_ratio, in_shape=list(a.shape[1:]), mid=s.mid_channels, out_channels=s.out_channels,
             eager_ms=graph_ms(lambda: blk(a16), autocast=True), **times)
    e = engines["auto"]
    stem_in = nhwc(x)
    whole = graph_ms(lambda: e.forward_nhwc(stem_in))
    emit(part="v2s_whole_graph", variant=variant, ms=whole)


GEMMS = [  # (M, K, N, what): V2-S's 1x1 convs at batch 256
    (256 * 576, 128, 512, "s4 expand"), (256 * 576, 512, 128, "s4 project"), (256 * 576, 160, 960, "s5 expand"),
    (256 * 576, 960, 160, "s5 project"), (256 * 144, 256, 1536, "s6 expand"), (256 * 144, 1536, 256, "s6 project"),
    (256 * 144, 256, 1280, "head")]


@torch.no_grad()
def gemms_alone() -> None:
    from effnet.kernels import triton_ops, tune

    for m, k, n, what in GEMMS:
        hw = 576 if m == 256 * 576 else 144
        a = torch.randn(256, hw, 1, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) / k**0.5
        b = torch.randn(n, device="cuda")
        a2 = a.view(m, k)
        flop = 2 * m * k * n
        mm = bench(lambda: a2 @ w, 20)
        row = {"torch_mm": round(mm, 4)}
        proj = "project" in what
        gate = torch.rand(256, k, device="cuda") if proj else None
        for c in tune.POINTWISE + (tune.POINTWISE_SPAN if proj else []) + tune.POINTWISE_TMA:
            name = "_".join(f"{q}{v}" for q, v in c.items())
            try:
                row[name] = round(bench(lambda: triton_ops._pointwise_launch(a, w, b, 0 if proj else 3, gate, None, False,
                                                                         c, proj, 0), 20), 4)
            except Exception as e:  # noqa: BLE001  a config this card cannot run
                row[name] = repr(e)[:80]
        best = min(v for q, v in row.items() if isinstance(v, float) and q != "torch_mm")
        emit(part="gemm_alone", what=what, m=m, k=k, n=n, gate=proj, ms=row, torch_mm_tflops=flop / mm / 1e9,
             best_ours_tflops=flop / best / 1e9)


@torch.no_grad()
def candidate_errors() -> None:
    """Every conv candidate on V2-S's Fused-MBConv shapes, every straddling-gate / TMA / persistent GEMM tile and
    the bias + activation pass: bf16 vs fp32."""
    import torch.nn.functional as F

    from effnet.kernels import triton_ops, tune

    for hw, ci, co, c2, s, res in ((48, 24, 24, None, 1, True), (48, 24, 96, 48, 2, False), (24, 48, 192, 48, 1, True),
                                   (24, 48, 192, 64, 2, False), (12, 64, 256, 64, 1, True)):
        x = torch.randn(8, hw, hw, ci, device="cuda")
        w, b = torch.randn(co, ci, 3, 3, device="cuda") / (9 * ci) ** 0.5, torch.randn(co, device="cuda")
        p = (torch.randn(co, c2, device="cuda") / co**0.5, torch.randn(c2, device="cuda")) if c2 else None
        ref = nhwc(F.silu(F.conv2d(x.permute(0, 3, 1, 2), w, b, s, 1)))
        ref = ref @ p[0] + p[1] if p else ref
        r = x if res else None
        ref = ref + r if res else ref
        errs = {}
        for c in tune.CONV:
            if (c.get("TH") and s != 1) or c.get("FLAT"):
                continue
            wf = w.permute(2, 3, 1, 0).reshape(-1, co).contiguous().to(torch.bfloat16)
            pb = (p[0].to(torch.bfloat16), p[1]) if p else None
            try:
                y = triton_ops._conv_launch(x.to(torch.bfloat16), wf, b, 3, s, (1, 1, 1, 1), 3, pb,
                                            r.to(torch.bfloat16) if res else None, ref.shape[1], ref.shape[2], False, c)
                errs["_".join(f"{q}{v}" for q, v in c.items())] = rel(y, ref)
            except Exception as e:  # noqa: BLE001  a config this card or Triton cannot run: say so
                emit(part="check_conv_failed", cfg=c, error=repr(e)[:300])
        emit(part="check_conv", hw=hw, ci=ci, co=co, c2=c2, stride=s, res=res, rel_err=errs, ok=max(errs.values()) <= 2e-2)
    x, w, b = torch.randn(8, 12, 12, 256, device="cuda"), torch.randn(256, 64, device="cuda") / 16, torch.randn(64, device="cuda")
    gate = torch.rand(8, 256, device="cuda")
    ref = (x * gate[:, None, None, :]) @ w + b
    errs = {}
    for c in tune.POINTWISE_SPAN + tune.POINTWISE_TMA:
        try:
            errs["_".join(f"{q}{v}" for q, v in c.items())] = rel(triton_ops._pointwise_launch(
                x.to(torch.bfloat16), w.to(torch.bfloat16), b, 0, gate, None, False, c, True, 0), ref)
        except Exception as e:  # noqa: BLE001
            emit(part="check_pointwise_failed", cfg=c, error=repr(e)[:300])
    emit(part="check_pointwise_span", rel_err=errs, ok=max(errs.values()) <= 2e-2)
    h, r = torch.randn(8, 24, 24, 24, device="cuda"), torch.randn(8, 24, 24, 24, device="cuda")
    y = triton_ops.triton_conv.bias_act(h.to(torch.bfloat16), b[:24].contiguous(), 3, residual=r.to(torch.bfloat16))
    err = rel(y, F.silu(h + b[:24]) + r)
    emit(part="check_bias_act", rel_err=err, ok=err <= 2e-2)


def main() -> None:
    import triton

    steps = os.environ.get("STEPS", "precompile,baselines,variants").split(",")
    emit(part="env", gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
         steps=steps, argv=sys.argv)
    folder = tempfile.mkdtemp()
    t0 = time.time()
    whos = [w for w in ("effnet_folded_compile", "torchvision_compile") if w in os.environ.get(
        "BASELINES", "effnet_folded_compile,torchvision_compile").split(",")] if "baselines" in steps else []
    bg = {w: subprocess.Popen([sys.executable, ME, "__baseline__", folder, w]) for w in whos}
    if "precompile" in steps:
        n = int(os.environ.get("SHARDS", "10"))
        procs = [subprocess.Popen([sys.executable, ME, "__precompile__", str(i), str(n)]) for i in range(n)]
        limit = float(os.environ.get("PRECOMPILE_LIMIT_S", "150"))
        for p in procs:
            try:
                p.wait(timeout=max(1.0, limit - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                p.kill()
        emit(part="timing", section="precompile", seconds=time.time() - t0, rcs=[p.returncode for p in procs])
    def ready(w):
        return os.path.exists(os.path.join(folder, f"ready_{w}")) or bg[w].poll() is not None

    # the baselines' compiles warm up on the GPU at their end: let them finish before anything is timed
    while not all(ready(w) for w in bg) and time.time() - t0 < float(os.environ.get("BASELINE_LIMIT_S", "150")):
        time.sleep(0.5)
    emit(part="timing", section="baselines_ready", seconds=time.time() - t0, ready=[w for w in bg if ready(w)])
    if "variants" in steps:
        for v in os.environ.get("VARIANTS", "new,old").split(","):
            t1 = time.time()
            env = {**os.environ, "XDG_CACHE_HOME": os.path.join(folder, f"cache_{v}")}
            subprocess.run([sys.executable, ME, "__variant__", v], env=env, check=False)
            emit(part="timing", section=f"variant_{v}", seconds=time.time() - t1)
    if "checks" in steps:  # every conv / GEMM tile candidate alone, bf16 vs fp32 (also part of ``variants``)
        candidate_errors()
    for w, proc in bg.items():
        t1 = time.time()
        open(os.path.join(folder, f"go_{w}"), "w").close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        emit(part="timing", section=w, seconds=time.time() - t1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "__precompile__":
        precompile(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "__baseline__":
        baseline(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "__variant__":
        variant_run(sys.argv[2])
    else:
        main()
