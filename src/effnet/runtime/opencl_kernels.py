"""The OpenCL C kernels of the runtime (float32, NCHW), as one program source.

Every kernel takes its activation as an int (``ACT_*`` below) so one build serves every graph.
The pointwise GEMM is written once as a macro and instantiated per tile shape (``pw_<TM>x<TN>``);
the engine picks the shape per node from the device's limits and the problem size.
"""

from __future__ import annotations

from dataclasses import dataclass

ACT_IDS = {None: 0, "relu": 1, "relu6": 2, "silu": 3, "hardswish": 4, "sigmoid": 5}


@dataclass(frozen=True)
class GemmTile:
    """Output tile of one work group (tm x tn), depth of one local-memory step (tk), outputs per thread."""

    tm: int
    tn: int
    tk: int
    rm: int
    rn: int

    @property
    def name(self) -> str:
        return f"pw_{self.tm}x{self.tn}"

    @property
    def local_size(self) -> tuple[int, int]:
        return self.tn // self.rn, self.tm // self.rm

    @property
    def threads(self) -> int:
        return self.local_size[0] * self.local_size[1]

    @property
    def local_bytes(self) -> int:
        return 4 * self.tk * (self.tm + self.tn)


COMMON = r"""
inline float act(float v, int a) {
    switch (a) {
    case 1: return fmax(v, 0.0f);
    case 2: return fmin(fmax(v, 0.0f), 6.0f);
    case 3: return v / (1.0f + exp(-v));
    case 4: return v * fmin(fmax(v + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
    case 5: return 1.0f / (1.0f + exp(-v));
    default: return v;
    }
}

/* Dense kxk convolution; each work item computes OB output channels of one output pixel. */
#define OB 4
__kernel void conv2d(__global const float *x, __global const float *w, __global const float *b,
                     __global float *y, int C, int H, int W, int O, int OH, int OW, int K, int S,
                     int pt, int pl, int a, int has_bias) {
    int pix = get_global_id(0), o0 = get_global_id(1) * OB, n = get_global_id(2);
    if (pix >= OH * OW) return;
    int oy = pix / OW, ox = pix - oy * OW;
    float acc[OB];
    for (int j = 0; j < OB; j++) acc[j] = 0.0f;
    for (int c = 0; c < C; c++) {
        __global const float *xc = x + ((size_t)n * C + c) * H * W;
        for (int ky = 0; ky < K; ky++) {
            int iy = oy * S + ky - pt;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < K; kx++) {
                int ix = ox * S + kx - pl;
                if (ix < 0 || ix >= W) continue;
                float v = xc[iy * W + ix];
                for (int j = 0; j < OB; j++)
                    if (o0 + j < O) acc[j] += v * w[(((size_t)(o0 + j) * C + c) * K + ky) * K + kx];
            }
        }
    }
    for (int j = 0; j < OB; j++) {
        int o = o0 + j;
        if (o < O) y[((size_t)n * O + o) * OH * OW + pix] = act(acc[j] + (has_bias ? b[o] : 0.0f), a);
    }
}

inline float dw_pixel(__global const float *xc, __global const float *wc, int H, int W, int K, int S,
                      int pt, int pl, int oy, int ox) {
    float acc = 0.0f;
    for (int ky = 0; ky < K; ky++) {
        int iy = oy * S + ky - pt;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < K; kx++) {
            int ix = ox * S + kx - pl;
            if (ix >= 0 && ix < W) acc += xc[iy * W + ix] * wc[ky * K + kx];
        }
    }
    return acc;
}

/* Depthwise kxk with bias and activation fused; one work item per output element (1-D: no grid limits). */
__kernel void dwconv(__global const float *x, __global const float *w, __global const float *b,
                     __global float *y, int C, int H, int W, int OH, int OW, int K, int S, int pt, int pl,
                     int a, int has_bias, int total) {
    int idx = get_global_id(0);
    if (idx >= total) return;
    int nc = idx / (OH * OW), pix = idx - nc * (OH * OW);
    int c = nc % C, oy = pix / OW, ox = pix - oy * OW;
    float v = dw_pixel(x + (size_t)nc * H * W, w + c * K * K, H, W, K, S, pt, pl, oy, ox);
    y[idx] = act(v + (has_bias ? b[c] : 0.0f), a);
}

/* Sum of one work group's values in local memory (local size a power of two); result in s[0]. */
inline void group_sum(__local float *s, float v) {
    int lid = get_local_id(0);
    s[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = get_local_size(0) / 2; step > 0; step >>= 1) {
        if (lid < step) s[lid] += s[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Depthwise + squeeze: one work group per (n, c) plane writes the plane and its mean (SE's pool). */
__kernel void dwconv_pool(__global const float *x, __global const float *w, __global const float *b,
                          __global float *y, __global float *pooled, int C, int H, int W, int OH, int OW,
                          int K, int S, int pt, int pl, int a, int has_bias, __local float *scratch) {
    int nc = get_group_id(0), c = nc % C, lid = get_local_id(0), ls = get_local_size(0);
    __global const float *xc = x + (size_t)nc * H * W;
    float bias = has_bias ? b[c] : 0.0f, sum = 0.0f;
    for (int pix = lid; pix < OH * OW; pix += ls) {
        int oy = pix / OW, ox = pix - oy * OW;
        float v = act(dw_pixel(xc, w + c * K * K, H, W, K, S, pt, pl, oy, ox) + bias, a);
        y[(size_t)nc * OH * OW + pix] = v;
        sum += v;
    }
    group_sum(scratch, sum);
    if (lid == 0) pooled[nc] = scratch[0] / (float)(OH * OW);
}

/* Global average pool: one work group per (n, c) plane. */
__kernel void avgpool(__global const float *x, __global float *y, int HW, __local float *scratch) {
    int nc = get_group_id(0), lid = get_local_id(0);
    float sum = 0.0f;
    for (int p = lid; p < HW; p += get_local_size(0)) sum += x[(size_t)nc * HW + p];
    group_sum(scratch, sum);
    if (lid == 0) y[nc] = scratch[0] / (float)HW;
}

/* SE excitation, first half: s[n, j] = act(br[j] + sum_c wr[j, c] * pooled[n, c]); one work group per
   (n, j) sums over the channels in parallel (a serial loop over ~1000 channels is a long dependent chain). */
__kernel void se_reduce(__global const float *pooled, __global const float *wr, __global const float *br,
                        __global float *s, int C, int S, int a, __local float *scratch) {
    int nj = get_group_id(0), n = nj / S, j = nj - n * S, lid = get_local_id(0);
    float acc = 0.0f;
    for (int c = lid; c < C; c += get_local_size(0)) acc += wr[j * C + c] * pooled[n * C + c];
    group_sum(scratch, acc);
    if (lid == 0) s[nj] = act(scratch[0] + br[j], a);
}

/* SE excitation, second half: gate[n, c] = sigmoid(be[c] + sum_j we[c, j] * s[n, j]); global (C, N). */
__kernel void se_expand(__global const float *s, __global const float *we, __global const float *be,
                        __global float *gate, int C, int S) {
    int c = get_global_id(0), n = get_global_id(1);
    if (c >= C) return;
    float acc = be[c];
    for (int j = 0; j < S; j++) acc += we[c * S + j] * s[n * S + j];
    gate[n * C + c] = 1.0f / (1.0f + exp(-acc));
}

/* y[n, c, p] = x[n, c, p] * gate[n, c]: the SE scale when no consumer can fold it into its read. */
__kernel void scale_channels(__global const float *x, __global const float *gate, __global float *y, int HW,
                             int total) {
    int i = get_global_id(0);
    if (i < total) y[i] = x[i] * gate[i / HW];
}

/* Inference BatchNorm as a per-channel affine map (scale and shift precomputed), activation fused. */
__kernel void channel_affine(__global const float *x, __global const float *scale, __global const float *shift,
                             __global float *y, int C, int HW, int a, int total) {
    int i = get_global_id(0);
    if (i >= total) return;
    int c = (i / HW) % C;
    y[i] = act(x[i] * scale[c] + shift[c], a);
}

__kernel void activation(__global const float *x, __global float *y, int total, int a) {
    int i = get_global_id(0);
    if (i < total) y[i] = act(x[i], a);
}

__kernel void add(__global const float *p, __global const float *q, __global float *y, int total, int a) {
    int i = get_global_id(0);
    if (i < total) y[i] = act(p[i] + q[i], a);
}

"""

