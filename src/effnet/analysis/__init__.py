"""Analysis: analytic per-layer cost (params, MACs, bytes, intensity) and the notes' cost formulas."""

from effnet.analysis.formulas import (
    conv_cost_report,
    depthwise_conv_macs,
    pointwise_conv_macs,
    separable_conv_macs,
    separable_conv_params,
    separable_ratio,
    standard_conv_macs,
    standard_conv_params,
)
from effnet.analysis.profile import KINDS, LayerRecord, Profile, profile, summarize

__all__ = [
    "KINDS",
    "LayerRecord",
    "Profile",
    "conv_cost_report",
    "depthwise_conv_macs",
    "pointwise_conv_macs",
    "profile",
    "separable_conv_macs",
    "separable_conv_params",
    "separable_ratio",
    "standard_conv_macs",
    "standard_conv_params",
    "summarize",
]
