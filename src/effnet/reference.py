"""Published figures for every zoo model: parameters, MACs and ImageNet top-1, each with its source.

MACs are multiply-accumulates (EfficientNet's papers call them "FLOPs").  ``None`` means the source
publishes no figure.  ``rounded`` marks figures the sources round or disagree on: compare those
with a tolerance and say so, rather than bending the code to them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigures:
    """One zoo model's figures as its paper or official release prints them (not a published checkpoint:
    those are ``effnet.weights.PUBLISHED``)."""

    params: float | None  # parameters
    macs: float | None  # multiply-accumulates at the default resolution
    top1: float | None  # ImageNet-1k top-1, percent
    source: str
    rounded: bool = False  # the source prints a rounded or disputed figure
    note: str = ""


M, B = 1e6, 1e9
_V1 = "Howard et al. 2017, Tables 6-7; params of the released TF-slim checkpoints"
_V2 = "Sandler et al. 2018, Table 4; released TF-slim checkpoints (params, MACs)"
_B = "Tan & Le 2019, Table 2"
_LITE = "official TF efficientnet/lite README"
_V2B = "official automl/efficientnetv2 README"
_V2P = "Tan & Le 2021, Table 7 and the official README"

PAPER_FIGURES: dict[str, PaperFigures] = {
    "mobilenet_v1_100": PaperFigures(4.24 * M, 569 * M, 70.6, _V1),
    "mobilenet_v1_075": PaperFigures(2.59 * M, 325 * M, 68.4, _V1),
    "mobilenet_v1_050": PaperFigures(1.34 * M, 149 * M, 63.7, _V1),
    "mobilenet_v1_025": PaperFigures(0.47 * M, 41 * M, 50.6, _V1),
    "mobilenet_v2_140": PaperFigures(6.06 * M, 582 * M, 74.7, _V2, note="paper Table 4 prints 6.9M / 585M"),
    "mobilenet_v2_130": PaperFigures(5.34 * M, 509 * M, None, _V2),
    "mobilenet_v2_100": PaperFigures(3.47 * M, 300 * M, 72.0, _V2, note="paper Table 4 prints 3.4M"),
    "mobilenet_v2_075": PaperFigures(2.61 * M, 209 * M, None, _V2),
    "mobilenet_v2_050": PaperFigures(1.95 * M, 97 * M, None, _V2),
    "mobilenet_v2_035": PaperFigures(1.66 * M, 59 * M, None, _V2),
    "efficientnet_b0": PaperFigures(5.3 * M, 0.39 * B, 77.1, _B, rounded=True),
    "efficientnet_b1": PaperFigures(7.8 * M, 0.70 * B, 79.1, _B, rounded=True),
    "efficientnet_b2": PaperFigures(9.2 * M, 1.0 * B, 80.1, _B, rounded=True),
    "efficientnet_b3": PaperFigures(12 * M, 1.8 * B, 81.6, _B, rounded=True),
    "efficientnet_b4": PaperFigures(19 * M, 4.2 * B, 82.9, _B, rounded=True),
    "efficientnet_b5": PaperFigures(30 * M, 9.9 * B, 83.6, _B, rounded=True),
    "efficientnet_b6": PaperFigures(43 * M, 19 * B, 84.0, _B, rounded=True),
    "efficientnet_b7": PaperFigures(66 * M, 37 * B, 84.3, _B, rounded=True),
    "efficientnet_b8": PaperFigures(None, None, None, "official TF efficientnet_builder (no published figures)"),
    "efficientnet_l2": PaperFigures(None, None, None, "official TF efficientnet_builder (no published figures)"),
    "efficientnet_lite0": PaperFigures(4.7 * M, 407 * M, 75.1, _LITE),
    "efficientnet_lite1": PaperFigures(5.4 * M, 631 * M, 76.7, _LITE),
    "efficientnet_lite2": PaperFigures(6.1 * M, 899 * M, 77.6, _LITE),
    "efficientnet_lite3": PaperFigures(8.2 * M, 1.44 * B, 79.8, _LITE),
    "efficientnet_lite4": PaperFigures(13.0 * M, 2.64 * B, 81.5, _LITE),
    "efficientnet_v2_b0": PaperFigures(7.1 * M, 0.72 * B, 78.7, _V2B),
    "efficientnet_v2_b1": PaperFigures(8.1 * M, 1.2 * B, 79.8, _V2B),
    "efficientnet_v2_b2": PaperFigures(10.1 * M, 1.7 * B, 80.5, _V2B),
    "efficientnet_v2_b3": PaperFigures(14.4 * M, 3.0 * B, 82.1, _V2B),
    "efficientnet_v2_s": PaperFigures(21.5 * M, 8.4 * B, 83.9, _V2P, rounded=True, note="paper prints 22M / 8.8B"),
    "efficientnet_v2_m": PaperFigures(54.1 * M, 24.7 * B, 85.2, _V2P, rounded=True, note="paper top-1 85.1"),
    "efficientnet_v2_l": PaperFigures(119.5 * M, 56.3 * B, 85.7, _V2P, rounded=True, note="paper prints 120M"),
    "efficientnet_v2_xl": PaperFigures(208 * M, 94 * B, 87.3, _V2P, rounded=True,
                                    note="top-1 after ImageNet-21k pre-training"),
}
