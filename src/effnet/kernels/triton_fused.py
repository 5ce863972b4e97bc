"""Expand 1x1 + depthwise kxk in one Triton kernel, for stride-1 MBConv.

The expanded tensor is the largest of the block (``expand_ratio`` times the input), and here it never
goes to device memory.  A persistent grid of a few programs per SM walks the output tiles; for each
tile a program computes the expanded tile *with its halo* (a GEMM of the input halo pixels against the
expand weights, + bias + act; pixels outside the image are the depthwise's zero padding), parks it in
its own scratch slot, and reads the slot back shifted once per depthwise tap.  Triton exposes no
shared-memory indexing, so the slot lives in global memory; there are only grid-size slots (a few MB),
rewritten every tile, so they stay in L2 and the bytes that reach HBM are the input, the output and
the SE squeeze partial sums.  Cost: the halo's expand GEMM is recomputed ((TH+k-1)(TW+k-1)/(TH*TW)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from effnet.kernels import tune
from effnet.kernels.triton_common import _act, _p2
from effnet.kernels.triton_depthwise import WEIGHT_ALIGN
from effnet.kernels.tune import config, interpreting


@triton.jit
def _expand_dw_kernel(x_ptr, we_ptr, be_ptr, wd_ptr, bd_ptr, out_ptr, pool_ptr, scratch_ptr,
                      H, W, CI, C, WS, pad, tiles_h, tiles_w, n_cb, n_tiles,
                      KS: tl.constexpr, ACT: tl.constexpr, SQUEEZE: tl.constexpr,
                      TH: tl.constexpr, TW: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
                      BC: tl.constexpr, BK: tl.constexpr):
    HTW: tl.constexpr = TW + KS - 1
    hp = tl.arange(0, HP)  # halo pixels of the tile, row-major over (TH + k - 1) x (TW + k - 1)
    hh = hp // HTW
    hw = hp % HTW
    h_in = hp < (TH + KS - 1) * HTW
    op = tl.arange(0, OP)  # output pixels of the tile, row-major over TH x TW
    ol_h = op // TW
    ol_w = op % TW
    o_in = op < TH * TW
    rc = tl.arange(0, BC)
    rk = tl.arange(0, BK)
    slot = scratch_ptr + tl.program_id(0).to(tl.int64) * HP * BC
    for t in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        cb = t % n_cb  # channel blocks innermost: neighbouring programs share the input halo in L2
        sp = t // n_cb
        tw_i = sp % tiles_w
        th_i = (sp // tiles_w) % tiles_h
        n = sp // (tiles_w * tiles_h)
        c = cb * BC + rc
        c_mask = c < C
        ih = th_i * TH - pad + hh
        iw = tw_i * TW - pad + hw
        valid = h_in & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_rows = x_ptr + ((n.to(tl.int64) * H + ih) * W + iw) * CI
        acc = tl.zeros((HP, BC), dtype=tl.float32)
        for k0 in range(0, CI, BK):
            kk = k0 + rk
            k_mask = kk < CI
            a = tl.load(x_rows[:, None] + kk[None, :], mask=valid[:, None] & k_mask[None, :], other=0.0)
            w = tl.load(we_ptr + kk[:, None] * C + c[None, :], mask=k_mask[:, None] & c_mask[None, :], other=0.0)
            acc = tl.dot(a, w, acc)
        e = _act(acc + tl.load(be_ptr + c, mask=c_mask, other=0.0)[None, :], ACT)
        e = tl.where(valid[:, None], e, 0.0)  # outside the image: the depthwise's zero padding
        tl.debug_barrier()  # the previous tile's taps have all read the slot
        tl.store(slot + hp[:, None] * BC + rc[None, :], e.to(out_ptr.dtype.element_ty))
        tl.debug_barrier()  # the whole halo tile is in the slot before any tap reads it
        acc2 = tl.zeros((OP, BC), dtype=tl.float32)
        for kh in tl.static_range(KS):
            for kw in tl.static_range(KS):
                v = tl.load(slot + ((ol_h + kh) * HTW + ol_w + kw)[:, None] * BC + rc[None, :],
                            mask=o_in[:, None], other=0.0)
                # weights padded to WS columns, loaded as a broadcast tile (no layout conversion per tap)
                wd = tl.load(tl.broadcast_to((wd_ptr + (kh * KS + kw) * WS + c)[None, :], (OP, BC)))
                acc2 += v.to(tl.float32) * wd
        y = _act(acc2 + tl.load(bd_ptr + c, mask=c_mask, other=0.0)[None, :], ACT)
        oh = th_i * TH + ol_h
        ow = tw_i * TW + ol_w
        o_mask = o_in & (oh < H) & (ow < W)
        mask = o_mask[:, None] & c_mask[None, :]
        tl.store(out_ptr + ((n.to(tl.int64) * H + oh) * W + ow)[:, None] * C + c[None, :],
                 y.to(out_ptr.dtype.element_ty), mask=mask)
        if SQUEEZE:
            tl.atomic_add(pool_ptr + n * C + c, tl.sum(tl.where(mask, y, 0.0), axis=0), mask=c_mask)


# Output tile (TH, TW): 14x14 (k3) and 12x12 (k5) make a 16x16 = 256-pixel halo tile; 7x7 fits 7x7 maps.
CANDIDATES = {
    3: [config(TH=14, TW=14, BC=32, BK=32, warps=8, stages=2), config(TH=6, TW=6, BC=64, BK=32, warps=4, stages=2),
        config(TH=7, TW=7, BC=64, BK=32, warps=4, stages=2)],
    5: [config(TH=12, TW=12, BC=32, BK=32, warps=8, stages=2), config(TH=4, TW=4, BC=64, BK=32, warps=4, stages=2),
        config(TH=7, TW=7, BC=64, BK=32, warps=4, stages=2)],
}
PROGRAMS_PER_SM = 4


def expand_depthwise(x: torch.Tensor, we: torch.Tensor, be: torch.Tensor, wd: torch.Tensor, bd: torch.Tensor,
                     kernel: int, pads: tuple[int, int, int, int], act: int,
                     squeeze: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stride-1 expand (``we`` [C_in, C]) + depthwise (``wd`` [k*k, C], padded with ``triton_depthwise.pad_weights``)
    on NHWC ``x``; returns the depthwise
    output [N, H, W, C] and, when ``squeeze``, its per-sample channel sums [N, C] (float32)."""
    assert len(set(pads)) == 1 and pads[0] == (kernel - 1) // 2, pads  # stride 1, odd k: symmetric
    h, w, ci = x.shape[1:]
    c = we.shape[1]
    cands = CANDIDATES.get(kernel, CANDIDATES[3])
    cfg = tune.pick("expand_dw", (x.shape[0], h, w, ci, c, kernel, act, squeeze), cands,
                    lambda c_: _launch(x, we, be, wd, bd, kernel, act, squeeze, c_),
                    clip={"BC": _p2(c), "BK": _p2(ci)})
    return _launch(x, we, be, wd, bd, kernel, act, squeeze, cfg)


