"""Depthwise kernel variants on B0's layer shapes (batch 256, bf16, NHWC): GPU time alone, and ncu.

    PYTHONPATH=src python scripts/dw_probe.py time        # every variant timed through CUDA graphs -> $OUT/probe.jsonl
    ncu --profile-from-start off ... python scripts/dw_probe.py ncu   # old / best new / cuDNN on a few shapes

Variants: ``old`` (the tile kernel as it was, copied below), ``new`` (effnet.kernels.triton_depthwise with
a config: tile, launch order, batch-wide pixel blocks, shape-specialised, relaxed atomics, kernel rows
as a loop; run 6 had a per-row packed-bf16 sum variant, ``rowh``, in place of ``rl``, since removed), ``cudnn`` (nn.Conv2d(groups=C), channels_last bf16, bias, no activation, no squeeze).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import triton
import triton.language as tl
from torch import nn

from effnet.analysis.timing import capture_graph
from effnet.kernels import triton_depthwise as D
from effnet.kernels.triton_common import _act

OUT = os.environ.get("OUT", ".")
NB = int(os.environ.get("NB", "256"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
# (input H=W, channels, k, stride): B0's depthwise layers
SHAPES = [(112, 32, 3, 1), (112, 96, 3, 2), (56, 144, 3, 1), (56, 144, 5, 2), (28, 240, 5, 1), (14, 480, 3, 1),
          (14, 672, 5, 1), (7, 1152, 5, 1)]
NCU_SHAPES = [(56, 144, 3, 1), (14, 672, 5, 1), (7, 1152, 5, 1)]


@triton.jit
def _old_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, H, W, C, OH, OW, pad_t, pad_l, n_pblocks,
                KS: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, SQUEEZE: tl.constexpr,
                BP: tl.constexpr, BC: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // n_pblocks
    pb = pid % n_pblocks
    p = pb * BP + tl.arange(0, BP)
    p_mask = p < OH * OW
    oh = p // OW
    ow = p % OW
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    c_mask = c < C
    x_img = x_ptr + n.to(tl.int64) * H * W * C
    acc = tl.zeros((BP, BC), dtype=tl.float32)
    for kh in tl.static_range(KS):
        ih = oh * STRIDE - pad_t + kh
        h_ok = p_mask & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KS):
            iw = ow * STRIDE - pad_l + kw
            ok = h_ok & (iw >= 0) & (iw < W)
            xv = tl.load(x_img + (ih * W + iw)[:, None] * C + c[None, :], mask=ok[:, None] & c_mask[None, :],
                         other=0.0)
            wv = tl.load(w_ptr + (kh * KS + kw) * C + c, mask=c_mask, other=0.0)
            acc += xv.to(tl.float32) * wv[None, :]
    y = _act(acc + tl.load(bias_ptr + c, mask=c_mask, other=0.0)[None, :], ACT)
    mask = p_mask[:, None] & c_mask[None, :]
    out_img = out_ptr + n.to(tl.int64) * OH * OW * C
    tl.store(out_img + p[:, None] * C + c[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
    if SQUEEZE:
        tl.atomic_add(pool_ptr + n * C + c, tl.sum(tl.where(mask, y, 0.0), axis=0), mask=c_mask)


def base(bp, bc, warps, **kw):
    return {"BP": bp, "BC": bc, "warps": warps, "TW": 0, "GP": 0, "CF": 0, "SPEC": 0, **kw}


def variants(shape) -> list[tuple[str, str, dict]]:
    """SET=run7 (default): the old kernel, the tuner's candidates for this shape, more row-walking configs,
    cuDNN with and without its bias add.  SET=run6: the list of run 6 (before the row-walking kernel)."""
    if os.environ.get("SET", "run7") == "run7":
        _hw, _c, k, s = shape
        v = [("old_BP64_BC64_w4", "old", {"BP": 64, "BC": 64, "warps": 4})]
        for cfg in D.CANDIDATES[k]:
            if s == 1 or "RS" not in cfg:
                v.append(("cand_" + "_".join(f"{a}{b}" for a, b in cfg.items()), "new", dict(cfg)))
        if s == 1:
            for rs, tw, bc, w in ((8, 16, 64, 4), (32, 16, 64, 4), (16, 32, 64, 4), (16, 16, 128, 4), (16, 16, 64, 2),
                                  (16, 8, 64, 2), (16, 16, 32, 2), (16, 32, 64, 8)):
                v.append((f"rows_RS{rs}_TW{tw}_BC{bc}_w{w}", "new", {"RS": rs, "TW": tw, "BC": bc, "warps": w}))
        return v + [("cudnn_nobias", "cudnn", {"bias": False}), ("cudnn", "cudnn", {})]
    v = [(f"old_BP{bp}_BC{bc}_w{w}", "old", {"BP": bp, "BC": bc, "warps": w})
         for bp, bc, w in ((64, 64, 4), (32, 128, 4), (128, 32, 4))]
    for bp, bc, w in ((64, 64, 4), (32, 64, 4), (64, 64, 8), (128, 64, 8), (32, 128, 4), (16, 128, 4), (128, 32, 4),
                      (64, 32, 4), (32, 64, 2), (16, 64, 2), (32, 32, 1)):
        v.append((f"new_BP{bp}_BC{bc}_w{w}", "new", base(bp, bc, w)))
    for bp, bc, w in ((64, 64, 4), (32, 64, 4)):
        tag = f"BP{bp}_BC{bc}_w{w}"
        v += [(f"tw8_{tag}", "new", base(bp, bc, w, TW=8)), (f"gp_{tag}", "new", base(bp, bc, w, GP=1)),
              (f"cf_{tag}", "new", base(bp, bc, w, CF=1)), (f"spec_{tag}", "new", base(bp, bc, w, SPEC=1)),
              (f"acqrel_{tag}", "new", base(bp, bc, w, relaxed=0)), (f"nose_{tag}", "new", base(bp, bc, w, squeeze=0)),
              (f"rl_{tag}", "new", base(bp, bc, w, RL=1))]
    v += [("maxnreg64_BP64_BC64_w4", "new", base(64, 64, 4, maxnreg=64)),
          ("maxnreg80_BP64_BC64_w4", "new", base(64, 64, 4, maxnreg=80)),
          ("gp_cf_spec_BP32_BC64_w4", "new", base(32, 64, 4, GP=1, CF=1, SPEC=1)),
          ("gp_cf_spec_BP64_BC64_w4", "new", base(64, 64, 4, GP=1, CF=1, SPEC=1)),
          ("cudnn", "cudnn", {})]
    return v


def make(shape):
    hw, c, k, s = shape
    x = torch.randn(NB, hw, hw, c, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(k * k, c, device=DEV) * 0.2
    b = torch.randn(c, device=DEV)
    p = (k - 1) // 2
    oh = D.out_size(hw, k, s, p, p)
    out = x.new_empty((NB, oh, oh, c))
    pooled = torch.zeros((NB, c), device=DEV, dtype=torch.float32)
    return x, w, b, (p,) * 4, oh, out, pooled


def runner(kind, cfg, shape, bufs):
    """A no-argument launch of this variant, and a dict of what the compiler reports (filled on first call)."""
    hw, c, k, s = shape
    x, w, b, pads, oh, out, pooled = bufs
    info: dict = {}
    if kind == "cudnn":
        conv = nn.Conv2d(c, c, k, s, pads[0], groups=c, bias=cfg.get("bias", True)).to(DEV, torch.bfloat16)
        conv = conv.to(memory_format=torch.channels_last)
        xc = x.permute(0, 3, 1, 2)
        return lambda: conv(xc), info
    if kind == "old":
        bp, bc = cfg["BP"], cfg["BC"]
        npb = triton.cdiv(oh * oh, bp)

        def run():
            kern = _old_kernel[(NB * npb, triton.cdiv(c, bc))](x, w, b, out, pooled, hw, hw, c, oh, oh, pads[0], pads[2],
                                                             npb, KS=k, STRIDE=s, ACT=3, SQUEEZE=True, BP=bp, BC=bc,
                                                             num_warps=cfg["warps"])
            info.setdefault("regs", getattr(kern, "n_regs", None))
            info.setdefault("spills", getattr(kern, "n_spills", None))
        return run, info
    cfg = {"TW": 0, "GP": 0, "CF": 0, "SPEC": 0, **cfg}
    relaxed, squeeze = bool(cfg.pop("relaxed", 1)), bool(cfg.pop("squeeze", 1))
    wp = D.pad_weights(w)

    def run():
        _, _, kern = D.launch(x, wp, b, k, s, pads, 3, squeeze, cfg, relaxed=relaxed, out=out, pooled=pooled)
        info.setdefault("regs", getattr(kern, "n_regs", None))
        info.setdefault("spills", getattr(kern, "n_spills", None))
    return run, info


def graph_ms(fn, reps: int = 10, iters: int = 15) -> float:
    """Milliseconds per call of ``fn``: ``reps`` calls captured in one CUDA graph, median of ``iters`` replays."""
    g, _ = capture_graph(lambda: [fn() for _ in range(reps)])
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) / reps)
    return sorted(ts)[len(ts) // 2]


def compile_slice(i: int, n: int) -> None:
    """Compile (launch once) every Triton variant of slice i of n, to fill Triton's disk cache in parallel."""
    jobs = [(shape, v) for shape in SHAPES for v in variants(shape) if v[1] != "cudnn"]
    cur, bufs = None, None
    for shape, (_name, kind, cfg) in jobs[i::n]:
        if shape != cur:
            cur, bufs = shape, None
            torch.cuda.empty_cache()
            bufs = make(shape)
        runner(kind, cfg, shape, bufs)[0]()
    torch.cuda.synchronize()


