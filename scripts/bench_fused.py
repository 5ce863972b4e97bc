# ruff: noqa: B023  (every closure below is timed in the iteration that defines it)
"""The fused Triton engine on one GPU: bf16 checks, speed against torch.compile baselines, per-block times.

    PYTHONPATH=src PARTS=check,kernels,fused,baselines python scripts/bench_fused.py   # on the GPU, rows -> $OUT
    python scripts/bench_fused_report.py OUT/rows.jsonl                               # tables + fused.png

Parts: ``check`` (every block type, bf16 fused vs float32 PyTorch; whole models with calibrated BN statistics;
models trained by ``effnet train`` if runs/digits*/best.safetensors exist), ``kernels`` (copy bandwidth; each
depthwise layer of B0 alone, ours (bias, act, SE squeeze) vs cuDNN's conv alone (no bias: its bias
is a separate add kernel)), ``fused`` (FusedNet per model), ``blocks`` (per-block GPU time
of B0: fused vs eager effnet), ``baselines`` (torchvision + torch.compile, effnet BN-folded + torch.compile,
FusedNet; batch 1 with CUDA graphs; in scripts/bench_fused_baselines.py), ``profile`` (fused B0's device time
by kernel).  Medians of CUDA-event timings.

Environment: ``ONLY`` (models of ``fused``/``baselines``), ``CHECK`` (parts of ``check``: blocks, models, trained,
dw, dwp, dwp_models), ``B0_BATCHES`` (``fused``: B0's batch sizes, default 256,1), ``DWP_COMPARE=1`` (``fused``:
also the engine with the depthwise-in-project path forbidden, same process), ``BLOCK_MODELS`` / ``BLOCK_VS``
(``blocks``: which models, and ``dwproject`` to compare that path forced / forbidden instead of expand fusion),
``PRECOMPILE=1`` (compile the ``ONLY`` models' kernels in parallel worker processes, started first).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from torch import nn

import effnet
from effnet.config import ModelConfig
from effnet.model import EfficientConvNet
from effnet.tables import BlockType, NetSpec, Stage

OUT = os.environ.get("OUT", ".")
ROWS = os.path.join(OUT, "rows.jsonl")
MODELS = {"efficientnet_b0": ("efficientnet_b0", 224), "mobilenet_v2_100": ("mobilenet_v2", 224),
          "efficientnet_v2_s": ("efficientnet_v2_s", 384)}
MB, FU, DS = BlockType.MBCONV, BlockType.FUSED_MBCONV, BlockType.DEPTHWISE_SEPARABLE
# (name, in_channels, Stage(block, expand, kernel, stride, out, repeats, se_ratio), activation, padding, size)
BLOCKS = [
    ("mbconv_e6_k3_s1_se_res", 40, Stage(MB, 6, 3, 1, 40, 1, 0.25), "silu", "symmetric", 28),
    ("mbconv_e6_k5_s2_se_same", 40, Stage(MB, 6, 5, 2, 80, 1, 0.25), "silu", "same", 28),
    ("mbconv_e6_k5_s1_se_res", 80, Stage(MB, 6, 5, 1, 80, 1, 0.25), "silu", "symmetric", 14),
    ("mbconv_e1_k3_s1_se", 32, Stage(MB, 1, 3, 1, 16, 1, 0.25), "silu", "symmetric", 56),
    ("mbconv_e6_k3_s2_nose", 24, Stage(MB, 6, 3, 2, 32, 1, 0.0), "relu6", "symmetric", 56),
    ("mbconv_e6_k3_s1_nose_res", 64, Stage(MB, 6, 3, 1, 64, 1, 0.0), "relu6", "symmetric", 14),
    ("mbconv_e4_k3_s2_se_v2", 64, Stage(MB, 4, 3, 2, 128, 1, 0.25), "silu", "symmetric", 24),
    ("mbconv_e6_k3_s1_hardswish", 48, Stage(MB, 6, 3, 1, 48, 1, 0.25), "hardswish", "same", 14),
    ("fused_e1_k3_s1_res", 24, Stage(FU, 1, 3, 1, 24, 1), "silu", "symmetric", 48),
    ("fused_e4_k3_s2", 24, Stage(FU, 4, 3, 2, 48, 1), "silu", "symmetric", 48),
    ("fused_e4_k3_s1_res", 48, Stage(FU, 4, 3, 1, 48, 1), "silu", "same", 24),
    ("fused_e4_k3_s1_se", 32, Stage(FU, 4, 3, 1, 32, 1, 0.25), "silu", "symmetric", 16),
    ("separable_k3_s1", 32, Stage(DS, 1, 3, 1, 64, 1), "relu6", "symmetric", 56),
    ("separable_k3_s2_same", 64, Stage(DS, 1, 3, 2, 128, 1), "relu6", "same", 56),
]


def emit(**row) -> None:
    print(json.dumps(row), flush=True)
    with open(ROWS, "a") as f:
        f.write(json.dumps(row) + "\n")


def bench(fn, iters: int = 30, warm: int = 5) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return sorted(ts)[len(ts) // 2]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.rand(n, generator=g) - 0.5
            m.running_mean = torch.rand(n, generator=g) - 0.5
            m.running_var = torch.rand(n, generator=g) * 1.5 + 0.5
    return model


@torch.no_grad()
def calibrate_bn(model: nn.Module, res: int, batches: int = 2) -> nn.Module:
    """Realistic BN statistics for a random init: running averages of its own activations on random images."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    for _ in range(batches):
        model(torch.randn(16, 3, res, res, device="cuda"))
    return model.eval()


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def agreement(y: torch.Tensor, ref: torch.Tensor) -> dict:
    top1 = float((y.argmax(1) == ref.argmax(1)).float().mean())
    t5, r5 = y.topk(5, 1).indices.tolist(), ref.topk(5, 1).indices.tolist()
    overlap = [len(set(a) & set(b)) for a, b in zip(t5, r5)]
    return {"top1_agree": top1, "top5_overlap_mean": sum(overlap) / len(overlap), "top5_overlap_min": min(overlap)}