def _launch(x, we, be, wd, bd, kernel, act, squeeze, cfg):
    nb, h, w, ci = x.shape
    assert wd.shape[1] % WEIGHT_ALIGN == 0 and wd.shape[1] >= we.shape[1], "depthwise weights not padded"
    c = we.shape[1]
    th, tw, bc = cfg["TH"], cfg["TW"], cfg["BC"]
    tiles_h, tiles_w, n_cb = triton.cdiv(h, th), triton.cdiv(w, tw), triton.cdiv(c, bc)
    n_tiles = nb * tiles_h * tiles_w * n_cb
    hp, op = triton.next_power_of_2((th + kernel - 1) * (tw + kernel - 1)), triton.next_power_of_2(th * tw)
    if interpreting():
        grid = min(n_tiles, 3)
    else:
        grid = min(n_tiles, PROGRAMS_PER_SM * torch.cuda.get_device_properties(x.device).multi_processor_count)
    out = x.new_empty((nb, h, w, c))
    pooled = torch.zeros((nb, c), device=x.device, dtype=torch.float32) if squeeze else None
    scratch = x.new_empty((grid, hp, bc))
    _expand_dw_kernel[(grid,)](
        x, we, be, wd, bd, out, pooled if squeeze else out, scratch, h, w, ci, c, wd.shape[1], (kernel - 1) // 2,
        tiles_h, tiles_w, n_cb, n_tiles, KS=kernel, ACT=act, SQUEEZE=squeeze, TH=th, TW=tw, HP=hp, OP=op,
        BC=bc, BK=cfg["BK"], num_warps=cfg["warps"], num_stages=cfg["stages"])
    return out, pooled
