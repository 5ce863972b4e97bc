"""The depthwise kxk conv kernel (channels_last), with bias, activation and the SE squeeze in one pass.

One program computes a tile of BP output pixels x BC channels; each of the k*k taps is one [BP, BC]
load (from L1 for all but the first touch of a pixel), so the input is read from memory about once.
What a program's tile is, and in which order programs run, is a per-shape tuning choice (``config``):

- ``TW`` = 0: BP consecutive output pixels of one image (row-major, flattened); ``TW`` > 0: a 2-D
  tile of (BP // TW) rows x TW columns, whose halo is smaller than a flattened strip's on wide maps.
- ``GP`` = 1: pixel blocks run over the whole batch (a block may cross images), so small maps (7x7 =
  49 pixels) waste no lanes; the SE squeeze then adds one partial sum per image the block touches.
- ``CF`` = 1: channel blocks vary fastest in the launch order, so programs reading the same pixels'
  other channels run side by side (DRAM pages and L2 lines of a pixel are shared in time).
- ``SPEC`` = 1: the map width and channel count are compile-time constants (the tap offsets become
  immediates); one compile per layer shape.
- ``RL`` = 1: the kernel rows are a loop rather than unrolled (fewer registers: at k5 the unrolled
  kernel holds up to 255 registers per thread, two programs per SM).

Every tap's address is the tile's tap-(0, 0) pointer plus a scalar offset, and the SE squeeze's atomic
adds are relaxed (only the kernel's end orders them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from effnet.kernels import tune
from effnet.kernels.triton_common import _act, _p2, out_size
from effnet.kernels.tune import config


def _cfg(bp: int, bc: int, warps: int, **flags: int) -> dict:
    return config(BP=bp, BC=bc, warps=warps, **{"TW": 0, "GP": 0, "CF": 0, "SPEC": 0, "RL": 0, **flags})


def _rows(rs: int, tw: int, bc: int, warps: int, **opts: int) -> dict:
    return config(RS=rs, TW=tw, BC=bc, warps=warps, **opts)


# Candidates per kernel size, best guess first; the tuner times them per layer shape (row-walking ones at
# stride 1 only).  Tile configs: from B0's layers at batch 256 on an H100 (docs/benchmarks/fused.md, runs 6
# and 7) each was the fastest, or near it, on some layer.  Row-walking configs: ~2 instructions per
# multiply-add in the loop (ptxas, sm_90) against ~6 for the tile kernel, 94-118 registers.
CANDIDATES = {
    3: [_cfg(32, 32, 1), _cfg(16, 64, 2), _cfg(64, 32, 4), _rows(16, 32, 32, 4), _rows(16, 16, 32, 2),
        _rows(16, 16, 64, 4)],
    5: [_cfg(16, 64, 2), _cfg(32, 64, 4, SPEC=1), _cfg(32, 64, 4, GP=1, CF=1, SPEC=1), _rows(16, 16, 32, 2),
        _rows(16, 32, 64, 8), _rows(16, 16, 64, 4)],
}


@triton.jit
def _atomic_sum(ptr, val, mask, RELAXED: tl.constexpr):
    if RELAXED:
        tl.atomic_add(ptr, val, mask=mask, sem="relaxed")
    else:
        tl.atomic_add(ptr, val, mask=mask)


@triton.jit
def _dw_row(acc, xb, w_ptr, c, c_mask, p_mask, ih, iw0, kh, H, W, C, WS, KS: tl.constexpr, EVEN_C: tl.constexpr):
    """Add kernel row ``kh``'s k taps to ``acc``."""
    h_ok = p_mask & (ih >= 0) & (ih < H)
    for kw in tl.static_range(KS):
        iw = iw0 + kw
        ok = h_ok & (iw >= 0) & (iw < W)
        if EVEN_C:  # no channel mask: the load's predicate is per pixel only
            xv = tl.load(xb + (kh * W + kw) * C, mask=ok[:, None], other=0.0)
        else:
            xv = tl.load(xb + (kh * W + kw) * C, mask=ok[:, None] & c_mask[None, :], other=0.0)
        # The tap's weights loaded as a broadcast [BP, BC] tile: lands in the accumulator's layout (a [BC]
        # vector load is moved there through shared memory and a barrier, every tap); unmasked, as the
        # weights are padded to whole channel blocks (WS columns).
        wv = tl.load(tl.broadcast_to((w_ptr + (kh * KS + kw) * WS + c)[None, :], xb.shape))
        acc += xv.to(tl.float32) * wv
    return acc


