"""The rules of the notes, one test each: residual condition, linear bottleneck, SE width,
Fused-MBConv with expansion 1, stochastic depth, TensorFlow SAME padding."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import effnet
from effnet.blocks import DepthwiseSeparable, FusedMBConv, MBConv
from effnet.layers import (
    Conv2dSame,
    ConvNormAct,
    SqueezeExcitation,
    StochasticDepth,
    same_padding,
    stochastic_depth,
)
from effnet.plan import block_spec, drop_path_schedule
from effnet.tables import BlockType


def mbconv(in_ch: int, out_ch: int, **kw) -> MBConv:
    return MBConv(block_spec(BlockType.MBCONV, in_ch, out_ch, **kw))


def fused(in_ch: int, out_ch: int, **kw) -> FusedMBConv:
    return FusedMBConv(block_spec(BlockType.FUSED_MBCONV, in_ch, out_ch, **{"activation": "silu", **kw}))


def separable(in_ch: int, out_ch: int, **kw) -> DepthwiseSeparable:
    return DepthwiseSeparable(block_spec(BlockType.DEPTHWISE_SEPARABLE, in_ch, out_ch, **kw))


def _zero_branch(block: nn.Module) -> None:
    # BN with gamma = beta = 0 makes the last conv-norm of the branch output exactly zero.
    last = block.project if not isinstance(block.project, nn.Identity) else block.expand
    nn.init.zeros_(last.norm.weight)
    nn.init.zeros_(last.norm.bias)


@pytest.mark.parametrize("cls", [mbconv, fused])
@pytest.mark.parametrize(
    "in_ch, out_ch, stride, residual",
    [(16, 16, 1, True), (16, 24, 1, False), (16, 16, 2, False), (24, 16, 2, False)],
)
def test_residual_only_when_stride_1_and_same_channels(cls, in_ch, out_ch, stride, residual):
    block = cls(in_ch, out_ch, expand_ratio=4, stride=stride).eval()
    assert block.spec.residual is residual
    _zero_branch(block)
    x = torch.randn(2, in_ch, 8, 8)
    out = block(x)
    if residual:
        torch.testing.assert_close(out, x)  # zero branch + shortcut = input
    else:
        assert out.abs().max() == 0  # no shortcut: the zero branch is all there is


def test_mbconv_reads_like_the_paper():
    block = mbconv(24, 40, expand_ratio=6, kernel=5, stride=2, se_ratio=0.25)
    assert block.expand.conv.kernel_size == (1, 1) and block.expand.conv.out_channels == 144
    dw = block.depthwise.conv
    assert dw.kernel_size == (5, 5) and dw.groups == dw.in_channels == dw.out_channels == 144
    assert dw.stride == (2, 2)
    assert isinstance(block.project.act, nn.Identity)  # linear bottleneck: no activation
    assert block.project.conv.out_channels == 40
    # Expansion 1 skips the expansion conv entirely (MobileNetV2's first bottleneck).
    assert isinstance(mbconv(32, 16, expand_ratio=1).expand, nn.Identity)


def test_projection_is_linear_so_outputs_can_be_negative():
    block = mbconv(8, 16, expand_ratio=6, activation="relu6").eval()
    out = block(torch.randn(4, 8, 8, 8))
    assert out.min() < 0  # an activation after the projection would clamp this at 0


def test_se_squeeze_width_comes_from_block_input_channels():
    block = mbconv(40, 80, expand_ratio=6, se_ratio=0.25)
    assert isinstance(block.se, SqueezeExcitation)
    assert block.se.reduce.in_channels == 240  # gates the expanded width
    assert block.se.reduce.out_channels == 10  # 0.25 * 40 (block input), not 0.25 * 240
    assert mbconv(2, 2, expand_ratio=1, se_ratio=0.25).se.reduce.out_channels == 1  # at least one


def test_squeeze_excitation_is_a_sigmoid_channel_gate():
    se = SqueezeExcitation(6, 2)
    x = torch.randn(3, 6, 5, 5)
    gate = torch.sigmoid(se.expand(se.act(se.reduce(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)
    assert ((se(x) / x - gate).abs() < 1e-5).all()


def test_fused_mbconv_with_expansion_1_is_one_conv_bn_act():
    block = fused(24, 24, expand_ratio=1, kernel=3)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].out_channels == 24
    assert isinstance(block.project, nn.Identity) and isinstance(block.se, nn.Identity)
    assert isinstance(block.expand.act, nn.SiLU)
    assert sum(p.numel() for p in block.parameters()) == 3 * 3 * 24 * 24 + 2 * 24


def test_fused_mbconv_with_expansion_replaces_expand_and_depthwise_by_one_kxk_conv():
    block = fused(24, 48, expand_ratio=4, kernel=3, stride=2)
    assert block.expand.conv.kernel_size == (3, 3) and block.expand.conv.groups == 1
    assert block.expand.conv.out_channels == 96 and block.expand.conv.stride == (2, 2)
    assert block.project.conv.kernel_size == (1, 1) and isinstance(block.project.act, nn.Identity)


def test_depthwise_separable_is_dw_then_pw_each_with_bn_and_act():
    block = separable(32, 64, stride=2, activation="relu6")
    assert block.depthwise.conv.groups == 32 and block.depthwise.conv.kernel_size == (3, 3)
    assert block.pointwise.conv.kernel_size == (1, 1) and block.pointwise.conv.out_channels == 64
    assert isinstance(block.depthwise.act, nn.ReLU6) and isinstance(block.pointwise.act, nn.ReLU6)
    assert block(torch.randn(1, 32, 9, 9)).shape == (1, 64, 5, 5)


def test_se_only_in_mbconv_stages_of_efficientnet_v2():
    model = effnet.create_model("efficientnet_v2_s")
    blocks = [b for stage in model.stages for b in stage]
    assert {type(b) for b in blocks} == {FusedMBConv, MBConv}
    for b in blocks:
        assert isinstance(b.se, SqueezeExcitation) == isinstance(b, MBConv)


def test_no_se_in_lite_and_mobilenet_v2():
    for name in ("efficientnet_lite0", "mobilenet_v2_100"):
        assert not any(isinstance(m, SqueezeExcitation) for m in effnet.create_model(name).modules())


# --- stochastic depth -------------------------------------------------------------------------


def test_drop_path_schedule_is_linear_in_block_index():
    rates = drop_path_schedule(0.2, 16)
    assert rates[0] == 0.0
    assert rates == pytest.approx([0.2 * i / 16 for i in range(16)])
    assert all(b > a for a, b in itertools.pairwise(rates))
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\)"):
        drop_path_schedule(1.0, 4)


def test_model_applies_the_schedule_to_its_blocks_in_order():
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.3)
    blocks = [b for stage in model.stages for b in stage]
    expected = drop_path_schedule(0.3, len(blocks))
    got = [b.drop_path.drop_rate if b.spec.residual else None for b in blocks]
    assert got == [r if b.spec.residual else None for r, b in zip(expected, blocks)]
    assert sum(b.spec.residual for b in blocks) == 9  # B0: 16 blocks, 9 with a shortcut


def test_stochastic_depth_drops_whole_samples_in_training_and_is_identity_in_eval():
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 2, 2)
    out = stochastic_depth(x, 0.25, training=True)
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()  # row mode
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)  # expectation preserved
    module = StochasticDepth(0.5).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="drop rate"):
        StochasticDepth(1.5)


# --- TensorFlow SAME padding --------------------------------------------------------------------


def _tf_same_output_and_padding(size: int, k: int, s: int) -> tuple[int, int, int]:
    # TensorFlow's documented rule: out = ceil(in / s); pad_total = max((out - 1) * s + k - in, 0),
    # pad_before = pad_total // 2, the remainder goes after.
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


@pytest.mark.parametrize("size", [7, 8, 15, 16, 100, 101, 224, 225])
@pytest.mark.parametrize("k, s", [(3, 1), (3, 2), (5, 2), (5, 1), (1, 2)])
def test_same_padding_matches_the_tensorflow_formula(size, k, s):
    out, before, after = _tf_same_output_and_padding(size, k, s)
    assert same_padding(size, k, s) == (before, after)
    conv = ConvNormAct(2, 2, k, s, padding="same").conv
    y = conv(torch.randn(1, 2, size, size + 1))
    assert y.shape[-2:] == (out, math.ceil((size + 1) / s))


def test_same_padding_puts_the_extra_pixel_right_and_bottom():
    conv = Conv2dSame(1, 1, 3, 2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)  # even size: pad (0, 1)
    torch.testing.assert_close(conv(x), expected)
    symmetric = F.conv2d(x, conv.weight, stride=2, padding=1)
    assert not torch.allclose(conv(x), symmetric)  # same shape, different alignment
    conv.freeze_padding((8, 8))
    torch.testing.assert_close(conv(x), expected)


def test_same_padding_model_at_sizes_that_are_not_multiples_of_32():
    model = effnet.create_model("efficientnet_lite0", padding="same", num_classes=7).eval()
    assert any(isinstance(m, Conv2dSame) for m in model.modules())
    x = torch.randn(2, 3, 75, 101)
    assert model(x).shape == (2, 7)
    maps = model.feature_maps(x)
    assert [m.shape[-2:] for m in maps] == [
        (math.ceil(75 / s), math.ceil(101 / s)) for s in (2, 4, 8, 16, 32)
    ]


# --- bad input ------------------------------------------------------------------------------------


def test_unsupported_stride_and_kernel_are_rejected():
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        mbconv(8, 8, expand_ratio=2, stride=3)
    with pytest.raises(ValueError, match="kernel size must be a positive odd integer"):
        fused(8, 8, expand_ratio=2, kernel=4)
    with pytest.raises(ValueError, match="expand_ratio must be >= 1"):
        mbconv(8, 8, expand_ratio=0.5)
    with pytest.raises(ValueError, match="unknown activation 'gelu'; allowed"):
        effnet.create_model("mobilenet_v2_100", activation="gelu")
    with pytest.raises(ValueError, match="padding must be one of"):
        effnet.create_model("mobilenet_v2_100", padding="valid")


def test_block_type_is_a_named_value():
    assert {s.block for s in effnet.model_config("efficientnet_v2_s").spec.stages} == {
        BlockType.FUSED_MBCONV,
        BlockType.MBCONV,
    }
