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

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

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


@triton.jit
def _conv_tma_kernel(x_desc, w_desc, b_ptr, w2_desc, b2_ptr, res_desc, out_desc, CO, C2, pad, tiles_h, tiles_w,
                     CI: tl.constexpr, KS: tl.constexpr, ACT: tl.constexpr, HAS_PROJ: tl.constexpr,
                     HAS_RES: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     BN2: tl.constexpr):
    # A program: a TH x TW tile of output pixels of one image.  Each tap's input is one TMA box [1, TH, TW, BK]
    # of the NHWC input shifted by the tap: the copy engine zero-fills what lies outside the image (the
    # padding) and past the channel count, so there is no address or mask arithmetic per element.
    BM: tl.constexpr = TH * TW
    pid = tl.program_id(0)
    ow0 = (pid % tiles_w) * TW
    oh0 = ((pid // tiles_w) % tiles_h) * TH
    n = pid // (tiles_w * tiles_h)
    if HAS_PROJ:
        n_lo = 0
        n_hi = CO
    else:
        n_lo = tl.program_id(1) * BN
        n_hi = n_lo + BN
    c2 = tl.arange(0, BN2)
    acc2 = tl.zeros((BM, BN2), dtype=tl.float32)
    for n0 in range(n_lo, n_hi, BN):
        cols = n0 + tl.arange(0, BN)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for t in range(KS * KS):
            kh = t // KS
            kw = t % KS
            for c0 in tl.static_range(0, CI, BK):  # channels past CI: zeros in A (the rows of w they meet: any)
                a = x_desc.load([n, oh0 + kh - pad, ow0 + kw - pad, c0]).reshape(BM, BK)
                acc = tl.dot(a, w_desc.load([t * CI + c0, n0]), acc)
        y = _act(acc + tl.load(b_ptr + cols, mask=cols < CO, other=0.0)[None, :], ACT)  # 0 past CO
        if HAS_PROJ:
            acc2 = tl.dot(y.to(w2_desc.dtype), w2_desc.load([n0, 0]), acc2)
        else:
            if HAS_RES:
                y += res_desc.load([n, oh0, ow0, n0]).reshape(BM, BN).to(tl.float32)
            out_desc.store([n, oh0, ow0, n0], y.to(out_desc.dtype).reshape(1, TH, TW, BN))
    if HAS_PROJ:
        y2 = acc2 + tl.load(b2_ptr + c2, mask=c2 < C2, other=0.0)[None, :]
        if HAS_RES:
            y2 += res_desc.load([n, oh0, ow0, 0]).reshape(BM, BN2).to(tl.float32)
        out_desc.store([n, oh0, ow0, 0], y2.to(out_desc.dtype).reshape(1, TH, TW, BN2))


def tma_fits(x, w, kernel, stride, pads, proj) -> bool:
    """Can the TMA kernel run this conv?  Stride 1, symmetric padding, 16-byte aligned rows (channel counts
    multiples of 8 in bf16/fp16)."""
    align = 16 // x.element_size()
    widths = [x.shape[3], w.shape[1]] + ([proj[0].shape[1]] if proj is not None else [])
    return (stride == 1 and len(set(pads)) == 1 and pads[0] == (kernel - 1) // 2 and x.element_size() == 2
            and all(c % align == 0 for c in widths))


def launch_tma(x, w, bias, kernel, pads, act, proj, residual, oh, ow, cfg, bn, bk, bn2, out):
    """``triton_ops.conv``'s launch for a ``TMA`` config (``tma_fits``; tile sizes clipped to the shape)."""
    nb, ci = x.shape[0], x.shape[3]
    co = w.shape[1]
    th, tw = cfg["TH"], cfg["TW"]
    oc = out.shape[3]
    bo = bn2 if proj is not None else bn

    def nhwc(t, block_c):
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, th, tw, block_c])

    tiles_h, tiles_w = triton.cdiv(oh, th), triton.cdiv(ow, tw)
    w2 = proj[0] if proj is not None else w
    _conv_tma_kernel[(nb * tiles_h * tiles_w, 1 if proj is not None else triton.cdiv(co, bn))](
        nhwc(x, bk), TensorDescriptor(w, list(w.shape), list(w.stride()), [bk, bn]), bias,
        TensorDescriptor(w2, list(w2.shape), list(w2.stride()), [bn, bn2]), proj[1] if proj else bias,
        nhwc(residual if residual is not None else out, bo), nhwc(out, bo), co, oc, pads[0], tiles_h, tiles_w,
        CI=ci, KS=kernel, ACT=act, HAS_PROJ=proj is not None, HAS_RES=residual is not None, TH=th, TW=tw,
        BN=bn, BK=bk, BN2=bn2, num_warps=cfg["warps"], num_stages=cfg["stages"])
    return out


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


@triton.jit
def _bias_act_kernel(h_ptr, b_ptr, res_ptr, out_ptr, total, C, ACT: tl.constexpr, HAS_RES: tl.constexpr,
                     BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < total
    y = _act(tl.load(h_ptr + i, mask=m, other=0.0).to(tl.float32) + tl.load(b_ptr + i % C, mask=m, other=0.0), ACT)
    if HAS_RES:
        y += tl.load(res_ptr + i, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + i, y.to(out_ptr.dtype.element_ty), mask=m)


def bias_act(h, bias, act, residual=None):
    """act(h + bias) [+ residual] in one pass over NHWC ``h`` (a library conv's output, its bias left out):
    the library path of a Fused-MBConv without a project (torch would take three passes)."""
    out = torch.empty_like(h)
    total, block = h.numel(), 4096
    _bias_act_kernel[(triton.cdiv(total, block),)](h, bias, residual if residual is not None else h, out, total,
                                                   h.shape[-1], ACT=act, HAS_RES=residual is not None, BLOCK=block,
                                                   num_warps=8)
    return out
