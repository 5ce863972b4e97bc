"""The 1x1 conv GEMM with its operands fetched by the TMA copy engine (Hopper and later).

``triton_ops.pointwise`` loads A and W through pointers (per-element addresses and masks, cp.async on
Hopper); here each [BM, BK] / [BK, BN] tile is one bulk copy, out-of-range rows and columns zero-filled
by the copy engine.  Same epilogue (bias, activation, residual) and the same SE-gate prologue, for tiles
that may straddle two samples (each row scaled by its own sample's gate).  No pooling and no pre-activation
prologue: those stay in ``triton_ops``.  A per-shape candidate of the tuner (``tune.POINTWISE_TMA``), one tile
per program or (``PERSIST`` = programs per SM) a persistent grid with the tile and K loops as one pipeline.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from effnet.kernels.triton_common import _act
from effnet.kernels.tune import interpreting


@triton.jit
def _grouped(tile, n_m, n_n, GROUP: tl.constexpr):
    """(row block, column block) of ``tile`` in grouped order: GROUP row blocks share each column block's W
    tiles in L2."""
    per_group = GROUP * n_n
    first_m = (tile // per_group) * GROUP
    size = tl.minimum(n_m - first_m, GROUP)
    return first_m + (tile % per_group) % size, (tile % per_group) // size


@triton.jit
def _tile_acc(a_desc, w_desc, gate_ptr, pid_m, pid_n, HW, M, K,
              HAS_GATE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """A [BM, BN] float32 tile of A @ W, A's rows scaled by their sample's SE gate as they are loaded."""
    if HAS_GATE:  # BM <= HW: the tile's rows belong to sample s or s + 1
        rows = pid_m.to(tl.int64) * BM + tl.arange(0, BM)
        s = (pid_m * BM) // HW
        first = (rows // HW) == s
        s2_ok = (s + 1) * HW < M
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        a = a_desc.load([pid_m * BM, k0])
        if HAS_GATE:
            kk = k0 + tl.arange(0, BK)
            g = tl.load(gate_ptr + s * K + kk, mask=kk < K, other=0.0)
            g2 = tl.load(gate_ptr + (s + 1) * K + kk, mask=(kk < K) & s2_ok, other=0.0)
            a = (a.to(tl.float32) * tl.where(first[:, None], g[None, :], g2[None, :])).to(a_desc.dtype)
        acc = tl.dot(a, w_desc.load([k0, pid_n * BN]), acc)
    return acc


@triton.jit
def _gemm_tma_kernel(a_desc, w_desc, bias_ptr, gate_ptr, res_ptr, out_ptr, HW, M, K, N,
                     ACT: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    pid_m, pid_n = _grouped(tl.program_id(0), tl.cdiv(M, BM), tl.cdiv(N, BN), GROUP)
    acc = _tile_acc(a_desc, w_desc, gate_ptr, pid_m, pid_n, HW, M, K, HAS_GATE, BM, BN, BK)
    rows = pid_m.to(tl.int64) * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    y = _act(acc + tl.load(bias_ptr + cols, mask=cols < N, other=0.0)[None, :], ACT)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    if HAS_RES:
        y += tl.load(res_ptr + rows[:, None] * N + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_tma_persistent_kernel(a_desc, w_desc, bias_ptr, gate_ptr, res_desc, out_desc, HW, M, K, N, PROGRAMS,
                                ACT: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
                                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    # A fixed grid walks the tiles (grouped order); the tile and K loops are flattened into one software
    # pipeline, so the next tile's first loads are in flight while this tile's epilogue runs.  Residual in
    # and output out through TMA boxes as well (clipped at the edges by the copy engine).
    n_m = tl.cdiv(M, BM)
    n_n = tl.cdiv(N, BN)
    for tile in tl.range(tl.program_id(0), n_m * n_n, PROGRAMS, flatten=True):
        pid_m, pid_n = _grouped(tile, n_m, n_n, GROUP)
        acc = _tile_acc(a_desc, w_desc, gate_ptr, pid_m, pid_n, HW, M, K, HAS_GATE, BM, BN, BK)
        cols = pid_n * BN + tl.arange(0, BN)
        y = _act(acc + tl.load(bias_ptr + cols, mask=cols < N, other=0.0)[None, :], ACT)
        if HAS_RES:
            y += res_desc.load([pid_m * BM, pid_n * BN]).to(tl.float32)
        out_desc.store([pid_m * BM, pid_n * BN], y.to(out_desc.dtype))


def fits(x, w) -> bool:
    """16-byte aligned rows for the copy engine: K and N multiples of 8 in bf16/fp16."""
    return x.element_size() == 2 and x.shape[3] % 8 == 0 and w.shape[1] % 8 == 0


def _sms(device) -> int:
    if interpreting():
        return 2
    return torch.cuda.get_device_properties(device).multi_processor_count


def launch(x, w, bias, act, gate, residual, cfg, bn, bk):
    """``triton_ops.pointwise``'s launch for a ``TMA`` config (``fits``; with a gate, BM <= H*W)."""
    nb, h, wd, k = x.shape
    n, m, bm = w.shape[1], nb * h * wd, cfg["BM"]
    a = x.view(m, k)
    out = x.new_empty((nb, h, wd, n))
    if cfg.get("PERSIST"):
        tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
        programs = min(tiles, cfg["PERSIST"] * _sms(x.device))
        res = residual.view(m, n) if residual is not None else out.view(m, n)
        _gemm_tma_persistent_kernel[(programs,)](
            TensorDescriptor(a, [m, k], [k, 1], [bm, bk]), TensorDescriptor(w, list(w.shape), list(w.stride()), [bk, bn]),
            bias, gate if gate is not None else bias, TensorDescriptor(res, [m, n], [n, 1], [bm, bn]),
            TensorDescriptor(out.view(m, n), [m, n], [n, 1], [bm, bn]), h * wd, m, k, n, programs,
            ACT=act, HAS_GATE=gate is not None, HAS_RES=residual is not None, BM=bm, BN=bn, BK=bk, GROUP=cfg["GROUP"],
            num_warps=cfg["warps"], num_stages=cfg["stages"])
        return out
    _gemm_tma_kernel[(triton.cdiv(m, bm) * triton.cdiv(n, bn),)](
        TensorDescriptor(a, [m, k], [k, 1], [bm, bk]), TensorDescriptor(w, list(w.shape), list(w.stride()), [bk, bn]),
        bias, gate if gate is not None else bias, residual if residual is not None else x, out, h * wd, m, k, n,
        ACT=act, HAS_GATE=gate is not None, HAS_RES=residual is not None, BM=bm, BN=bn, BK=bk, GROUP=cfg["GROUP"],
        num_warps=cfg["warps"], num_stages=cfg["stages"])
    return out
