"""What the Triton kernel modules share: activation codes and the in-kernel activation."""

from __future__ import annotations

import triton
import triton.language as tl

from effnet.kernels.tune import interpreting

ACT_CODES = {None: 0, "none": 0, "relu": 1, "relu6": 2, "silu": 3, "hardswish": 4}


if interpreting():  # Triton's CPU interpreter runs no PTX: the same function through exp
    @triton.jit
    def _sigmoid(x):
        return tl.sigmoid(x)
else:
    @triton.jit
    def _sigmoid(x):
        """sigmoid(x) = (1 + tanh(x / 2)) / 2 with the hardware tanh (one MUFU op, max rel. error ~2^-11, far
        below bf16's 2^-8), in place of exp + a division's ~10 instructions per element in every epilogue."""
        t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x * 0.5], dtype=tl.float32,
                                      is_pure=True, pack=1)
        return 0.5 + 0.5 * t


@triton.jit
def _act(x, ACT: tl.constexpr):
    if ACT == 1:
        x = tl.maximum(x, 0.0)
    elif ACT == 2:
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACT == 3:
        x = x * _sigmoid(x)
    elif ACT == 4:
        x = x * (tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0)
    return x


def _p2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(n)))


def out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - kernel) // stride + 1