# Pointwise conv for CPU devices (PoCL): no local memory or barriers, which a CPU pays for dearly.  Each
# work item computes PW_ROWS output channels of 8 neighbouring pixels as float8 vectors (one SIMD load
# of the input per channel, one broadcast weight per output row); columns that straddle two images
# take the scalar path.
PW_ROWS = 8
POINTWISE_CPU = r"""
inline float8 act8(float8 v, int a) {
    switch (a) {
    case 1: return fmax(v, (float8)0.0f);
    case 2: return fmin(fmax(v, (float8)0.0f), (float8)6.0f);
    case 3: return v / ((float8)1.0f + exp(-v));
    case 4: return v * fmin(fmax(v + (float8)3.0f, (float8)0.0f), (float8)6.0f) * (float8)(1.0f / 6.0f);
    case 5: return (float8)1.0f / ((float8)1.0f + exp(-v));
    default: return v;
    }
}

/* Depthwise for CPU devices: 8 neighbouring output pixels of one row per work item, as float8; at
   stride 1 an interior tap is one unaligned vector load, other taps fall back to scalar reads. */
__kernel void dwconv_row8(__global const float *x, __global const float *w, __global const float *b,
                          __global float *y, int C, int H, int W, int OH, int OW, int K, int S, int pt, int pl,
                          int a, int has_bias, int total) {
    int idx = get_global_id(0), groups = (OW + 7) / 8;
    if (idx >= total) return;
    int row = idx / groups, ox0 = (idx - row * groups) * 8;
    int nc = row / OH, oy = row - nc * OH, c = nc % C;
    __global const float *xc = x + (size_t)nc * H * W;
    __global const float *wc = w + c * K * K;
    float8 acc = (float8)0.0f;
    for (int ky = 0; ky < K; ky++) {
        int iy = oy * S + ky - pt;
        if (iy < 0 || iy >= H) continue;
        __global const float *xr = xc + iy * W;
        for (int kx = 0; kx < K; kx++) {
            float wv = wc[ky * K + kx];
            int ix0 = ox0 * S + kx - pl;
            if (S == 1 && ix0 >= 0 && ix0 + 8 <= W) {
                acc += vload8(0, xr + ix0) * wv;
            } else {
                float t[8];
                for (int j = 0; j < 8; j++) {
                    int ix = ix0 + j * S;
                    t[j] = (ix >= 0 && ix < W) ? xr[ix] * wv : 0.0f;
                }
                acc += vload8(0, t);
            }
        }
    }
    acc = act8(acc + (float8)(has_bias ? b[c] : 0.0f), a);
    __global float *yr = y + ((size_t)nc * OH + oy) * OW;
    if (ox0 + 8 <= OW) {
        vstore8(acc, 0, yr + ox0);
    } else {
        float t[8];
        vstore8(acc, 0, t);
        for (int j = 0; ox0 + j < OW; j++) yr[ox0 + j] = t[j];
    }
}

__kernel void pw_rows(__global const float *x, __global const float *w, __global const float *b,
                      __global const float *gate, __global const float *res, __global float *y,
                      int C, int O, int P, int NP, int a1, int a2, int has_bias, int has_gate, int has_res) {
    int j0 = get_global_id(0) * 8, o0 = get_global_id(1) * PW_ROWS;
    if (j0 >= NP) return;
    int n = j0 / P, p = j0 - n * P, rows = min(PW_ROWS, O - o0);
    if (p + 8 <= P) {
        float8 acc[PW_ROWS];
        for (int i = 0; i < PW_ROWS; i++) acc[i] = (float8)0.0f;
        __global const float *xp = x + (size_t)n * C * P + p;
        __global const float *wp = w + (size_t)o0 * C;
        for (int k = 0; k < C; k++) {
            float8 v = vload8(0, xp + (size_t)k * P);
            if (has_gate) v *= gate[n * C + k];
            for (int i = 0; i < PW_ROWS; i++)
                if (i < rows) acc[i] = fma((float8)wp[(size_t)i * C + k], v, acc[i]);
        }
        for (int i = 0; i < rows; i++) {
            int o = o0 + i;
            size_t at = ((size_t)n * O + o) * P + p;
            float8 v = act8(acc[i] + (float8)(has_bias ? b[o] : 0.0f), a1);
            if (has_res) v = act8(v + vload8(0, res + at), a2);
            vstore8(v, 0, y + at);
        }
        return;
    }
    for (int j = j0; j < min(j0 + 8, NP); j++) {
        int n = j / P, p = j - n * P;
        for (int i = 0; i < rows; i++) {
            int o = o0 + i;
            float acc = 0.0f;
            for (int k = 0; k < C; k++) {
                float v = x[((size_t)n * C + k) * P + p];
                if (has_gate) v *= gate[n * C + k];
                acc = fma(w[(size_t)o * C + k], v, acc);
            }
            size_t at = ((size_t)n * O + o) * P + p;
            float v = act(acc + (has_bias ? b[o] : 0.0f), a1);
            if (has_res) v = act(v + res[at], a2);
            y[at] = v;
        }
    }
}
""".replace("PW_ROWS", str(PW_ROWS))

