"""Dense kxk conv as a pipelined implicit GEMM, for Fused-MBConv: the taps are a loop, the 1x1 project in chunks.

``triton_ops._conv_kernel`` unrolls its taps (``static_range``) around a one- or two-step channel loop, so
Triton's software pipeline (``num_stages``) has almost nothing to overlap, and with the 1x1 project fused
it holds the whole expanded row in one tile (mid channels padded to a power of two: 192 -> 256).  Here:

- the taps are the pipelined loop (each tap's input channels are a few unrolled BK steps, and every step's
  address is the pixel's tap-(0, 0) pointer plus a scalar offset), so the next tap's loads are in flight
  while the current one multiplies;
- with the project fused, the mid channels go in chunks of BN: each chunk is convolved, biased, activated
  and multiplied into the project accumulator [BM, C2] before the next, so no mid width is padded past a
  chunk and any mid width fits (the input tile is re-read from L1/L2 once per chunk).

Which kernel and tile a layer shape runs with is the tuner's choice (``tune.CONV``: configs with ``TAPS``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from effnet.kernels.triton_common import _act


@triton.jit
def _conv_taps_kernel(x_ptr, w_ptr, b_ptr, w2_ptr, b2_ptr, res_ptr, out_ptr,
                      M, H, W, OH, OW, CO, C2, pad_t, pad_l,
                      CI: tl.constexpr, KS: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr,
                      HAS_PROJ: tl.constexpr, HAS_RES: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BN2: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    r_mask = rows < M
    img = rows // (OH * OW)
    p = rows % (OH * OW)
    ih0 = (p // OW) * STRIDE - pad_t
    iw0 = (p % OW) * STRIDE - pad_l
    base = x_ptr + ((img * H + ih0) * W + iw0) * CI  # per output pixel: its tap (0, 0)
    rk = tl.arange(0, BK)
    if HAS_PROJ:  # every mid chunk, projected as it is finished
        n_lo = 0
        n_hi = CO
    else:  # one chunk per program (grid axis 1)
        n_lo = tl.program_id(1) * BN
        n_hi = n_lo + BN
    c2 = tl.arange(0, BN2)
    c2_mask = c2 < C2
    acc2 = tl.zeros((BM, BN2), dtype=tl.float32)
    for n0 in range(n_lo, n_hi, BN):
        cols = n0 + tl.arange(0, BN)
        c_mask = cols < CO
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for t in range(KS * KS):  # the pipelined loop
            kh = t // KS
            kw = t % KS
            ih = ih0 + kh
            iw = iw0 + kw
            ok = r_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            tap = base + (kh * W + kw) * CI
            for c0 in tl.static_range(0, CI, BK):
                ci = c0 + rk
                ci_mask = ci < CI
                a = tl.load(tap[:, None] + ci[None, :], mask=ok[:, None] & ci_mask[None, :], other=0.0)
                w = tl.load(w_ptr + (t * CI + ci)[:, None] * CO + cols[None, :],
                            mask=ci_mask[:, None] & c_mask[None, :], other=0.0)
                acc = tl.dot(a, w, acc)
        y = _act(acc + tl.load(b_ptr + cols, mask=c_mask, other=0.0)[None, :], ACT)
        if HAS_PROJ:
            w2 = tl.load(w2_ptr + cols[:, None] * C2 + c2[None, :], mask=c_mask[:, None] & c2_mask[None, :], other=0.0)
            acc2 = tl.dot(y.to(w2_ptr.dtype.element_ty), w2, acc2)
        else:
            mask = r_mask[:, None] & c_mask[None, :]
            if HAS_RES:
                y += tl.load(res_ptr + rows[:, None] * CO + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptr + rows[:, None] * CO + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
    if HAS_PROJ:
        y2 = acc2 + tl.load(b2_ptr + c2, mask=c2_mask, other=0.0)[None, :]
        mask = r_mask[:, None] & c2_mask[None, :]
        if HAS_RES:
            y2 += tl.load(res_ptr + rows[:, None] * C2 + c2[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + rows[:, None] * C2 + c2[None, :], y2.to(out_ptr.dtype.element_ty), mask=mask)


def launch(x, w, bias, kernel, stride, pads, act, proj, residual, oh, ow, cfg, bn, bk, bn2, out):
    """``triton_ops.conv``'s launch for a ``TAPS`` config (tile sizes already clipped to the shape)."""
    nb, h, wd, ci = x.shape
    co = w.shape[1]
    c2 = proj[0].shape[1] if proj is not None else co
    m = nb * oh * ow
    _conv_taps_kernel[(triton.cdiv(m, cfg["BM"]), 1 if proj is not None else triton.cdiv(co, bn))](
        x, w, bias, proj[0] if proj else w, proj[1] if proj else bias, residual if residual is not None else x, out,
        m, h, wd, oh, ow, co, c2, pads[0], pads[2], CI=ci, KS=kernel, STRIDE=stride, ACT=act,
        HAS_PROJ=proj is not None, HAS_RES=residual is not None, BM=cfg["BM"], BN=bn, BK=bk, BN2=bn2,
        num_warps=cfg["warps"], num_stages=cfg["stages"])
    return out
