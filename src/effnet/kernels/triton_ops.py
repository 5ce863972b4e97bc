"""The Triton kernels and their launchers.  Activations are NHWC: [N, H, W, C], C contiguous.

This is the one module of ``effnet.kernels`` that imports Triton; the package imports it only when
a fused engine is built, so ``import effnet.kernels`` works where Triton is not installed.

Kernels (each with bias + activation in its epilogue):
- ``pointwise``: 1x1 conv as a GEMM [pixels, C_in] x [C_in, C_out]; prologue: SE gate scales A as it
  is loaded; epilogue: residual add, or per-sample partial sums for global pooling (the head).
- ``depthwise``: in ``triton_depthwise``.
- ``se_excite``: the SE's two FCs on the pooled sums -> sigmoid gate [N, C].
- ``conv``: kxk dense conv as an implicit GEMM (the stem with 3 input channels, Fused-MBConv's expand),
  optionally followed in the same kernel by the 1x1 project GEMM and the residual.
- ``expand_depthwise``: 1x1 expand + kxk depthwise in one kernel; the expanded tile with its halo
  goes through a per-program scratch slot that stays in L2, never the full expanded tensor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from effnet.kernels import triton_conv, triton_gemm, tune
from effnet.kernels.triton_common import ACT_CODES, _act, _p2, out_size  # noqa: F401  (ACT_CODES re-exported)
from effnet.kernels.triton_conv import bias_act  # noqa: F401  (re-exported: the engine's kernels come from here)


@triton.jit
def _pointwise_kernel(a_ptr, w_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, pool_ptr, pre_bias_ptr,
                      HW, M, K, N, blocks_per_sample,
                      ACT: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr, POOL: tl.constexpr,
                      STORE: tl.constexpr, PER_SAMPLE: tl.constexpr, PRE_ACT: tl.constexpr, PRE_BIAS: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if PER_SAMPLE:  # a tile never straddles two samples: the gate is one row, pooling one sum
        n = pid_m // blocks_per_sample
        pb = pid_m % blocks_per_sample
        local = pb * BM + tl.arange(0, BM)
        row_mask = local < HW
        rows = n.to(tl.int64) * HW + local
    else:
        rows = pid_m.to(tl.int64) * BM + tl.arange(0, BM)
        row_mask = rows < M
        if HAS_GATE:  # a tile may straddle two samples (BM <= HW): each row takes its own sample's gate
            n = (pid_m * BM) // HW
            first = (rows // HW) == n
            n2_ok = (n + 1) * HW < M
    cols = pid_n * BN + tl.arange(0, BN)
    col_mask = cols < N
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        k_mask = kk < K
        a = tl.load(a_ptr + rows[:, None] * K + kk[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        if PRE_ACT != 0:  # A is a pre-activation (a library conv's output): activate it as it is loaded
            af = a.to(tl.float32)
            if PRE_BIAS:  # ... after adding that conv's bias (the library's bias would be one more pass)
                af += tl.load(pre_bias_ptr + kk, mask=k_mask, other=0.0)[None, :]
            a = _act(af, PRE_ACT).to(a_ptr.dtype.element_ty)
        if HAS_GATE:
            g = tl.load(gate_ptr + n * K + kk, mask=k_mask, other=0.0)[None, :]
            if not PER_SAMPLE:
                g2 = tl.load(gate_ptr + (n + 1) * K + kk, mask=k_mask & n2_ok, other=0.0)
                g = tl.where(first[:, None], g, g2[None, :])
            a = (a.to(tl.float32) * g).to(a_ptr.dtype.element_ty)
        w = tl.load(w_ptr + kk[:, None] * N + cols[None, :], mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a, w, acc)
    y = _act(acc + tl.load(bias_ptr + cols, mask=col_mask, other=0.0)[None, :], ACT)
    mask = row_mask[:, None] & col_mask[None, :]
    if HAS_RES:
        y += tl.load(res_ptr + rows[:, None] * N + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if STORE:
        tl.store(out_ptr + rows[:, None] * N + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
    if POOL:
        s = tl.sum(tl.where(mask, y, 0.0), axis=0)
        tl.store(pool_ptr + pid_m * N + cols, s, mask=col_mask)


@triton.jit
def _se_kernel(pool_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, gate_ptr, NB, C, S, inv_hw,
               ACT: tl.constexpr, BNS: tl.constexpr, BC: tl.constexpr, BS: tl.constexpr):
    # Program (i, j): samples i*BNS.., gate channels j*BC..; every program redoes the (tiny) reduce FC, so
    # the grid is wide enough to hide latency even at batch 1.
    rn = tl.program_id(0) * BNS + tl.arange(0, BNS)
    n_mask = rn < NB
    rs = tl.arange(0, BS)
    s_mask = rs < S
    h = tl.zeros((BNS, BS), dtype=tl.float32)
    for c0 in range(0, C, BC):  # reduce FC on the pooled means, chunk by chunk of channels
        rc = c0 + tl.arange(0, BC)
        c_mask = rc < C
        pooled = tl.load(pool_ptr + rn[:, None] * C + rc[None, :], mask=n_mask[:, None] & c_mask[None, :], other=0.0)
        w1 = tl.load(w1_ptr + rs[None, :] * C + rc[:, None], mask=c_mask[:, None] & s_mask[None, :], other=0.0)
        h = tl.dot(pooled * inv_hw, w1, h)
    h = _act(h + tl.load(b1_ptr + rs, mask=s_mask, other=0.0)[None, :], ACT)
    rc = tl.program_id(1) * BC + tl.arange(0, BC)  # expand FC + sigmoid for this program's channels
    c_mask = rc < C
    w2 = tl.load(w2_ptr + rc[None, :] * S + rs[:, None], mask=s_mask[:, None] & c_mask[None, :], other=0.0)
    g = tl.dot(h, w2) + tl.load(b2_ptr + rc, mask=c_mask, other=0.0)[None, :]
    tl.store(gate_ptr + rn[:, None] * C + rc[None, :], tl.sigmoid(g), mask=n_mask[:, None] & c_mask[None, :])


@triton.jit
def _conv_kernel(x_ptr, w_ptr, b_ptr, w2_ptr, b2_ptr, res_ptr, out_ptr,
                 M, H, W, CI, OH, OW, CO, C2, pad_t, pad_l, n_owb,
                 KS: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, FLAT_K: tl.constexpr,  # 0 or C_in
                 HAS_PROJ: tl.constexpr, HAS_RES: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BN2: tl.constexpr):
    if FLAT_K:  # a program: BM pixels of one output row (image and row are scalars: no division per pixel)
        t = tl.program_id(0) // n_owb
        oh = t % OH
        img = t // OH
        ow = (tl.program_id(0) % n_owb) * BM + tl.arange(0, BM)
        r_mask = ow < OW
        rows = t.to(tl.int64) * OW + ow
    else:
        rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
        r_mask = rows < M
        img = rows // (OH * OW)
        p = rows % (OH * OW)
        oh = p // OW
        ow = p % OW
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    c_mask = cols < CO
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if FLAT_K:  # few input channels (the stem): K = (kh, kw, ci) flattened, gathered element by element
        KT: tl.constexpr = KS * KS * FLAT_K  # FLAT_K is the input channel count: a constant divisor here
        ih0 = oh * STRIDE - pad_t
        iw0 = ow * STRIDE - pad_l
        row_base = ((img.to(tl.int64) * H + ih0) * W + iw0) * FLAT_K  # per output pixel: its tap (0, 0)
        for k0 in tl.static_range(0, KT, BK):
            kk = k0 + tl.arange(0, BK)
            k_mask = kk < KT
            tap = kk // FLAT_K
            kh = tap // KS
            kw = tap % KS
            col_off = (kh * W + kw) * FLAT_K + kk % FLAT_K  # per K column: the tap's offset from tap (0, 0)
            ih = ih0[:, None] + kh[None, :]
            iw = iw0[:, None] + kw[None, :]
            ok = r_mask[:, None] & k_mask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(x_ptr + row_base[:, None] + col_off[None, :], mask=ok, other=0.0)
            w = tl.load(w_ptr + kk[:, None] * CO + cols[None, :], mask=k_mask[:, None] & c_mask[None, :], other=0.0)
            acc = tl.dot(a, w, acc)
    else:  # one tap at a time, channels in blocks of BK
        for kh in tl.static_range(KS):
            for kw in tl.static_range(KS):
                ih = oh * STRIDE - pad_t + kh
                iw = ow * STRIDE - pad_l + kw
                ok = r_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                base = ((img * H + ih) * W + iw) * CI
                for c0 in range(0, CI, BK):
                    ci = c0 + tl.arange(0, BK)
                    ci_mask = ci < CI
                    a = tl.load(x_ptr + base[:, None] + ci[None, :], mask=ok[:, None] & ci_mask[None, :], other=0.0)
                    w = tl.load(w_ptr + ((kh * KS + kw) * CI + ci)[:, None] * CO + cols[None, :],
                                mask=ci_mask[:, None] & c_mask[None, :], other=0.0)
                    acc = tl.dot(a, w, acc)
    y = _act(acc + tl.load(b_ptr + cols, mask=c_mask, other=0.0)[None, :], ACT)
    if HAS_PROJ:  # the whole expanded row is in this tile (BN >= CO): project it before it leaves the chip
        c2 = tl.arange(0, BN2)
        c2_mask = c2 < C2
        w2 = tl.load(w2_ptr + cols[:, None] * C2 + c2[None, :], mask=c_mask[:, None] & c2_mask[None, :], other=0.0)
        y2 = tl.dot(y.to(w2_ptr.dtype.element_ty), w2) + tl.load(b2_ptr + c2, mask=c2_mask, other=0.0)[None, :]
        mask = r_mask[:, None] & c2_mask[None, :]
        if HAS_RES:
            y2 += tl.load(res_ptr + rows[:, None] * C2 + c2[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + rows[:, None] * C2 + c2[None, :], y2.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        mask = r_mask[:, None] & c_mask[None, :]
        if HAS_RES:
            y += tl.load(res_ptr + rows[:, None] * CO + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + rows[:, None] * CO + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def pointwise(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, act: int, *, gate: torch.Tensor | None = None,
              residual: torch.Tensor | None = None, pool: bool = False, pre_act: int = 0,
              pre_bias: torch.Tensor | None = None) -> torch.Tensor:
    """1x1 conv on NHWC ``x`` [N, H, W, K] with weight ``w`` [K, C_out]; returns NHWC, or the per-sample
    channel sums [N, C_out] (float32) of the activated output when ``pool`` (output map not written).
    ``pre_act`` activates ``x`` as it is loaded (before the gate), after adding ``pre_bias`` [K] (float32)."""
    nb, h, wd, k = x.shape
    n_out, hw = w.shape[1], h * wd
    per_sample = gate is not None or pool
    key = (nb, hw, k, n_out, per_sample, gate is not None, residual is not None, pool, act, pre_act,
           pre_bias is not None)
    cands = tune.POINTWISE
    if gate is not None and not pool:  # tiles that straddle two samples (no rows wasted at a sample's end)
        cands = cands + [c for c in tune.POINTWISE_SPAN if c["BM"] <= hw]
    if not pool and not pre_act and triton_gemm.fits(x, w):  # operands through the TMA copy engine
        cands = cands + [c for c in tune.POINTWISE_TMA if gate is None or c["BM"] <= hw]
    cfg = tune.pick("pointwise", key, cands,
                    lambda c: _pointwise_launch(x, w, bias, act, gate, residual, pool, c, per_sample, pre_act, pre_bias),
                    clip={"BN": _p2(n_out), "BK": _p2(k)})
    return _pointwise_launch(x, w, bias, act, gate, residual, pool, cfg, per_sample, pre_act, pre_bias)


def _pointwise_launch(x, w, bias, act, gate, residual, pool, cfg, per_sample, pre_act, pre_bias=None):
    nb, h, wd, k = x.shape
    n_out, hw = w.shape[1], h * wd
    bm, bn, bk = cfg["BM"], min(cfg["BN"], _p2(n_out)), min(cfg["BK"], _p2(k))
    if cfg.get("TMA"):
        return triton_gemm.launch(x, w, bias, act, gate, residual, cfg, bn, bk)
    per_sample = pool or (gate is not None and not (cfg.get("SPAN") and bm <= hw))
    bps = triton.cdiv(hw, bm)
    grid_m = nb * bps if per_sample else triton.cdiv(nb * hw, bm)
    out = x.new_empty((nb, h, wd, n_out)) if not pool else x.new_empty(1)
    part = torch.empty((nb, bps, n_out), device=x.device, dtype=torch.float32) if pool else out
    _pointwise_kernel[(grid_m, triton.cdiv(n_out, bn))](
        x, w, bias, gate if gate is not None else bias, residual if residual is not None else x, out, part,
        pre_bias if pre_bias is not None else bias,
        hw, nb * hw, k, n_out, bps, ACT=act, HAS_GATE=gate is not None, HAS_RES=residual is not None,
        POOL=pool, STORE=not pool, PER_SAMPLE=per_sample, PRE_ACT=pre_act, PRE_BIAS=pre_bias is not None, BM=bm, BN=bn, BK=bk,
        num_warps=cfg["warps"], num_stages=cfg["stages"])
    return part.sum(1) if pool else out


def se_excite(pooled: torch.Tensor, hw: int, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
              b2: torch.Tensor, act: int) -> torch.Tensor:
    """Per-sample channel sums [N, C] -> SE gate [N, C] (float32): mean, reduce FC, act, expand FC, sigmoid."""
    nb, c = pooled.shape
    s = w1.shape[0]
    gate = torch.empty((nb, c), device=pooled.device, dtype=torch.float32)
    _se_kernel[(triton.cdiv(nb, 16), triton.cdiv(c, 64))](pooled, w1, b1, w2, b2, gate, nb, c, s, 1.0 / hw,
                                                          ACT=act, BNS=16, BC=64, BS=_p2(s), num_warps=4)
    return gate


def conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, kernel: int, stride: int,
         pads: tuple[int, int, int, int], act: int, *, proj: tuple[torch.Tensor, torch.Tensor] | None = None,
         residual: torch.Tensor | None = None) -> torch.Tensor:
    """Dense kxk conv on NHWC ``x``, weight [(kh, kw, ci), C_out]; with ``proj`` = (w2 [C_out, C2], b2) the
    activated result is projected by a 1x1 conv in the same kernel; ``residual`` is added last."""
    nb, h, wd, ci = x.shape
    co = w.shape[1]
    oh, ow = out_size(h, kernel, stride, pads[0], pads[1]), out_size(wd, kernel, stride, pads[2], pads[3])
    flat = ci < 16
    # few input channels (the stem): the unrolled kernel's flat K; the tap-loop kernel needs >= 16 per tap.
    # A project fused into the unrolled kernel holds the whole mid row in one tile: at most MAX_MID wide.
    tma = triton_conv.tma_fits(x, w, kernel, stride, pads, proj)
    cands = [c for c in tune.CONV if not ((c.get("TAPS") or c.get("TH")) and flat) and (tma or not c.get("TH"))
             and (flat or not c.get("FLAT"))
             and (c.get("TAPS") or c.get("TH") or proj is None or co <= MAX_MID)]
    if not cands:
        raise ValueError(f"no conv kernel for {ci} input channels with a {co}-wide project fused")
    key = (nb, h, wd, ci, co, kernel, stride, act, proj is not None, residual is not None)
    cfg = tune.pick("conv", key, cands,
                    lambda c_: _conv_launch(x, w, bias, kernel, stride, pads, act, proj, residual, oh, ow, flat, c_),
                    clip={"BN": _p2(co), "BK": _p2(kernel * kernel * ci if flat else ci)})
    return _conv_launch(x, w, bias, kernel, stride, pads, act, proj, residual, oh, ow, flat, cfg)


MAX_MID = 256


def _conv_launch(x, w, bias, kernel, stride, pads, act, proj, residual, oh, ow, flat, cfg):
    nb, h, wd, ci = x.shape
    co = w.shape[1]
    c2 = proj[0].shape[1] if proj is not None else co
    out = x.new_empty((nb, oh, ow, c2))
    if cfg.get("TH"):
        return triton_conv.launch_tma(x, w, bias, kernel, pads, act, proj, residual, oh, ow, cfg,
                                      min(cfg["BN"], _p2(co)), min(cfg["BK"], _p2(ci)), _p2(c2), out)
    if cfg.get("TAPS"):
        return triton_conv.launch(x, w, bias, kernel, stride, pads, act, proj, residual, oh, ow, cfg,
                                  min(cfg["BN"], _p2(co)), min(cfg["BK"], _p2(ci)), _p2(c2), out)
    bn = _p2(co) if proj is not None else min(cfg["BN"], _p2(co))
    bk = min(cfg["BK"], _p2(kernel * kernel * ci if flat else ci))
    m = nb * oh * ow
    n_owb = triton.cdiv(ow, cfg["BM"])
    grid_m = nb * oh * n_owb if flat else triton.cdiv(m, cfg["BM"])
    _conv_kernel[(grid_m, 1 if proj is not None else triton.cdiv(co, bn))](
        x, w, bias, proj[0] if proj else w, proj[1] if proj else bias, residual if residual is not None else x, out,
        m, h, wd, ci, oh, ow, co, c2, pads[0], pads[2], n_owb, KS=kernel, STRIDE=stride, ACT=act, FLAT_K=ci if flat else 0,
        HAS_PROJ=proj is not None, HAS_RES=residual is not None, BM=cfg["BM"], BN=bn, BK=bk, BN2=_p2(c2),
        num_warps=cfg["warps"], num_stages=cfg["stages"])
    return out