def emit(path: str, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


@torch.no_grad()
def time_all() -> None:
    n = int(os.environ.get("WORKERS", "12"))
    procs = [subprocess.Popen([sys.executable, __file__, "compile", str(i), str(n)]) for i in range(n)]
    rcs = [p.wait() for p in procs]
    path = os.path.join(OUT, "probe.jsonl")
    a = torch.empty(1 << 29, dtype=torch.bfloat16, device=DEV).normal_()
    b2 = torch.empty_like(a)
    copy = 2 * a.numel() * 2 / graph_ms(lambda: b2.copy_(a), reps=5) / 1e6
    a = b2 = None
    emit(path, {"part": "env", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                "triton": triton.__version__, "copy_gb_s": copy, "compile_rcs": rcs})
    for shape in SHAPES:
        torch.cuda.empty_cache()
        bufs = make(shape)
        hw, c, k, s = shape
        nbytes = 2 * c * NB * (hw * hw + bufs[4] ** 2)
        x, w, b, pads = bufs[:4]
        ref = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2).float(), w.t().reshape(c, 1, k, k), b, s, pads[0],
                                         groups=c)
        ref = torch.nn.functional.silu(ref).permute(0, 2, 3, 1)
        for name, kind, cfg in variants(shape):
            try:
                fn, info = runner(kind, cfg, shape, bufs)
                if kind != "cudnn":
                    bufs[5].zero_()
                    fn()
                    info["rel_err"] = float((bufs[5].float() - ref).norm() / ref.norm())
                ms = graph_ms(fn)
            except Exception as e:  # noqa: BLE001  a variant that cannot compile or run here: say so, go on
                emit(path, {"part": "dw", "hw": hw, "c": c, "k": k, "s": s, "variant": name, "error": str(e)[:200]})
                continue
            emit(path, {"part": "dw", "hw": hw, "c": c, "k": k, "s": s, "variant": name, "ms": ms,
                        "pct_copy": round(100 * nbytes / ms / 1e6 / copy, 1), **info})


