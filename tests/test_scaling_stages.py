"""Per-stage (non-uniform) scaling, family rules as data, and the zoo's compound-scaling names."""

from dataclasses import replace

import pytest

import effnet
from effnet import tables
from effnet.scaling import ScalingRule, scale_spec
from effnet.tables import BlockType, Stage

V2 = tables.EFFICIENTNET_V2


def test_v2_m_to_l_is_compound_scaling_with_more_layers_in_a_later_stage():
    # V2-L from V2-M: global width 1.25 and depth 1.3 (EfficientNet-style), two stages a little
    # narrower, stage 6 a little deeper ("more layers in the later stages"), the 1280 head kept.
    stage_width = (1, 1, 0.96, 0.96, 1, 1, 1)
    stage_depth = (1, 1, 1, 1, 1, 1.04, 1)
    large = scale_spec(V2["m"], 1.25, 1.3, round_limit=0.0, stage_width=stage_width, stage_depth=stage_depth,
                       head_width=0.8)
    assert large == V2["l"]
    # Without the per-stage multipliers the uniform step misses the published table.
    assert scale_spec(V2["m"], 1.25, 1.3, round_limit=0.0, head_width=0.8) != V2["l"]
    # create_model passes the same multipliers through (the zoo's V2 head follows the width).
    config = effnet.model_config("efficientnet_v2_m", width=1.25, depth=1.3, stage_width=stage_width,
                                 stage_depth=stage_depth, resolution=480)
    assert config.spec.stages == V2["l"].stages and config.spec.stem_channels == 32
    assert config.resolution == 480


def test_v2_s_to_m_scales_six_stages_per_stage_and_adds_a_seventh():
    stage_width = (1, 1, 1.25, 1.25, 1.1, 1.19)
    stage_depth = (1, 1, 1, 0.97, 1.25, 1)
    scaled = scale_spec(V2["s"], 1.0, 1.2, round_limit=0.0, stage_width=stage_width, stage_depth=stage_depth)
    # M's extra stage (MBConv6 k3 s1, 512 x 5) is a new table row: no multiplier creates a stage.
    medium = replace(scaled, stages=scaled.stages + (Stage(BlockType.MBCONV, 6, 3, 1, 512, 5, 0.25),))
    assert medium == V2["m"]


def test_stage_multipliers_multiply_the_global_ones():
    base = tables.EFFICIENTNET_B0
    spec = scale_spec(base, 1.0, 2.0, stage_depth=(0.5, 1, 1, 1, 1, 1, 1.5), stage_width=(1, 1, 1, 1, 1, 1, 2))
    assert [s.repeats for s in spec.stages] == [1, 4, 4, 6, 6, 8, 3]
    assert spec.stages[-1].out_channels == 640 and spec.stages[0].out_channels == 16
    with pytest.raises(ValueError, match="stage_depth needs one multiplier per stage: 7 values, got 2"):
        scale_spec(base, stage_depth=(1, 2))
    with pytest.raises(ValueError, match="stage_width multiplier must be a finite number > 0"):
        scale_spec(base, stage_width=(1, 1, 1, 0, 1, 1, 1))
    with pytest.raises(TypeError, match="sequence of 7 multipliers"):
        scale_spec(base, stage_depth=2.0)


def test_family_rules_are_multipliers_of_the_same_form():
    lite = ScalingRule(stage_depth=(0, 1, 1, 1, 1, 1, 0), stem_width=0, head_width=0)
    m = lite.multipliers(1.4, 1.8, 7)
    spec = scale_spec(tables.EFFICIENTNET_LITE0, 1.4, 1.8, **m)
    assert spec == effnet.model_config("efficientnet_lite4").spec
    assert spec.stem_channels == 32 and spec.head_channels == 1280
    assert (spec.stages[0].repeats, spec.stages[-1].repeats) == (1, 1)
    head = ScalingRule(head_min_width=1.0)
    assert scale_spec(tables.MOBILENET_V2, 0.5, **head.multipliers(0.5, 1.0, 7)).head_channels == 1280
    assert scale_spec(tables.MOBILENET_V2, 1.4, **head.multipliers(1.4, 1.0, 7)).head_channels == 1792


def test_phi_on_a_released_member_raises_instead_of_dropping_its_coefficients():
    with pytest.raises(ValueError, match="phi scales a base network.*'efficientnet_b3' already has its own width 1.2"):
        effnet.model_config("efficientnet_b3", phi=1.0)
    with pytest.raises(ValueError, match="use efficientnet_lite0 with phi"):
        effnet.model_config("efficientnet_lite2", phi=1.0)
    with pytest.raises(ValueError, match="either phi or width/depth"):
        effnet.model_config("efficientnet_b0", phi=1.0, width=1.1)
    assert effnet.model_config("efficientnet_b0", phi=1.0).resolution == 256


def test_create_model_signature_is_model_configs():
    import inspect

    from effnet import zoo

    ps = inspect.signature(zoo.create_model).parameters
    assert list(ps) == list(inspect.signature(zoo.model_config).parameters)
    model = zoo.create_model("mobilenet_v2_035", num_classes=3, stage_depth=(1, 1, 1, 0.5, 1, 1, 1))
    assert model.config == zoo.model_config("mobilenet_v2_035", num_classes=3, stage_depth=(1, 1, 1, 0.5, 1, 1, 1))
    assert [s.repeats for s in model.config.spec.stages] == [1, 2, 3, 2, 3, 3, 1]


def test_formula_efficientnet_is_named_and_rebuilds_from_a_saved_file(tmp_path):
    import torch

    model = effnet.efficientnet(phi=-1.5, num_classes=4)
    assert model.config.name == "efficientnet_phi-1.5"
    assert effnet.efficientnet(phi=1.5, alpha=1.3, num_classes=2).config.name == "efficientnet_phi1.5_a1.3_b1.1_g1.15"
    assert effnet.efficientnet(phi=0.5, lite=True, num_classes=2).config.name == "efficientnet_lite_phi0.5"
    path = tmp_path / "phi.safetensors"
    effnet.save(model, path)
    loaded = effnet.load(path)
    assert loaded.config == model.config and loaded.config.name == "efficientnet_phi-1.5"
    x = torch.randn(1, 3, 64, 64)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), model(x))
