"""The zoo: names, parameter counts against torchvision and the papers, every model trains."""

import pytest
import torch
import torchvision
from torch import nn

import effnet
from effnet.reference import PAPER_FIGURES
from effnet.zoo import get_recipe

EXPECTED_NAMES = (
    [f"mobilenet_v1_{w}" for w in ("025", "050", "075", "100")]
    + [f"mobilenet_v2_{w}" for w in ("035", "050", "075", "100", "130", "140")]
    + [f"efficientnet_b{i}" for i in range(9)]
    + ["efficientnet_l2"]
    + [f"efficientnet_lite{i}" for i in range(5)]
    + [f"efficientnet_v2_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l", "xl")]
)

# The figures, written out so that a change in torchvision cannot move them silently.
TORCHVISION_PARAMS = {
    "mobilenet_v2_100": ("mobilenet_v2", 3_504_872),
    "efficientnet_b0": ("efficientnet_b0", 5_288_548),
    "efficientnet_b1": ("efficientnet_b1", 7_794_184),
    "efficientnet_b2": ("efficientnet_b2", 9_109_994),
    "efficientnet_b3": ("efficientnet_b3", 12_233_232),
    "efficientnet_b4": ("efficientnet_b4", 19_341_616),
    "efficientnet_b5": ("efficientnet_b5", 30_389_784),
    "efficientnet_b6": ("efficientnet_b6", 43_040_704),
    "efficientnet_b7": ("efficientnet_b7", 66_347_960),
    "efficientnet_v2_s": ("efficientnet_v2_s", 21_458_488),
    "efficientnet_v2_m": ("efficientnet_v2_m", 54_139_356),
    "efficientnet_v2_l": ("efficientnet_v2_l", 118_515_272),
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(build):
    with torch.device("meta"):  # shapes only: big models cost nothing to count
        return build()


def test_zoo_names():
    assert effnet.list_models() == sorted(EXPECTED_NAMES)
    assert effnet.list_models("efficientnet_lite*") == [f"efficientnet_lite{i}" for i in range(5)]


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_params_equal_torchvision_exactly(name):
    tv_name, expected = TORCHVISION_PARAMS[name]
    ours = _params(_meta(lambda: effnet.create_model(name)))
    theirs = _params(_meta(getattr(torchvision.models, tv_name)))
    assert ours == expected == theirs


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED_NAMES if n not in TORCHVISION_PARAMS))
def test_params_within_2_percent_of_the_papers(name):
    published = PAPER_FIGURES[name].params
    if published is None:
        # B8 and L2 have no published count; pin ours so a change is seen (reference outputs).
        assert name in ("efficientnet_b8", "efficientnet_l2")
        expected = {"efficientnet_b8": 87_413_142, "efficientnet_l2": 480_309_308}[name]
        assert _params(_meta(lambda: effnet.create_model(name))) == expected
        return
    ours = _params(_meta(lambda: effnet.create_model(name)))
    assert abs(ours - published) / published <= 0.02, (ours, published)


