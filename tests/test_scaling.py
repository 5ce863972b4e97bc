"""Scaling rules: make_divisible, depth rounding, compound scaling vs the official lookup table."""

import math

import pytest
from torchvision.models._utils import _make_divisible as torchvision_make_divisible

import effnet
from effnet import scaling, tables
from effnet.scaling import make_divisible, scale_depth, scale_spec, scale_width


def test_make_divisible_matches_torchvision_over_a_range():
    # torchvision's helper is the peer reference for the V1/MobileNetV2 rule (with 10% round-up).
    for tenths in range(5, 40_000, 7):
        v = tenths / 10
        assert make_divisible(v, 8) == torchvision_make_divisible(v, 8), v


def test_make_divisible_round_up_rule_and_its_absence():
    # 32 * 0.35 = 11.2 rounds to 8, which is more than 10% below 11.2: the rule bumps it to 16.
    assert make_divisible(11.2, 8) == 16
    assert make_divisible(11.2, 8, round_limit=0.0) == 8  # EfficientNetV2 has no such rule
    assert make_divisible(1280 * 1.1) == 1408
    assert make_divisible(3.0) == 8  # never below the divisor
    assert make_divisible(38.4, round_limit=0.0) == 40


def test_depth_is_ceil_of_repeats_times_multiplier():
    assert scale_depth(3, 1.1) == 4  # ceil(3.3)
    assert scale_depth(2, 1.0) == 2
    assert scale_depth(1, 3.1) == 4
    assert scale_depth(4, 1.8) == 8  # ceil(7.2)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_multipliers_must_be_positive(bad):
    with pytest.raises(ValueError, match="multiplier must be a finite number > 0"):
        scale_width(32, bad)
    with pytest.raises(ValueError, match="multiplier"):
        scale_depth(3, bad)
    with pytest.raises(ValueError, match="width multiplier"):
        effnet.create_model("efficientnet_b0", width=bad)
    with pytest.raises(ValueError, match="depth multiplier"):
        effnet.create_model("mobilenet_v2_100", depth=bad)


def test_scale_spec_is_pure_and_scales_every_stage():
    base = tables.EFFICIENTNET_B0
    scaled = scale_spec(base, 1.2, 1.4)
    assert base == tables.EFFICIENTNET_B0  # the input table is untouched (frozen dataclasses)
    assert [s.out_channels for s in scaled.stages] == [make_divisible(s.out_channels * 1.2) for s in base.stages]
    assert [s.repeats for s in scaled.stages] == [math.ceil(s.repeats * 1.4) for s in base.stages]
    assert scaled.stem_channels == 40 and scaled.head_channels == 1536  # B3


def test_compound_formula_any_real_phi_and_custom_coefficients():
    c = effnet.compound_coefficients(1.0)
    assert (c.depth, c.width) == pytest.approx((1.2, 1.1))
    assert c.resolution == 256  # 224 * 1.15 = 257.6, rounded to a multiple of 8
    half = effnet.compound_coefficients(1.5, alpha=1.3, beta=1.05, gamma=1.1)
    assert (half.depth, half.width) == pytest.approx((1.3**1.5, 1.05**1.5))
    small = effnet.compound_coefficients(-1.0)
    assert small.width < 1 and small.depth < 1 and small.resolution < 224
    with pytest.raises(ValueError, match="alpha must be > 0"):
        effnet.compound_coefficients(1.0, alpha=0)


def test_released_b1_to_b7_are_a_lookup_table_not_the_formula():
    table = scaling.EFFICIENTNET_COEFFICIENTS
    assert set(table) == {f"b{i}" for i in range(9)} | {"l2"}
    assert (table["b4"].width, table["b4"].depth, table["b4"].resolution, table["b4"].dropout) == (1.4, 1.8, 380, 0.4)
    assert (table["l2"].width, table["l2"].depth, table["l2"].resolution) == (4.3, 5.3, 800)
    formula = effnet.compound_coefficients(1.0)
    assert (formula.width, formula.depth) != (table["b1"].width, table["b1"].depth)
    # Both paths are public: the formula and the released lookup build different networks.
    by_formula = effnet.model_config("efficientnet_b0", phi=1.0)
    released = effnet.model_config("efficientnet_b1")
    assert by_formula.spec != released.spec
    assert released.resolution == 240 and by_formula.resolution == 256


def test_efficientnet_phi_builds_the_formula_network():
    model = effnet.efficientnet(phi=0.5, num_classes=10)
    c = effnet.compound_coefficients(0.5)
    assert model.config.spec == scale_spec(tables.EFFICIENTNET_B0, c.width, c.depth)
    assert model.config.resolution == c.resolution
    with pytest.raises(ValueError, match="phi .* applies to EfficientNet"):
        effnet.create_model("mobilenet_v2_100", phi=1.0)
