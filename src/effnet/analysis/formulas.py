"""The notes' cost formulas: a standard convolution against a depthwise-separable one.

``h`` and ``w`` are the *output* feature map's height and width (each output element costs one
filter's worth of multiply-accumulates), as in the notes and in MobileNetV1 section 3.1.
"""

from __future__ import annotations

from fractions import Fraction


def _check(**dims: int) -> None:
    for name, v in dims.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def standard_conv_macs(k: int, c_in: int, c_out: int, h: int, w: int) -> int:
    """MACs of a KxK convolution from C_in to C_out channels: ``K*K*C_in*C_out*H*W``."""
    _check(k=k, c_in=c_in, c_out=c_out, h=h, w=w)
    return k * k * c_in * c_out * h * w


def depthwise_conv_macs(k: int, c_in: int, h: int, w: int) -> int:
    """MACs of a KxK depthwise convolution: ``K*K*C_in*H*W`` (one filter per channel)."""
    _check(k=k, c_in=c_in, h=h, w=w)
    return k * k * c_in * h * w


def pointwise_conv_macs(c_in: int, c_out: int, h: int, w: int) -> int:
    """MACs of a 1x1 convolution: ``C_in*C_out*H*W``."""
    _check(c_in=c_in, c_out=c_out, h=h, w=w)
    return c_in * c_out * h * w


def separable_conv_macs(k: int, c_in: int, c_out: int, h: int, w: int) -> int:
    """MACs of depthwise KxK then pointwise 1x1: ``K*K*C_in*H*W + C_in*C_out*H*W``."""
    return depthwise_conv_macs(k, c_in, h, w) + pointwise_conv_macs(c_in, c_out, h, w)


def separable_ratio(k: int, c_out: int) -> Fraction:
    """Separable over standard cost, exactly: ``1/C_out + 1/K**2`` (independent of C_in, H, W)."""
    _check(k=k, c_out=c_out)
    return Fraction(1, c_out) + Fraction(1, k * k)


def standard_conv_params(k: int, c_in: int, c_out: int) -> int:
    """Weights of a KxK convolution without bias: ``K*K*C_in*C_out``."""
    _check(k=k, c_in=c_in, c_out=c_out)
    return k * k * c_in * c_out


def separable_conv_params(k: int, c_in: int, c_out: int) -> int:
    """Weights of depthwise KxK plus pointwise 1x1, without bias: ``K*K*C_in + C_in*C_out``."""
    _check(k=k, c_in=c_in, c_out=c_out)
    return k * k * c_in + c_in * c_out


def conv_cost_report(k: int, c_in: int, c_out: int, h: int, w: int) -> dict:
    """Both costs, their measured ratio and the formula's, for one set of dimensions."""
    standard = standard_conv_macs(k, c_in, c_out, h, w)
    separable = separable_conv_macs(k, c_in, c_out, h, w)
    return {
        "k": k, "c_in": c_in, "c_out": c_out, "h": h, "w": w,
        "standard_macs": standard,
        "separable_macs": separable,
        "depthwise_macs": depthwise_conv_macs(k, c_in, h, w),
        "pointwise_macs": pointwise_conv_macs(c_in, c_out, h, w),
        "ratio": separable / standard,
        "ratio_formula": float(separable_ratio(k, c_out)),
        "speedup": standard / separable,
        "standard_params": standard_conv_params(k, c_in, c_out),
        "separable_params": separable_conv_params(k, c_in, c_out),
    }
