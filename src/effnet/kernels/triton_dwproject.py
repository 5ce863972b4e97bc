"""Depthwise kxk conv computed in the prologue of the 1x1 project GEMM: the depthwise output never exists.

MBConv's depthwise output D (mid channels x the output map) is otherwise written to memory by the
depthwise kernel and read back by the project GEMM.  Here a program owns BM output pixels x BN project
channels; for each chunk of BK mid channels it builds the GEMM's A tile [BM, BK] itself, as the depthwise
conv of the expanded tensor E (k*k shifted, masked loads of E, float32 multiply-adds with the folded
depthwise weights), + the depthwise bias, the activation and (SE blocks) the SE gate, and feeds it to
``tl.dot`` in the tensor's dtype; the epilogue adds the project bias and the residual.  What reaches
memory is E (read once from DRAM; its taps and halo come from L1/L2), the project weights and the output.

Pixel tiles run over the whole batch (a tile may span two images; the SE gate is gathered per pixel),
so 7x7 maps waste no lanes.  When the project width needs more than one BN tile the depthwise chunk is
recomputed per tile; the N tiles of one pixel tile are neighbours in the launch order, so their E reads
hit L2.  For an SE block the gate needs D's global pool first: ``triton_depthwise.depthwise(...,
store=False)`` is that pass (E read, only the per-sample sums written), then the SE FCs, then this kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from effnet.kernels import tune
from effnet.kernels.triton_common import _act, _p2, out_size
from effnet.kernels.triton_depthwise import WEIGHT_ALIGN, _dw_row
from effnet.kernels.tune import config


@triton.jit
def _dw_project_kernel(e_ptr, wd_ptr, bd_ptr, gate_ptr, wp_ptr, bp_ptr, res_ptr, out_ptr,
                       M, H, W, C, WS, OH, OW, N, pad_t, pad_l, n_nb,
                       KS: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, HAS_GATE: tl.constexpr,
                       HAS_RES: tl.constexpr, EVEN_K: tl.constexpr, RL: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    pid_n = pid % n_nb  # N tiles fastest: programs that recompute the same depthwise tile run side by side
    pid_m = pid // n_nb
    r = pid_m * BM + tl.arange(0, BM)  # output pixels, flattened over the batch
    p_mask = r < M
    ohw = OH * OW
    img = r // ohw
    pp = r % ohw
    oh = pp // OW
    ow = pp % OW
    ih0 = oh * STRIDE - pad_t
    iw0 = ow * STRIDE - pad_l
    tap0 = ((img.to(tl.int64) * H + ih0) * W + iw0) * C  # per pixel: E offset of its tap (0, 0), channel 0
    rk = tl.arange(0, BK)
    cols = pid_n * BN + tl.arange(0, BN)
    col_mask = cols < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, C, BK):
        kk = k0 + rk
        k_mask = kk < C
        e_tile = e_ptr + tap0[:, None] + kk[None, :]
        d = tl.zeros((BM, BK), dtype=tl.float32)
        if RL:  # kernel rows as a loop: at k5 all 25 taps unrolled hold too many loads in flight (spills)
            for kh in range(KS):
                d = _dw_row(d, e_tile, wd_ptr, kk, k_mask, p_mask, ih0 + kh, iw0, kh, H, W, C, WS, KS, EVEN_K)
        else:
            for kh in tl.static_range(KS):
                d = _dw_row(d, e_tile, wd_ptr, kk, k_mask, p_mask, ih0 + kh, iw0, kh, H, W, C, WS, KS, EVEN_K)
        # channels >= C: zero input, zero bias, and act(0) = 0 for every activation; their project rows are 0
        d = _act(d + tl.load(bd_ptr + kk, mask=k_mask, other=0.0)[None, :], ACT)
        if HAS_GATE:
            d *= tl.load(gate_ptr + img[:, None] * C + kk[None, :], mask=p_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(wp_ptr + kk[:, None] * N + cols[None, :], mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        # The sum over a size-1 axis is a no-op that keeps Triton from hoisting the dot operand's layout
        # conversion above the depthwise arithmetic: without it every tap's E tile and weight tile went
        # through shared memory (STS / LDSM / barrier per tap; ptxas sm_90: 810 instructions per chunk
        # at BM 64 x BK 32, 4 warps, against 597 with it, for the chunk's 144 FMAs per thread).
        a = tl.sum(tl.reshape(d, (BM, BK, 1)), axis=2)
        acc = tl.dot(a.to(wp_ptr.dtype.element_ty), w, acc)
    y = acc + tl.load(bp_ptr + cols, mask=col_mask, other=0.0)[None, :]
    mask = p_mask[:, None] & col_mask[None, :]
    offs = r.to(tl.int64)[:, None] * N + cols[None, :]
    if HAS_RES:
        y += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


# Candidates, best guess first.  BN is not a choice: the project width rounded up to a power of two, capped
# where the accumulator would pass 64 float32 registers per thread (BM * BN <= 2048 * warps), and at 128 with
# 4 warps (BM 32 x BN 256 x BK 64 at 4 warps spilled 140 bytes; 64 x 256 x 64 at 8 warps did not).
# Instructions per depthwise multiply-add in the chunk loop (ptxas sm_90, k3, relu6, C % BK == 0): BM 64 x BK 32,
# 4 warps 4.15 (106 registers, Triton 3.8); 128 x 32, 8 warps 4.09 (120); 32 x 64, 4 warps 4.33 (96); 128 x 16,
# 4 warps 4.14 (122); 64 x 64, 8 warps 3.95.  (128 x 32 at 4 warps, 3.91, spilled 4-132 bytes on 6 of
# MobileNetV2's and B0's shapes with Triton 3.6; the others none.)  stages=2 pipelines the E loads through shared memory (cp.async): 22% more
# instructions, more latency hidden.  k5 runs its kernel rows as a loop (``RL``): unrolled, its 25 taps spilled
# 76-156 bytes at 255 registers (Triton 3.6); as a loop 142-227 registers, no spills.  Not yet timed on a GPU.
CANDIDATES = [config(BM=64, BK=32, warps=4, stages=1), config(BM=128, BK=32, warps=8, stages=1),
              config(BM=32, BK=64, warps=4, stages=1), config(BM=128, BK=16, warps=4, stages=1),
              config(BM=64, BK=64, warps=8, stages=1), config(BM=64, BK=32, warps=4, stages=2)]


def block_n(n_out: int, cfg: dict) -> int:
    """BN for a project width: all of it in one tile where the accumulator fits (<= 256), else the cap."""
    cap = max(16, min(256 if cfg["warps"] >= 8 else 128, 2048 * cfg["warps"] // cfg["BM"]))
    return min(_p2(n_out), triton.next_power_of_2(cap + 1) // 2)


def dw_project(e: torch.Tensor, wd: torch.Tensor, bd: torch.Tensor, wp: torch.Tensor, bp: torch.Tensor,
               kernel: int, stride: int, pads: tuple[int, int, int, int], act: int, *,
               gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """project(gate * act(depthwise(e) + bd)) + bp (+ residual) on NHWC ``e`` [N, H, W, C]: depthwise weights
    ``wd`` [k*k, C] padded by ``triton_depthwise.pad_weights`` (float32), bias ``bd`` [C] (float32); project
    weight ``wp`` [C, C_out] (the tensor's dtype), bias ``bp`` [C_out] (float32); ``gate`` [N, C] (float32);
    ``pads`` = (top, bottom, left, right).  Returns NHWC [N, OH, OW, C_out]."""
    nb, h, w, c = e.shape
    key = (nb, h, w, c, wp.shape[1], kernel, stride, act, gate is not None, residual is not None)
    cfg = tune.pick("dw_project", key, CANDIDATES,
                    lambda c_: _launch(e, wd, bd, wp, bp, kernel, stride, pads, act, gate, residual, c_),
                    clip={"BK": _p2(c)})
    return _launch(e, wd, bd, wp, bp, kernel, stride, pads, act, gate, residual, cfg)


def _launch(e, wd, bd, wp, bp, kernel, stride, pads, act, gate, residual, cfg):
    nb, h, w, c = e.shape
    assert wd.shape[1] % WEIGHT_ALIGN == 0 and wd.shape[1] >= c, "depthwise weights not padded: use pad_weights"
    n_out = wp.shape[1]
    oh, ow = out_size(h, kernel, stride, pads[0], pads[1]), out_size(w, kernel, stride, pads[2], pads[3])
    bm, bk, bn = cfg["BM"], cfg["BK"], block_n(n_out, cfg)
    m = nb * oh * ow
    assert m < 2**31, "pixel indices are int32"
    out = e.new_empty((nb, oh, ow, n_out))
    n_nb = triton.cdiv(n_out, bn)
    _dw_project_kernel[(triton.cdiv(m, bm) * n_nb,)](
        e, wd, bd, gate if gate is not None else bd, wp, bp, residual if residual is not None else out, out,
        m, h, w, c, wd.shape[1], oh, ow, n_out, pads[0], pads[2], n_nb,
        KS=kernel, STRIDE=stride, ACT=act, HAS_GATE=gate is not None, HAS_RES=residual is not None,
        EVEN_K=c % bk == 0, RL=cfg.get("RL", int(kernel >= 5)), BM=bm, BN=bn, BK=bk, num_warps=cfg["warps"],
        num_stages=cfg["stages"])
    return out
