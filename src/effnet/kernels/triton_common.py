"""What the Triton kernel modules share: activation codes and the in-kernel activation."""

from __future__ import annotations

import triton
import triton.language as tl

ACT_CODES = {None: 0, "none": 0, "relu": 1, "relu6": 2, "silu": 3, "hardswish": 4}


@triton.jit
def _act(x, ACT: tl.constexpr):
    if ACT == 1:
        x = tl.maximum(x, 0.0)
    elif ACT == 2:
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACT == 3:
        x = x * tl.sigmoid(x)
    elif ACT == 4:
        x = x * (tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0)
    return x


def _p2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(n)))
