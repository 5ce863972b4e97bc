"""The block plan: one record per block, derived once, and the modules built from it agree."""

import pytest
import torch
from torch import nn

import effnet
from effnet.blocks import BLOCKS
from effnet.layers import SqueezeExcitation, StochasticDepth
from effnet.plan import BlockSpec, block_spec, expand
from effnet.tables import BlockType


@pytest.mark.parametrize("name, blocks, residual", [
    ("efficientnet_b0", 16, 9),
    ("mobilenet_v2_100", 17, 10),
    ("mobilenet_v1_100", 13, 0),
    ("efficientnet_v2_s", 40, 35),
])
def test_plan_pins_block_and_shortcut_counts(name, blocks, residual):
    plan = expand(effnet.model_config(name))
    assert len(plan.blocks) == blocks
    assert sum(b.residual for b in plan.blocks) == residual
    assert [b.index for b in plan.blocks] == list(range(blocks))


def test_b0_plan_reads_like_table_1():
    plan = expand(effnet.model_config("efficientnet_b0", drop_path_rate=0.2))
    first, second, last = plan.blocks[0], plan.blocks[1], plan.blocks[-1]
    assert (first.in_channels, first.mid_channels, first.out_channels, first.se_channels) == (32, 32, 16, 8)
    assert not first.has_expand and not first.residual
    assert (second.in_channels, second.mid_channels, second.out_channels, second.stride) == (16, 96, 24, 2)
    assert second.se_channels == 4  # 0.25 of the block *input*, not of the expanded width
    assert (last.kernel, last.out_channels, last.stage) == (3, 320, 6)
    # Drop rates: linear in the block index, and 0 where there is no shortcut to drop.
    assert [b.drop_path_rate for b in plan.blocks if b.residual] == pytest.approx(
        [0.2 * b.index / 16 for b in plan.blocks if b.residual])
    assert all(b.drop_path_rate == 0 for b in plan.blocks if not b.residual)
    assert plan.output_stride == 32 and plan.head.conv_channels == 1280 and plan.head.num_features == 1280


@pytest.mark.parametrize("in_ch, out_ch, stride, residual", [(16, 16, 1, True), (16, 24, 1, False),
                                                             (16, 16, 2, False)])
def test_residual_only_when_stride_1_and_in_equals_out(in_ch, out_ch, stride, residual):
    for kind in (BlockType.MBCONV, BlockType.FUSED_MBCONV):
        assert block_spec(kind, in_ch, out_ch, expand_ratio=4, stride=stride).residual is residual
    assert not block_spec(BlockType.DEPTHWISE_SEPARABLE, in_ch, out_ch, stride=stride).residual


def test_se_only_in_mbconv_stages_of_v2():
    plan = expand(effnet.model_config("efficientnet_v2_s"))
    assert all(b.has_se == (b.block is BlockType.MBCONV) for b in plan.blocks)


def test_fused_with_expansion_1_has_no_projection():
    spec = block_spec(BlockType.FUSED_MBCONV, 32, 16, expand_ratio=1)
    assert spec.mid_channels == 16 and not spec.has_project


def _check_module_against_spec(module: nn.Module, b: BlockSpec) -> None:
    assert isinstance(module, BLOCKS[b.block]) and module.spec == b
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    main = [c for c in convs if not any(c is m for se in module.modules()
                                        if isinstance(se, SqueezeExcitation) for m in se.modules())]
    assert main[0].in_channels == b.in_channels and main[-1].out_channels == b.out_channels
    assert max(c.kernel_size[0] for c in main) == b.kernel
    assert max(c.stride[0] for c in main) == b.stride
    widths = {c.out_channels for c in main[:-1]} | {c.in_channels for c in main[1:]}
    assert widths <= {b.mid_channels, b.in_channels}
    se = [m for m in module.modules() if isinstance(m, SqueezeExcitation)]
    assert [s.reduce.out_channels for s in se] == ([b.se_channels] if b.has_se else [])
    drops = [m.drop_rate for m in module.modules() if isinstance(m, StochasticDepth)]
    assert drops == ([b.drop_path_rate] if b.residual else [])


@pytest.mark.parametrize("name", effnet.list_models())
def test_model_plan_agrees_with_its_modules(name):
    with torch.device("meta"):  # shapes only: L2 and V2-XL would take a minute on the CPU
        model = effnet.create_model(name, drop_path_rate=0.1)
    blocks = [m for stage in model.stages for m in stage]
    assert len(blocks) == len(model.plan.blocks)
    for module, b in zip(blocks, model.plan.blocks):
        _check_module_against_spec(module, b)
    assert model.stem.conv.out_channels == model.plan.stem.out_channels
    assert model.num_features == model.plan.head.num_features
    assert model.plan == expand(model.config)