# Pointwise conv as a GEMM over (O x C) weights and (C x N*P) pixels, all images side by side so small
# late-stage maps still fill a tile.  Tiles of both operands go through local memory; each thread
# keeps RM x RN outputs in registers.  The epilogue adds bias, activation, the optional residual (a
# following `add`, with its own activation); the optional SE gate scales the input as it is read.
GEMM = r"""
__kernel __attribute__((reqd_work_group_size(TN / RN, TM / RM, 1)))
void NAME(__global const float *x, __global const float *w, __global const float *b,
          __global const float *gate, __global const float *res, __global float *y,
          int C, int O, int P, int NP, int a1, int a2, int has_bias, int has_gate, int has_res) {
    __local float As[TK][TM + 1];
    __local float Bs[TK][TN];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int LX = TN / RN, LY = TM / RM, NT = LX * LY, tid = ty * LX + tx;
    const int o0 = get_group_id(1) * TM, j0 = get_group_id(0) * TN;
    float acc[RM][RN];
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < C; k0 += TK) {
        for (int e = tid; e < TK * TM; e += NT) {
            int m = e / TK, kk = e - m * TK, o = o0 + m, k = k0 + kk;
            As[kk][m] = (o < O && k < C) ? w[(size_t)o * C + k] : 0.0f;
        }
        for (int e = tid; e < TK * TN; e += NT) {
            int kk = e / TN, jj = e - kk * TN, j = j0 + jj, k = k0 + kk;
            float v = 0.0f;
            if (j < NP && k < C) {
                int n = j / P, p = j - n * P;
                v = x[((size_t)n * C + k) * P + p];
                if (has_gate) v *= gate[n * C + k];
            }
            Bs[kk][jj] = v;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TK; kk++) {
            float av[RM], bv[RN];
            for (int i = 0; i < RM; i++) av[i] = As[kk][ty + i * LY];
            for (int j = 0; j < RN; j++) bv[j] = Bs[kk][tx + j * LX];
            for (int i = 0; i < RM; i++)
                for (int j = 0; j < RN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < RM; i++) {
        int o = o0 + ty + i * LY;
        if (o >= O) continue;
        float bias = has_bias ? b[o] : 0.0f;
        for (int j = 0; j < RN; j++) {
            int col = j0 + tx + j * LX;
            if (col >= NP) continue;
            int n = col / P, p = col - n * P;
            size_t at = ((size_t)n * O + o) * P + p;
            float v = act(acc[i][j] + bias, a1);
            if (has_res) v = act(v + res[at], a2);
            y[at] = v;
        }
    }
}
"""


def program_source(tiles: tuple[GemmTile, ...]) -> str:
    """The whole program: common kernels plus one GEMM per tile shape."""
    parts = [COMMON, POINTWISE_CPU]
    for t in tiles:
        macros = {"NAME": t.name, "TM": t.tm, "TN": t.tn, "TK": t.tk, "RM": t.rm, "RN": t.rn}
        parts += [f"#define {k} {v}" for k, v in macros.items()]
        parts += [GEMM, *(f"#undef {k}" for k in macros)]
    return "\n".join(parts)