@triton.jit
def _dw_tile(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, NB, H, W, C, WS, OH, OW, pad_t, pad_l, n_pb, n_tw, n_ptot,
             n_cb, KS: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, SQUEEZE: tl.constexpr,
             BP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, GP: tl.constexpr, CF: tl.constexpr,
             NSEG: tl.constexpr, EVEN_C: tl.constexpr, RELAXED: tl.constexpr, RL: tl.constexpr,
             STORE: tl.constexpr):
    pid = tl.program_id(0)
    if CF:
        cb = pid % n_cb
        pidp = pid // n_cb
    else:
        cb = pid // n_ptot
        pidp = pid % n_ptot
    c = cb * BC + tl.arange(0, BC)
    c_mask = c < C
    r = tl.arange(0, BP)
    ohw = OH * OW
    if GP:  # pixel blocks over the batch: per-pixel image index
        gp = pidp * BP + r
        p_mask = gp < NB * ohw
        nv = gp // ohw
        pp = gp % ohw
        oh = pp // OW
        ow = pp % OW
        x_pix = x_ptr + nv.to(tl.int64) * H * W * C
        o_pix = out_ptr + gp.to(tl.int64) * C
    else:
        n = pidp // n_pb
        pb = pidp % n_pb
        if TW > 0:  # 2-D tile: (BP // TW) rows x TW columns
            oh = (pb // n_tw) * (BP // TW) + r // TW
            ow = (pb % n_tw) * TW + r % TW
            p_mask = (oh < OH) & (ow < OW)
        else:
            p = pb * BP + r
            p_mask = p < ohw
            oh = p // OW
            ow = p % OW
        x_pix = x_ptr + n.to(tl.int64) * H * W * C + tl.zeros((BP,), tl.int32)
        o_pix = out_ptr + n.to(tl.int64) * ohw * C + (oh * OW + ow) * C
    ih0 = oh * STRIDE - pad_t
    iw0 = ow * STRIDE - pad_l
    xb = (x_pix + (ih0 * W + iw0) * C)[:, None] + c[None, :]  # tap (0, 0) of every output pixel
    acc = tl.zeros((BP, BC), dtype=tl.float32)
    if RL:  # kernel rows as a loop: fewer loads in flight per thread, fewer registers, more programs per SM
        for kh in range(KS):
            acc = _dw_row(acc, xb, w_ptr, c, c_mask, p_mask, ih0 + kh, iw0, kh, H, W, C, WS, KS, EVEN_C)
    else:  # all k*k taps unrolled: the compiler may issue many taps' loads at once
        for kh in tl.static_range(KS):
            acc = _dw_row(acc, xb, w_ptr, c, c_mask, p_mask, ih0 + kh, iw0, kh, H, W, C, WS, KS, EVEN_C)
    y = _act(acc + tl.load(bias_ptr + c, mask=c_mask, other=0.0)[None, :], ACT)
    mask = p_mask[:, None] & c_mask[None, :]
    if STORE:  # off: a squeeze-only pass (the SE gate of a block whose depthwise is recomputed later)
        tl.store(o_pix[:, None] + c[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
    if SQUEEZE:
        ys = tl.where(mask, y, 0.0)
        if GP:  # one partial sum per image this block touches (at most NSEG)
            n0 = (pidp * BP) // ohw
            for j in tl.static_range(NSEG):
                s = tl.sum(tl.where((nv == n0 + j)[:, None], ys, 0.0), axis=0)
                _atomic_sum(pool_ptr + (n0 + j) * C + c, s, c_mask & (n0 + j < NB), RELAXED)
        else:
            _atomic_sum(pool_ptr + n * C + c, tl.sum(ys, axis=0), c_mask, RELAXED)


@triton.jit
def _depthwise_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, NB, H, W, C, WS, OH, OW, pad_t, pad_l,
                      n_pb, n_tw, n_ptot, n_cb, KS: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr,
                      SQUEEZE: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr,
                      GP: tl.constexpr, CF: tl.constexpr, NSEG: tl.constexpr, EVEN_C: tl.constexpr,
                      RELAXED: tl.constexpr, RL: tl.constexpr, STORE: tl.constexpr):
    _dw_tile(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, NB, H, W, C, WS, OH, OW, pad_t, pad_l, n_pb, n_tw, n_ptot,
             n_cb, KS, STRIDE, ACT, SQUEEZE, BP, BC, TW, GP, CF, NSEG, EVEN_C, RELAXED, RL, STORE)


@triton.jit
def _depthwise_kernel_spec(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, NB, H, W: tl.constexpr, C: tl.constexpr,
                           WS, OH, OW, pad_t, pad_l, n_pb, n_tw, n_ptot, n_cb, KS: tl.constexpr,
                           STRIDE: tl.constexpr, ACT: tl.constexpr, SQUEEZE: tl.constexpr, BP: tl.constexpr,
                           BC: tl.constexpr, TW: tl.constexpr, GP: tl.constexpr, CF: tl.constexpr,
                           NSEG: tl.constexpr, EVEN_C: tl.constexpr, RELAXED: tl.constexpr,
                           RL: tl.constexpr, STORE: tl.constexpr):
    _dw_tile(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, NB, H, W, C, WS, OH, OW, pad_t, pad_l, n_pb, n_tw, n_ptot,
             n_cb, KS, STRIDE, ACT, SQUEEZE, BP, BC, TW, GP, CF, NSEG, EVEN_C, RELAXED, RL, STORE)


@triton.jit
def _rows_tap(acc, xv, w_ptr, wcol, kh: tl.constexpr, kw: tl.constexpr, WS, KS: tl.constexpr):
    return acc + xv * tl.load(w_ptr + (kh * KS + kw) * WS + wcol)



@triton.jit
def _depthwise_rows_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, pool_ptr, H, W, C, WS, OH, OW, pad_t, pad_l,
                           n_strips, n_cols, n_cb, wstep, KS: tl.constexpr, ACT: tl.constexpr, SQUEEZE: tl.constexpr,
                           RS: tl.constexpr, TW: tl.constexpr, BC: tl.constexpr, EVEN_C: tl.constexpr,
                           STORE: tl.constexpr):
    """Stride 1: a program walks down RS output rows of a TW x BC column; every input row is loaded k times
    (once per horizontal tap) and feeds the k output rows that use it, so a loaded and converted element
    serves k multiply-adds instead of one.  acc0..acc4 are the open output rows, newest first."""
    pid = tl.program_id(0)
    cb = pid % n_cb
    rest = pid // n_cb
    col = rest % n_cols
    rest = rest // n_cols
    strip = rest % n_strips
    n = rest // n_strips
    c = cb * BC + tl.arange(0, BC)
    c_mask = c < C
    ow = col * TW + tl.arange(0, TW)
    ow_ok = ow < OW
    oh0 = strip * RS
    x_img = x_ptr + n.to(tl.int64) * H * W * C
    o_img = out_ptr + n.to(tl.int64) * OH * OW * C
    zero = tl.zeros((TW, BC), dtype=tl.float32)
    wcol = tl.broadcast_to(c[None, :], (TW, BC))  # weights as broadcast tiles (see _dw_row)
    bias = tl.load(bias_ptr + c, mask=c_mask, other=0.0)[None, :]
    acc0 = zero
    acc1 = zero
    acc2 = zero
    acc3 = zero
    acc4 = zero
    ssum = zero
    w_row = w_ptr
    for r in range(RS + KS - 1):
        # wstep is 0, but the compiler cannot know: the weight loads stay in the loop (L1 hits) instead of
        # being hoisted out of it into k*k*8 registers per thread (200 at k5: spills, two programs per SM)
        w_row += wstep
        ih = oh0 - pad_t + r
        row_ok = (ih >= 0) & (ih < H)
        for kw in tl.static_range(KS):
            iw = ow - pad_l + kw
            ok = row_ok & (iw >= 0) & (iw < W)
            if EVEN_C:
                m = ok[:, None]
            else:
                m = ok[:, None] & c_mask[None, :]
            xv = tl.load(x_img + (ih * W + iw)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
            # input row ih is kernel row kh of output row oh0 + r - kh, held in acc{kh}
            acc0 = _rows_tap(acc0, xv, w_row, wcol, 0, kw, WS, KS)
            acc1 = _rows_tap(acc1, xv, w_row, wcol, 1, kw, WS, KS)
            acc2 = _rows_tap(acc2, xv, w_row, wcol, 2, kw, WS, KS)
            if KS == 5:
                acc3 = _rows_tap(acc3, xv, w_row, wcol, 3, kw, WS, KS)
                acc4 = _rows_tap(acc4, xv, w_row, wcol, 4, kw, WS, KS)
        if KS == 5:  # output row oh0 + r - 4 is complete
            done = acc4
            acc4 = acc3
            acc3 = acc2
        else:
            done = acc2
        acc2 = acc1
        acc1 = acc0
        acc0 = zero
        oh = oh0 + r - (KS - 1)
        o_ok = (r >= KS - 1) & (oh < OH) & (oh < oh0 + RS)
        mask = (ow_ok & o_ok)[:, None] & c_mask[None, :]
        y = _act(done + bias, ACT)
        if STORE:
            tl.store(o_img + (oh * OW + ow)[:, None] * C + c[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
        if SQUEEZE:
            ssum += tl.where(mask, y, 0.0)
    if SQUEEZE:
        tl.atomic_add(pool_ptr + n * C + c, tl.sum(ssum, axis=0), mask=c_mask, sem="relaxed")


@triton.jit
def _squeeze_kernel(h_ptr, bias_ptr, pool_ptr, HW, C, n_pb, ACT: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // n_pb
    p = (pid % n_pb) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    mask = (p < HW)[:, None] & (c < C)[None, :]
    h = tl.load(h_ptr + n.to(tl.int64) * HW * C + p[:, None] * C + c[None, :], mask=mask, other=0.0)
    y = _act(h.to(tl.float32) + tl.load(bias_ptr + c, mask=c < C, other=0.0)[None, :], ACT)
    tl.atomic_add(pool_ptr + n * C + c, tl.sum(tl.where(mask, y, 0.0), axis=0), mask=c < C, sem="relaxed")


def squeeze(h: torch.Tensor, bias: torch.Tensor, act: int) -> torch.Tensor:
    """The SE squeeze of a pre-activation NHWC ``h``: per-sample channel sums of act(h + bias) [N, C] (float32),
    for a depthwise conv run by the library (whose output is activated later, in the project GEMM)."""
    nb, hh, ww, c = h.shape
    bp, bc = 64, min(64, _p2(c))
    n_pb = triton.cdiv(hh * ww, bp)
    pooled = torch.zeros((nb, c), device=h.device, dtype=torch.float32)
    _squeeze_kernel[(nb * n_pb, triton.cdiv(c, bc))](h, bias, pooled, hh * ww, c, n_pb, ACT=act, BP=bp, BC=bc,
                                                      num_warps=4)
    return pooled


WEIGHT_ALIGN = 128  # weight rows are padded to a multiple of this many channels (the largest channel block)


def pad_weights(w: torch.Tensor) -> torch.Tensor:
    """Depthwise weights [k*k, C] -> [k*k, C rounded up to WEIGHT_ALIGN], zero-filled (unmasked tap loads)."""
    cpad = -(-w.shape[1] // WEIGHT_ALIGN) * WEIGHT_ALIGN
    return w if cpad == w.shape[1] else torch.nn.functional.pad(w, (0, cpad - w.shape[1])).contiguous()


def depthwise(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, kernel: int, stride: int,
              pads: tuple[int, int, int, int], act: int, squeeze: bool,
              store: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Depthwise conv on NHWC ``x`` with weight [k*k, C] (best given through ``pad_weights`` once);
    ``pads`` = (top, bottom, left, right).  Returns the output and, when ``squeeze``, its per-sample channel
    sums [N, C] (float32).  ``store=False`` (with ``squeeze``): the sums only, the output is not written (None)."""
    nb, h, wd, c = x.shape
    w = pad_weights(w)
    cands = [c_ for c_ in CANDIDATES.get(kernel, CANDIDATES[5]) if stride == 1 or "RS" not in c_]
    key = (nb, h, wd, c, kernel, stride, act, squeeze) + (() if store else ("nostore",))
    cfg = tune.pick("depthwise3", key, cands,
                    lambda c_: launch(x, w, bias, kernel, stride, pads, act, squeeze, c_, store=store),
                    clip={"BC": _p2(c)})
    return launch(x, w, bias, kernel, stride, pads, act, squeeze, cfg, store=store)[:2]


def launch(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, kernel: int, stride: int,
           pads: tuple[int, int, int, int], act: int, squeeze: bool, cfg: dict, *, relaxed: bool = True,
           out: torch.Tensor | None = None, pooled: torch.Tensor | None = None, store: bool = True):
    """One launch with tile config ``cfg`` and padded weights (``pad_weights``); ``out`` / ``pooled`` (zeroed)
    may be given preallocated; ``store=False``: the squeeze alone (out is None).  Returns (out, pooled or None,
    the compiled kernel)."""
    nb, h, wd, c = x.shape
    assert w.shape[1] % WEIGHT_ALIGN == 0 and w.shape[1] >= c, "weights not padded: use pad_weights"
    oh, ow = out_size(h, kernel, stride, pads[0], pads[1]), out_size(wd, kernel, stride, pads[2], pads[3])
    bc = min(cfg["BC"], _p2(c))
    n_cb = triton.cdiv(c, bc)
    assert store or squeeze, "a depthwise pass that stores nothing must squeeze"
    if out is None and store:
        out = x.new_empty((nb, oh, ow, c))
    dst = out if store else x  # not written when store is off
    if squeeze and pooled is None:
        pooled = torch.zeros((nb, c), device=x.device, dtype=torch.float32)
    opts = {"maxnreg": cfg["maxnreg"]} if cfg.get("maxnreg") else {}
    if cfg.get("RS"):  # the row-walking kernel (stride 1)
        assert stride == 1, "the row-walking depthwise kernel is for stride 1"
        rs, tw = min(cfg["RS"], oh), min(cfg["TW"], _p2(ow, 8))
        n_strips, n_cols = triton.cdiv(oh, rs), triton.cdiv(ow, tw)
        compiled = _depthwise_rows_kernel[(nb * n_strips * n_cols * n_cb,)](
            x, w, bias, dst, pooled if squeeze else dst, h, wd, c, w.shape[1], oh, ow, pads[0], pads[2], n_strips,
            n_cols, n_cb, 0, KS=kernel, ACT=act, SQUEEZE=squeeze, RS=rs, TW=tw, BC=bc, EVEN_C=c % bc == 0,
            STORE=store, num_warps=cfg["warps"], **opts)
        return out, (pooled if squeeze else None), compiled
    bp, tw, gp = cfg["BP"], min(cfg["TW"], cfg["BP"]), cfg["GP"]
    if gp and nb * oh * ow >= 2**31:
        gp = 0  # pixel indices over the batch would overflow int32
    if tw:
        n_tw = triton.cdiv(ow, tw)
        n_pb = triton.cdiv(oh, bp // tw) * n_tw
    else:
        n_tw, n_pb = 1, triton.cdiv(oh * ow, bp)
    n_ptot = triton.cdiv(nb * oh * ow, bp) if gp else nb * n_pb
    nseg = triton.cdiv(bp - 1, oh * ow) + 1 if gp else 1
    fn = _depthwise_kernel_spec if cfg.get("SPEC") else _depthwise_kernel
    compiled = fn[(n_ptot * n_cb,)](
        x, w, bias, dst, pooled if squeeze else dst, nb, h, wd, c, w.shape[1], oh, ow, pads[0], pads[2], n_pb, n_tw, n_ptot,
        n_cb, KS=kernel, STRIDE=stride, ACT=act, SQUEEZE=squeeze, BP=bp, BC=bc, TW=tw if not gp else 0, GP=gp,
        CF=cfg["CF"], NSEG=nseg, EVEN_C=c % bc == 0, RELAXED=relaxed, RL=cfg.get("RL", 0), STORE=store,
        num_warps=cfg["warps"], **opts)
    return out, (pooled if squeeze else None), compiled
