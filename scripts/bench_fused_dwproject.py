"""The depthwise-in-project MBConv path (``triton_dwproject``) in scripts/bench_fused.py: its kernel checks, its
per-block table, and the parallel precompile that keeps a from-scratch tuning run short.

Used by bench_fused.py (``CHECK=dwp``, ``BLOCK_VS=dwproject``, ``PRECOMPILE=1``); the precompile workers are
``effnet.kernels.parallel_compile``'s.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
from bench_fused import MB, MODELS, block_activations, channels_last_input, emit, graph_ms, nhwc, rel
from torch import nn

import effnet

# MobileNetV2's block shapes (h = w in, mid, out, k, stride, act 2 = relu6, residual) and three of B0's (act 3 =
# SiLU, SE gate), so that these checks also compile the kernels the tuner needs later
DWP_SHAPES = [(112, 32, 16, 3, 1, 2, False, False), (112, 96, 24, 3, 2, 2, False, False),
              (56, 144, 24, 3, 1, 2, True, False), (56, 144, 32, 3, 2, 2, False, False),
              (28, 192, 32, 3, 1, 2, True, False), (28, 192, 64, 3, 2, 2, False, False),
              (14, 384, 64, 3, 1, 2, True, False), (14, 384, 96, 3, 1, 2, False, False),
              (14, 576, 96, 3, 1, 2, True, False), (14, 576, 160, 3, 2, 2, False, False),
              (7, 960, 160, 3, 1, 2, True, False), (7, 960, 320, 3, 1, 2, False, False),
              (56, 144, 24, 3, 1, 3, True, True), (28, 240, 40, 5, 1, 3, True, True), (14, 672, 192, 5, 2, 3, False, True)]


@torch.no_grad()
def check_dwproject(batch: int = 256) -> None:
    """The depthwise-in-project kernel, bf16 vs float32 PyTorch (random weights) at the models' own shapes and
    batch (the kernels compiled here are the ones the tuner launches later): every tile candidate on the first
    three shapes, the first candidate on the others (CHECK_ALL=1: every candidate everywhere)."""
    import torch.nn.functional as F

    from effnet.kernels import triton_depthwise as dw
    from effnet.kernels import triton_dwproject as dwp

    acts = {2: F.relu6, 3: F.silu}
    sweep_all = os.environ.get("CHECK_ALL") == "1"
    for i, (hw, c, n_out, k, s, act, res, se) in enumerate(DWP_SHAPES):
        p = (k - 1) // 2
        oh = (hw + 2 * p - k) // s + 1
        e = torch.randn(batch, hw, hw, c, device="cuda")
        wd, bd = torch.randn(k * k, c, device="cuda") * 0.3, torch.randn(c, device="cuda") * 0.1
        wp, bp = torch.randn(c, n_out, device="cuda") / c ** 0.5, torch.randn(n_out, device="cuda")
        gate = torch.rand(batch, c, device="cuda") if se else None
        residual = torch.randn(batch, oh, oh, n_out, device="cuda") if res else None
        d = acts[act](F.conv2d(e.permute(0, 3, 1, 2), wd.t().reshape(c, 1, k, k), bd, s, p, groups=c))
        d = d.permute(0, 2, 3, 1) * (gate[:, None, None, :] if se else 1)
        ref = d @ wp + bp + (residual if res else 0)
        errs = {}
        for cfg in dwp.CANDIDATES if i < 3 or sweep_all else dwp.CANDIDATES[:1]:
            y = dwp._launch(e.to(torch.bfloat16), dw.pad_weights(wd), bd, wp.to(torch.bfloat16), bp, k, s, (p,) * 4,
                            act, gate, residual.to(torch.bfloat16) if res else None, cfg)
            errs["_".join(f"{a}{v}" for a, v in cfg.items())] = rel(y, ref)
        e = wd = d = ref = y = residual = None
        emit(part="check_dwp", batch=batch, hw=hw, mid=c, out=n_out, k=k, stride=s, act=act, residual=res, se=se, rel_err=errs,
             ok=max(errs.values()) <= 2e-2)


_PRECOMPILE: list = []


def start_precompile() -> None:
    """Worker processes that compile the ``ONLY`` models' kernels at batch 256 (every tile candidate and path;
    nothing timed), so that the tuning later finds Triton's compile cache warm."""
    from effnet.kernels.parallel_compile import spawn

    only = os.environ.get("ONLY", ",".join(MODELS)).split(",")
    shards = int(os.environ.get("PRECOMPILE_SHARDS", "6"))
    folder = tempfile.mkdtemp()
    for name in only:
        _PRECOMPILE.extend(spawn(effnet.create_model(name), channels_last_input(256, MODELS[name][1]), shards, folder))


def wait_precompile(limit_s: float = 170.0) -> None:
    t0 = time.time()
    for p in _PRECOMPILE:
        try:
            p.wait(timeout=max(1.0, limit_s - (time.time() - t0)))
        except Exception:  # noqa: BLE001  too slow: the tuner compiles what is missing
            p.kill()
    if _PRECOMPILE:
        emit(part="precompile", seconds_waited=time.time() - t0, rcs=[p.returncode for p in _PRECOMPILE])
    _PRECOMPILE.clear()


@torch.no_grad()
def per_block_dwproject(name: str, model: nn.Module, fused, res: int, batch: int = 256) -> None:
    """Each MBConv block alone (CUDA graph, real input): the engine's choice, the depthwise-in-project path
    forced, and the engine with that path forbidden (choosing among the others)."""
    from effnet.kernels import FusedNet

    forced = FusedNet(model, dtype=torch.bfloat16, dw_project=True)
    forbidden = FusedNet(model, dtype=torch.bfloat16, dw_project=False)
    forbidden(channels_last_input(batch, res))  # its own path choices
    _, acts = block_activations(model, channels_last_input(batch, res))
    for layer, a in zip(fused.layers, acts[:-1]):
        s = layer["spec"]
        if s.block is not MB:
            continue
        a_nhwc = nhwc(a.to(torch.bfloat16))
        t = {who: graph_ms(lambda e=e, a=a_nhwc, i=s.index: e.run_block(a, e.layers[i]))
             for who, e in (("chosen", fused), ("dwproject", forced), ("no_dwproject", forbidden))}
        emit(part="per_block_dwp", model=name, index=s.index, kernel=s.kernel, stride=s.stride, expand=s.expand_ratio,
             se=s.has_se, in_shape=list(a.shape[1:]), mid=s.mid_channels, out_channels=s.out_channels,
             **{f"{k}_ms": v for k, v in t.items()})

