"""Scaling as pure functions from table to table: width, depth, resolution, compound phi."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

from effnet.tables import NetSpec


def make_divisible(value: float, divisor: int = 8, *, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``).

    With ``round_limit`` 0.9 (MobileNetV2, EfficientNet) a result more than 10% below ``value`` is
    bumped up by one ``divisor``; ``round_limit=0`` switches that rule off (EfficientNetV2).
    """
    if divisor < 1:
        raise ValueError(f"divisor must be a positive integer, got {divisor}")
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def scale_width(channels: int, multiplier: float, *, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Channels after a width multiplier, rounded as the family's official code does."""
    _check_multiplier("width", multiplier)
    return make_divisible(channels * multiplier, divisor, round_limit=round_limit)


def scale_depth(repeats: int, multiplier: float) -> int:
    """Blocks in a stage after a depth multiplier: ``ceil(repeats * d)``.

    A product within 1e-9 of an integer counts as that integer, so float noise in a product of
    multipliers (``d * (1 / d)``, ``3 * (4 / 3)``) never adds a block; no released table is affected.
    """
    _check_multiplier("depth", multiplier)
    return math.ceil(repeats * multiplier - 1e-9)


def scale_spec(
    spec: NetSpec,
    width: float = 1.0,
    depth: float = 1.0,
    *,
    round_limit: float = 0.9,
    stage_width: Sequence[float] | None = None,
    stage_depth: Sequence[float] | None = None,
    stem_width: float = 1.0,
    head_width: float = 1.0,
) -> NetSpec:
    """Scale a whole table by width and depth multipliers, uniformly or per stage.

    ``stage_width``/``stage_depth`` hold one multiplier per stage, multiplied with the global
    ``width``/``depth`` (EfficientNetV2's non-uniform scaling: more layers in the later stages).
    ``stem_width``/``head_width`` likewise multiply the global width for the stem and the head conv.
    A family's fixed parts are multipliers of this form (:class:`ScalingRule`).
    """
    _check_multiplier("width", width)
    _check_multiplier("depth", depth)
    n = len(spec.stages)
    stage_width = per_stage_multipliers("stage_width", stage_width, n)
    stage_depth = per_stage_multipliers("stage_depth", stage_depth, n)
    for what, value in (("stem_width", stem_width), ("head_width", head_width)):
        _check_multiplier(what, value)

    def channels(c: int, w: float) -> int:
        return scale_width(c, w, round_limit=round_limit)

    stages = tuple(
        replace(stage, out_channels=channels(stage.out_channels, width * sw),
                repeats=scale_depth(stage.repeats, depth * sd))
        for stage, sw, sd in zip(spec.stages, stage_width, stage_depth)
    )
    return replace(
        spec,
        stem_channels=channels(spec.stem_channels, width * stem_width),
        stages=stages,
        head_channels=None if spec.head_channels is None else channels(spec.head_channels, width * head_width),
    )


def per_stage_multipliers(what: str, values: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if values is None:
        return (1.0,) * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of {n} multipliers (one per stage), got {values!r}")
    if len(values) != n:
        raise ValueError(f"{what} needs one multiplier per stage: {n} values, got {len(values)}")
    for v in values:
        _check_multiplier(what, v)
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class ScalingRule:
    """Which parts of a family's table follow the global width and depth: exponents of them.

    Exponent 1 follows the global multiplier, 0 keeps the table's value.  :meth:`multipliers` turns
    the rule into the per-part multipliers :func:`scale_spec` takes, for one (width, depth).
    """

    stage_depth: tuple[float, ...] | None = None  # one exponent per stage (None: every stage follows)
    stem_width: float = 1.0  # exponent of the stem conv's width
    head_width: float = 1.0  # exponent of the head conv's width
    head_min_width: float = 0.0  # the head conv never gets a width multiplier below this

    def multipliers(self, width: float, depth: float, num_stages: int) -> dict:
        """``scale_spec`` keyword arguments (relative to the global width/depth) for this rule."""
        _check_multiplier("width", width)
        _check_multiplier("depth", depth)
        exponents = self.stage_depth or (1.0,) * num_stages
        if len(exponents) != num_stages:
            raise ValueError(f"rule has {len(exponents)} stage exponents for a table of {num_stages} stages")
        head = max(self.head_min_width, width**self.head_width)
        return {"stage_depth": tuple(depth ** (e - 1) for e in exponents),
                "stem_width": width ** (self.stem_width - 1), "head_width": head / width}


def scale_resolution(resolution: int, multiplier: float, *, divisor: int = 1) -> int:
    """Input side length after a resolution multiplier, rounded to a multiple of ``divisor``."""
    _check_multiplier("resolution", multiplier)
    return max(divisor, round(resolution * multiplier / divisor) * divisor)


@dataclass(frozen=True)
class Coefficients:
    """The four numbers that define one member of a scaled family."""

    width: float
    depth: float
    resolution: int
    dropout: float


# The released EfficientNets (official TF `efficientnet_builder.efficientnet_params`).  B1-B7 are
# NOT alpha**phi, beta**phi, gamma**phi: the authors rounded and hand-picked them.
EFFICIENTNET_COEFFICIENTS: dict[str, Coefficients] = {
    "b0": Coefficients(1.0, 1.0, 224, 0.2),
    "b1": Coefficients(1.0, 1.1, 240, 0.2),
    "b2": Coefficients(1.1, 1.2, 260, 0.3),
    "b3": Coefficients(1.2, 1.4, 300, 0.3),
    "b4": Coefficients(1.4, 1.8, 380, 0.4),
    "b5": Coefficients(1.6, 2.2, 456, 0.4),
    "b6": Coefficients(1.8, 2.6, 528, 0.5),
    "b7": Coefficients(2.0, 3.1, 600, 0.5),
    "b8": Coefficients(2.2, 3.6, 672, 0.5),
    "l2": Coefficients(4.3, 5.3, 800, 0.5),
}

# EfficientNet-Lite (official `efficientnet/lite/efficientnet_lite_builder.py`).
EFFICIENTNET_LITE_COEFFICIENTS: dict[str, Coefficients] = {
    "lite0": Coefficients(1.0, 1.0, 224, 0.2),
    "lite1": Coefficients(1.0, 1.1, 240, 0.2),
    "lite2": Coefficients(1.1, 1.2, 260, 0.3),
    "lite3": Coefficients(1.2, 1.4, 280, 0.3),
    "lite4": Coefficients(1.4, 1.8, 300, 0.3),
}

# EfficientNetV2 B0-B3 scale the V2-B0 table (official `effnetv2_configs.py`); resolution is the
# evaluation size, the training size is smaller (paper Table 7 / official README).
EFFICIENTNET_V2_B_COEFFICIENTS: dict[str, Coefficients] = {
    "b0": Coefficients(1.0, 1.0, 224, 0.2),
    "b1": Coefficients(1.0, 1.1, 240, 0.2),
    "b2": Coefficients(1.1, 1.2, 260, 0.3),
    "b3": Coefficients(1.2, 1.4, 300, 0.3),
}


def compound_coefficients(
    phi: float,
    *,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    base_resolution: int = 224,
    dropout: float = 0.2,
) -> Coefficients:
    """Compound scaling (EfficientNet eq. 3): depth alpha**phi, width beta**phi, resolution gamma**phi.

    Any real ``phi`` in :data:`PHI_RANGE` is accepted (negative shrinks the network).  Resolution is
    rounded to a multiple of 8.
    """
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_real(name, value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value}")
    _check_real("phi", phi)
    low, high = PHI_RANGE
    if not (math.isfinite(phi) and low <= phi <= high):
        raise ValueError(f"phi must be a finite number between {low:g} and {high:g} (B7 is about 6, L2 about 15), "
                         f"got {phi}")
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if abs(phi * math.log(value)) > math.log(MAX_MULTIPLIER):  # checked in logs: value**phi may overflow
            raise ValueError(f"{name}**phi = {value:g}**{phi:g} is outside [1/{MAX_MULTIPLIER:g}, {MAX_MULTIPLIER:g}]")
    return Coefficients(
        width=beta**phi,
        depth=alpha**phi,
        resolution=scale_resolution(base_resolution, gamma**phi, divisor=8),
        dropout=dropout,
    )


# Beyond this a multiplier is a typo, not a network: 100x the width of B0 has 4 G parameters per block.
MAX_MULTIPLIER = 100.0
# Compound phi with the paper's alpha/beta/gamma: -10 gives B0 at 55 px, 25 multiplies depth by 95
# (B7 is about phi 6, L2 about 15); outside, coefficients overflow or leave any sensible network.
PHI_RANGE = (-10.0, 25.0)


def _check_real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")


def _check_multiplier(what: str, value: float) -> None:
    _check_real(f"{what} multiplier", value)
    if not (math.isfinite(value) and 0 < value <= MAX_MULTIPLIER):
        raise ValueError(f"{what} multiplier must be a finite number > 0 (at most {MAX_MULTIPLIER:g}), got {value!r}")