@torch.no_grad()
def part_check() -> None:
    from effnet.kernels import FusedNet, tune

    tune.enabled = False  # correctness only: first-candidate tiles, no timing
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    what = os.environ.get("CHECK", "blocks,models,trained,dw,dwp,dwp_models").split(",")
    check_paths = os.environ.get("CHECK_PATHS", "fused,library,separate,dwproject").split(",")
    if "dwp" in what:
        from bench_fused_dwproject import check_dwproject

        check_dwproject()
    for name, cin, stage, act, pad, size in BLOCKS if "blocks" in what else ():
        cfg = ModelConfig(spec=NetSpec(cin, (stage,), None), num_classes=0, activation=act, padding=pad)
        model = randomize_bn(EfficientConvNet(cfg)).eval().cuda()
        block = model.stages[0][0]
        # paths: MBConv fused expand + depthwise (or separate where none) / library depthwise / ours separate;
        # Fused-MBConv: our conv kernel / the library's conv
        for fuse, lib, dwp, path in ((True, False, False, "fused"), (False, True, False, "library"),
                                     (False, False, False, "separate"), (False, False, True, "dwproject")):
            if stage.block is not MB and path in ("separate", "dwproject") or path not in check_paths:
                continue
            fused = FusedNet(model, dtype=torch.bfloat16, fuse_expand=fuse, library_convs=lib, dw_project=dwp)
            x = torch.randn(8, cin, size, size, device="cuda")
            ref = block(x)
            y = fused.run_block(nhwc(x).to(torch.bfloat16), fused.layers[0]).permute(0, 3, 1, 2)
            emit(part="check_block", block=name, path=path, rel_err=rel(y, ref), ok=rel(y, ref) <= 2e-2)
    for name in ("efficientnet_b0", "mobilenet_v2_100", "efficientnet_v2_s", "mobilenet_v1_100",
                 "efficientnet_lite0") if "models" in what else ():
        res = effnet.model_config(name).resolution
        model = calibrate_bn(effnet.create_model(name).cuda(), res)
        fused = FusedNet(model, dtype=torch.bfloat16)
        x = torch.randn(32, 3, res, res, device="cuda")
        ref = model(x)
        y = fused(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y_torch = model(x).float()  # what bf16 alone costs, for comparison: PyTorch's own autocast
        torch_bf16 = {f"torch_bf16_{k}": v for k, v in agreement(y_torch, ref).items()}
        emit(part="check_model", model=name, res=res, rel_err=rel(y, ref), **agreement(y, ref),
             torch_bf16_rel_err=rel(y_torch, ref), **torch_bf16)
    for name in ("mobilenet_v2_100", "efficientnet_b0") if "dwp_models" in what else ():
        res = effnet.model_config(name).resolution
        model = calibrate_bn(effnet.create_model(name).cuda(), res)
        x = torch.randn(32, 3, res, res, device="cuda")
        ref = model(x)
        y = FusedNet(model, dtype=torch.bfloat16, dw_project=True)(
            x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        emit(part="check_model", model=name, res=res, path="dwproject", rel_err=rel(y, ref), **agreement(y, ref))
    for path in ("runs/digits/best.safetensors", "runs/digits_b0/best.safetensors") if "trained" in what else ():
        if os.path.exists(path):
            check_trained(path)
    if "dw" in what:
        check_depthwise_candidates()


@torch.no_grad()
def check_depthwise_candidates() -> None:
    """Every depthwise tile / row-walking candidate on each of B0's depthwise layer shapes (8 images, bf16,
    SiLU, SE squeeze) against float32 PyTorch: the checks above run only the first candidate."""
    import torch.nn.functional as F

    from effnet.kernels import triton_depthwise as dw

    for hw, c, k, s in ((112, 32, 3, 1), (112, 96, 3, 2), (56, 144, 3, 1), (56, 144, 5, 2), (28, 240, 5, 1),
                        (28, 240, 3, 2), (14, 480, 3, 1), (14, 480, 5, 1), (14, 672, 5, 2), (7, 1152, 5, 1)):
        x = torch.randn(8, hw, hw, c, device="cuda")
        w, b = torch.randn(k * k, c, device="cuda") * 0.3, torch.randn(c, device="cuda")
        p = (k - 1) // 2
        ref = F.silu(F.conv2d(x.permute(0, 3, 1, 2), w.t().reshape(c, 1, k, k), b, s, p, groups=c))
        errs = {}
        for cfg in dw.CANDIDATES[k]:
            if s != 1 and "RS" in cfg:
                continue
            y, pooled, _ = dw.launch(x.to(torch.bfloat16), dw.pad_weights(w), b, k, s, (p,) * 4, 3, True, cfg)
            name = "_".join(f"{a}{v}" for a, v in cfg.items())
            errs[name] = max(rel(y.permute(0, 3, 1, 2), ref), rel(pooled, ref.sum((2, 3))))
        emit(part="check_dw", hw=hw, channels=c, k=k, stride=s, rel_err=errs, ok=max(errs.values()) <= 2e-2)


@torch.no_grad()
def check_trained(path: str) -> None:
    """A model trained by ``effnet train``: its validation split, through the checkpoint's own eval transform
    (size, crop, normalisation, as ``effnet evaluate`` reads them), float32 PyTorch vs the fused engine."""
    from effnet.kernels import FusedNet
    from effnet.train.config import TrainConfig
    from effnet.train.data import Transformed, file_transform, load_dataset
    from effnet.weights import load_checkpoint

    model, meta = load_checkpoint(path)
    model = model.cuda().eval()
    training = meta.training or {}
    split = training.get("split", {})
    data = load_dataset(TrainConfig(data=training.get("data_source"), val_fraction=split.get("val_fraction", 0.2),
                                    split_seed=split.get("split_seed", 0), classes=training.get("classes_kept"),
                                    progress=False))
    val = Transformed(data.val, file_transform(meta))
    x = torch.stack([val[i][0] for i in range(len(val))]).cuda()
    t = torch.tensor([val[i][1] for i in range(len(val))]).cuda()
    ref = model(x)
    y = FusedNet(model, dtype=torch.bfloat16)(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    emit(part="check_trained", checkpoint=path, model=model.config.name, images=len(t), split="validation",
         res=list(x.shape[2:]), acc_torch_fp32=float((ref.argmax(1) == t).float().mean()),
         acc_fused_bf16=float((y.argmax(1) == t).float().mean()), rel_err=rel(y, ref), **agreement(y, ref))


@torch.no_grad()
def part_kernels() -> None:
    from effnet.kernels import FusedNet
    from effnet.kernels.engine import _pads

    a = torch.empty(1 << 29, dtype=torch.bfloat16, device="cuda").normal_()
    b = torch.empty_like(a)
    t = bench(lambda: b.copy_(a), 20)  # one large call, event-timed (a graph replays a copy on the copy engine)
    copy_gbs = 2 * a.numel() * 2 / t / 1e6
    emit(part="copy", gb_s=copy_gbs)
    a = b = None
    model = effnet.create_model("efficientnet_b0").cuda().eval()
    fused = FusedNet(model, dtype=torch.bfloat16)
    tot_ours = tot_cudnn = 0.0
    h = 112
    for layer in fused.layers:
        s = layer["spec"]
        x = torch.randn(256, h, h, s.mid_channels, device="cuda", dtype=torch.bfloat16)
        pads = _pads((h, h), s.kernel, s.stride, s.padding)
        ours = graph_ms(lambda: fused.ops.depthwise(x, *layer["dw"], s.kernel, s.stride, pads, layer["act"], True))
        conv = nn.Conv2d(s.mid_channels, s.mid_channels, s.kernel, s.stride, s.kernel // 2, groups=s.mid_channels,
                         bias=False).cuda().to(torch.bfloat16).to(memory_format=torch.channels_last)
        xc = x.permute(0, 3, 1, 2)
        cud = graph_ms(lambda: conv(xc))
        oh = -(-h // s.stride)
        nbytes = 256 * s.mid_channels * 2 * (h * h + oh * oh)
        emit(part="depthwise", block=s.index, k=s.kernel, stride=s.stride, hw=h, channels=s.mid_channels,
             ours_ms=ours, cudnn_ms=cud, ours_gb_s=nbytes / ours / 1e6, ours_pct_copy=100 * nbytes / ours / 1e6 / copy_gbs,
             cudnn_pct_copy=100 * nbytes / cud / 1e6 / copy_gbs)
        tot_ours, tot_cudnn, h = tot_ours + ours, tot_cudnn + cud, oh
    emit(part="depthwise_total", model="efficientnet_b0", batch=256, ours_ms=tot_ours, cudnn_ms=tot_cudnn)


def channels_last_input(batch: int, res: int, dtype=torch.bfloat16) -> torch.Tensor:
    return torch.randn(batch, 3, res, res, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def part_fused() -> None:
    from effnet.kernels import FusedNet, tune

    only = os.environ.get("ONLY", ",".join(MODELS)).split(",")
    from bench_fused_dwproject import wait_precompile

    compare = os.environ.get("DWP_COMPARE", "0") == "1"
    wait_precompile()
    for name in only:  # in the order given
        res = MODELS[name][1]
        model = randomize_bn(effnet.create_model(name)).cuda().eval()
        engines = {"effnet_fused": FusedNet(model, dtype=torch.bfloat16)}
        if compare:  # the same weights, the depthwise-in-project path forbidden (each tunes its own path choice)
            engines["effnet_fused_no_dwproject"] = FusedNet(model, dtype=torch.bfloat16, dw_project=False)
        b0_batches = [int(b) for b in os.environ.get("B0_BATCHES", "256,1").split(",")]
        for batch in b0_batches if name == "efficientnet_b0" else (256,):
            x = channels_last_input(batch, res)
            for who, fused in engines.items():
                t0 = time.time()
                fused(x)
                torch.cuda.synchronize()
                emit(part="first_call", who=who, model=name, batch=batch, seconds=time.time() - t0)
            for rnd in range(2 if compare else 1):  # twice, alternating, when comparing: drift shows
                for who, fused in engines.items():
                    ms = bench(lambda: fused(x), 100 if batch == 1 else 20)
                    emit(part="speed", who=who, model=name, res=res, batch=batch, ms=ms, img_s=batch / ms * 1e3,
                         round=rnd)
        emit(part="paths", model=name, choices={k: v["path"] for k, v in tune._memory.items() if "path" in v})
        x = channels_last_input(256, res)  # the tuned engines (tile and path choices as timed) vs float32 PyTorch
        ref = model(x.float())
        for who, fused in engines.items():
            y = fused(x)
            emit(part="check_tuned", who=who, model=name, batch=256, rel_err=rel(y, ref), ok=rel(y, ref) <= 2e-2,
                 **agreement(y, ref))
        engines = fused = model = x = ref = y = None
        torch.cuda.empty_cache()


@torch.no_grad()
def part_blocks() -> None:
    from effnet.kernels import FusedNet, tune

    vs = os.environ.get("BLOCK_VS", "expand_fusion")
    for name in os.environ.get("BLOCK_MODELS", "efficientnet_b0").split(","):
        model = randomize_bn(effnet.create_model(name)).cuda().eval()
        res = MODELS[name][1]
        fused = FusedNet(model, dtype=torch.bfloat16)
        fused(channels_last_input(256, res))  # tune, and choose each block's path
        if vs == "dwproject":
            from bench_fused_dwproject import per_block_dwproject

            per_block_dwproject(name, model, fused, res)
        else:
            per_block(model, fused, FusedNet(model, dtype=torch.bfloat16, fuse_expand=False), res)
        emit(part="paths", model=name, choices={k: v["path"] for k, v in tune._memory.items() if "path" in v})


def graph_ms(fn, autocast: bool = False) -> float:
    """GPU time of ``fn`` alone: captured in a CUDA graph (no launch gaps, no host work), replays timed."""
    from effnet.analysis.timing import capture_graph

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        g, _ = capture_graph(fn)
    return bench(g.replay, 20)


@torch.no_grad()
def block_activations(model: nn.Module, x: torch.Tensor) -> tuple[list[nn.Module], list[torch.Tensor]]:
    """The eager model's blocks (channels_last) and every block's input on ``x`` in bf16 autocast, then the
    last block's output: what a block timed alone is fed."""
    eager = model.to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        acts = [eager.stem(x.float())]
        for stage in eager.stages:
            for blk in stage:
                acts.append(blk(acts[-1]))
    return [blk for stage in eager.stages for blk in stage], acts


@torch.no_grad()
def per_block(model: nn.Module, fused, unfused, res: int, batch: int = 256) -> None:
    """Each block timed alone on its real input, as a CUDA graph: fused engine (with the path it chose),
    fused engine without expand+depthwise fusion, eager effnet (bf16 autocast, channels_last)."""
    blocks, acts = block_activations(model, channels_last_input(batch, res))
    for layer, blk, a, out in zip(fused.layers, blocks, acts[:-1], acts[1:]):
        s = layer["spec"]
        a16 = a.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        a_nhwc = nhwc(a16)
        t_fused = graph_ms(lambda: fused.run_block(a_nhwc, layer))
        t_unfused = graph_ms(lambda: unfused.run_block(a_nhwc, unfused.layers[s.index]))
        t_eager = graph_ms(lambda: blk(a16), autocast=True)
        nbytes = 2 * (a.numel() + out.numel())  # the fused floor: block input read once, output written once
        emit(part="per_block", index=s.index, block=s.block.value, kernel=s.kernel, stride=s.stride, expand=s.expand_ratio,
             in_shape=list(a.shape[1:]), out_channels=s.out_channels, fused_ms=t_fused, no_expand_fusion_ms=t_unfused, eager_ms=t_eager,
             io_mb=nbytes / 1e6, fused_gb_s=nbytes / t_fused / 1e6)


@torch.no_grad()
def kernel_sums(fn, reps: int = 5) -> dict:
    """Device time per call of ``fn`` by kernel name (torch.profiler): {name: [ms, launches]}."""
    from collections import defaultdict

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    totals, calls = defaultdict(float), defaultdict(int)
    for evt in prof.key_averages():
        t = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        if t:
            totals[evt.key[:60]] += t / 1e3 / reps
            calls[evt.key[:60]] += evt.count // reps
    return {k: [round(v, 4), calls[k]] for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


@torch.no_grad()
def part_profile() -> None:
    """Device time of fused B0 at batch 256 by kernel (torch.profiler, no CUDA graph), per forward."""
    from effnet.kernels import FusedNet, tune

    model = randomize_bn(effnet.create_model("efficientnet_b0")).cuda().eval()
    fused = FusedNet(model, dtype=torch.bfloat16, cuda_graph=False)
    x = channels_last_input(256, 224)
    kernels = kernel_sums(lambda: fused(x))
    emit(part="profile", model="efficientnet_b0", batch=256, total_ms=sum(ms for ms, _ in kernels.values()),
         kernels=kernels)
    emit(part="tune_choices", choices={k: v for k, v in tune._memory.items() if k.startswith("depthwise")})


def main() -> None:
    import triton
    from bench_fused_baselines import part_baselines  # (scripts/ is on the path: this file's folder)

    parts = os.environ.get("PARTS", "check,kernels,fused,baselines").split(",")
    emit(part="env", gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
         parts=parts, argv=sys.argv, env={k: v for k, v in os.environ.items()
                                          if k in ("ONLY", "CHECK", "B0_BATCHES", "DWP_COMPARE", "BLOCK_MODELS",
                                                   "BLOCK_VS", "PRECOMPILE")})
    if os.environ.get("PRECOMPILE") == "1":
        from bench_fused_dwproject import start_precompile

        start_precompile()
    for p in parts:
        t0 = time.time()
        {"check": part_check, "kernels": part_kernels, "fused": part_fused, "baselines": part_baselines,
         "blocks": part_blocks, "profile": part_profile}[p]()
        emit(part="timing", section=p, seconds=time.time() - t0)


if __name__ == "__main__":
    main()