@torch.no_grad()
def ncu_run() -> None:
    """Old tile kernel, the fastest new variant and cuDNN, once each inside the profiler's range."""
    with open(os.path.join(OUT, "probe.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    todo = []
    for shape in NCU_SHAPES:
        allv = {v[0]: v for v in variants(shape)}
        mine = [r for r in rows if r.get("part") == "dw" and (r["hw"], r["c"], r["k"], r["s"]) == shape
                and "ms" in r and allv[r["variant"]][1] == "new" and not r["variant"].startswith("nose")]
        best = min(mine, key=lambda r: r["ms"])["variant"] if mine else variants(shape)[1][0]
        for name in ("old_BP64_BC64_w4", best, "cudnn_nobias"):
            bufs = make(shape)
            fn, _ = runner(allv[name][1], allv[name][2], shape, bufs)
            fn()  # compile / warm up outside the profiled range
            todo.append((f"{shape}:{name}", fn, bufs))
    torch.cuda.synchronize()
    print("ncu order:", [t[0] for t in todo], flush=True)
    with open(os.path.join(OUT, "ncu_order.json"), "w") as f:
        json.dump([t[0] for t in todo], f)
    torch.cuda.cudart().cudaProfilerStart()
    for _label, fn, _ in todo:
        fn()
        torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "time"
    if mode == "compile":
        compile_slice(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "ncu":
        ncu_run()
    else:
        time_all()