def test_recipes_carry_resolution_dropout_activation_and_bn():
    def acts(model):
        return {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU))}

    v1 = effnet.create_model("mobilenet_v1_100")
    assert acts(v1) == {nn.ReLU6}  # as released in TF/Keras; the paper's plain ReLU is an override
    assert acts(effnet.create_model("mobilenet_v1_100", activation="relu")) == {nn.ReLU}
    assert acts(effnet.create_model("mobilenet_v2_100")) == {nn.ReLU6}
    assert acts(effnet.create_model("efficientnet_lite0")) == {nn.ReLU6}
    assert acts(effnet.create_model("efficientnet_b0")) == {nn.SiLU}
    assert acts(effnet.create_model("efficientnet_v2_b0")) == {nn.SiLU}

    b4 = effnet.model_config("efficientnet_b4")
    assert (b4.resolution, b4.drop_rate, b4.drop_path_rate) == (380, 0.4, 0.2)
    v2s = effnet.create_model("efficientnet_v2_s")
    assert v2s.config.resolution == 384 and v2s.dropout.p == 0.2
    assert {m.eps for m in v2s.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert effnet.model_config("efficientnet_b0").bn_eps == 1e-5  # torchvision's PyTorch-trained B0
    assert effnet.model_config("efficientnet_b0", drop_rate=0.5, bn_eps=1e-3).drop_rate == 0.5


def test_lite_keeps_stem_head_and_first_last_depth_fixed():
    lite4 = effnet.model_config("efficientnet_lite4").spec
    b0 = effnet.model_config("efficientnet_lite0").spec
    assert (lite4.stem_channels, lite4.head_channels) == (32, 1280)
    assert lite4.stages[0].repeats == b0.stages[0].repeats == 1
    assert lite4.stages[-1].repeats == b0.stages[-1].repeats == 1
    assert lite4.stages[1].repeats == 4  # ceil(2 * 1.8): the middle stages do scale
    assert effnet.model_config("efficientnet_b4").spec.stem_channels == 48  # non-Lite stem scales


def test_mobilenet_v2_head_widens_only_above_width_1():
    assert effnet.model_config("mobilenet_v2_035").spec.head_channels == 1280
    assert effnet.model_config("mobilenet_v2_140").spec.head_channels == 1792


def test_v2_b_variants_scale_v2_b0_without_round_up():
    b3 = effnet.model_config("efficientnet_v2_b3").spec
    assert b3.stem_channels == 40 and b3.head_channels == 1536
    assert [s.out_channels for s in b3.stages] == [16, 40, 56, 112, 136, 232]
    assert [s.repeats for s in b3.stages] == [2, 3, 3, 5, 7, 12]


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'efficientnet_b9'; did you mean efficientnet_b"):
        effnet.create_model("efficientnet_b9")
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        effnet.create_model("resnet50")
    with pytest.raises(TypeError, match="model name must be a string"):
        effnet.create_model(3)
    with pytest.raises(TypeError, match="unknown override.*width_mult.*allowed: width"):
        effnet.create_model("efficientnet_b0", width_mult=2)


def test_wrong_input_shape_is_rejected_with_a_clear_message():
    model = effnet.create_model("mobilenet_v2_035", in_chans=1, num_classes=3)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, H, W\), got \(2, 3, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(1, 32, 32\)"):
        model(torch.randn(1, 32, 32))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_config_round_trips_through_json():
    import json

    config = effnet.model_config("efficientnet_v2_m", num_classes=5, padding="same")
    again = effnet.ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    a, b = effnet.EfficientConvNet(config), effnet.EfficientConvNet(again)
    assert a.state_dict().keys() == b.state_dict().keys()


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_model_trains_and_evaluates(name):
    torch.manual_seed(0)
    recipe = get_recipe(name)
    # The biggest (B5-L2, V2-M/L/XL) at reduced width and depth: same blocks and rules, a fraction of the
    # CPU time; their full-size parameter counts are pinned on the meta device above.
    small = {"width": min(recipe.width, 0.5), "depth": min(recipe.depth, 1.0)} if recipe.width * recipe.depth > 2 \
        or name in ("efficientnet_v2_m", "efficientnet_v2_l", "efficientnet_v2_xl") else {}
    model = effnet.create_model(name, num_classes=5, drop_path_rate=0.1, **small)
    x = torch.randn(2, 3, 64, 48)  # small and non-square; BN needs 2 samples at the 2x2 head
    for mode in ("train", "eval"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        out = model(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all(), mode
        out.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{mode}: no gradient for {missing[:5]}"
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, f"{mode}: non-finite gradient in {bad[:5]}"
    with torch.no_grad():
        maps = model.feature_maps(x)
    assert [m.shape[1] for m in maps] == model.feature_channels()
    assert model.feature_strides() == [2, 4, 8, 16, 32]
    assert model.config.spec.output_stride == model.feature_strides()[-1]
    assert [m.shape[-2:] for m in maps] == [(-(-64 // s), -(-48 // s)) for s in (2, 4, 8, 16, 32)]  # ceil
