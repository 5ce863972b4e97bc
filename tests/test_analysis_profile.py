"""effnet.analysis.profile: counts checked against FlopCounterMode, hand arithmetic and the notes' formulas."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import effnet
from effnet.analysis import (
    KINDS,
    depthwise_conv_macs,
    pointwise_conv_macs,
    profile,
    separable_conv_macs,
    separable_conv_params,
    separable_ratio,
    standard_conv_macs,
    standard_conv_params,
)
from effnet.blocks import DepthwiseSeparable
from effnet.plan import block_spec
from effnet.tables import BlockType

ADDITIVE = ("layers", "params", "macs", "flops", "activations", "bytes_read", "bytes_written", "bytes")


def flop_counter_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """PyTorch's own count on a meta copy, halved (FlopCounterMode's FLOPs are 2 x MACs)."""
    with torch.device("meta"):
        x = torch.empty(shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def meta(build):
    with torch.device("meta"):
        return build()


# --- the notes' cost formulas against the profiler ------------------------------------------------

@pytest.mark.parametrize("k, c_in, c_out, size, stride", [(3, 32, 64, 28, 1), (5, 24, 40, 17, 2), (3, 16, 16, 9, 2),
                                                          (7, 8, 128, 12, 1)])
def test_separable_formula_matches_a_real_depthwise_pointwise_pair(k, c_in, c_out, size, stride):
    pair = nn.Sequential(nn.Conv2d(c_in, c_in, k, stride, padding=k // 2, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))
    standard = nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False)
    p, q = profile(pair, (c_in, size, size)), profile(standard, (c_in, size, size))
    h, w = p.layers[0].output_shape[-2:]  # the notes' H, W are the output size
    assert [r.kind for r in p.layers] == ["depthwise", "pointwise"]
    assert p.layers[0].macs == depthwise_conv_macs(k, c_in, h, w)
    assert p.layers[1].macs == pointwise_conv_macs(c_in, c_out, h, w)
    assert p.totals()["macs"] == separable_conv_macs(k, c_in, c_out, h, w) == flop_counter_macs(pair, (1, c_in, size, size))
    assert q.totals()["macs"] == standard_conv_macs(k, c_in, c_out, h, w)
    assert p.totals()["params"] == separable_conv_params(k, c_in, c_out)
    assert q.totals()["params"] == standard_conv_params(k, c_in, c_out)
    # The ratio is exactly 1/C_out + 1/K^2, whatever C_in, H and W are.
    assert Fraction(p.totals()["macs"], q.totals()["macs"]) == separable_ratio(k, c_out) == (
        Fraction(1, c_out) + Fraction(1, k * k))


def test_separable_formula_on_the_zoo_block():
    block = DepthwiseSeparable(block_spec(BlockType.DEPTHWISE_SEPARABLE, 32, 64, kernel=3, stride=2))
    p = profile(block, (32, 56, 56))
    conv = [r for r in p.layers if r.macs]
    assert [(r.name, r.kind) for r in conv] == [("depthwise.conv", "depthwise"), ("pointwise.conv", "pointwise")]
    assert p.totals()["macs"] == separable_conv_macs(3, 32, 64, 28, 28)


def test_formulas_reject_bad_dimensions():
    with pytest.raises(ValueError, match="c_out must be a positive integer"):
        standard_conv_macs(3, 8, 0, 4, 4)
    with pytest.raises(ValueError, match="k must be"):
        separable_ratio(2.5, 8)


# --- per-layer records on the zoo's blocks -------------------------------------------------------

def test_v2_kinds_names_blocks_and_stages():
    p = profile(meta(lambda: effnet.create_model("efficientnet_v2_s")), 64)
    rec = {r.name: r for r in p.layers}
    assert rec["stem.conv"].kind == "conv" and rec["stem.conv"].stage == "stem"
    assert rec["stages.1.0.expand.conv"].kind == "fused-conv"  # Fused-MBConv's kxk expand
    assert rec["stages.0.0.expand.conv"].kind == "fused-conv"  # expansion 1: the single kxk conv
    assert rec["stages.1.0.project.conv"].kind == "pointwise"
    assert rec["stages.3.0.expand.conv"].kind == "pointwise"
    assert rec["stages.3.0.depthwise.conv"].kind == "depthwise"
    for part in ("reduce", "act", "expand", "mean", "sigmoid", "mul"):  # modules and functional ops of SE
        r = rec[f"stages.3.0.se.{part}"]
        assert r.kind == "se" and r.block == "stages.3.0" and r.stage == "stages.3", part
    add = rec["stages.3.1.add"]  # the residual add is functional, caught by the dispatch mode
    assert (add.kind, add.block, add.stage, add.input_shape, add.output_shape) == (
        "add", "stages.3.1", "stages.3", add.output_shape, add.output_shape)
    assert "stages.3.0.add" not in rec  # stride 2: no shortcut
    assert rec["head.conv"].kind == "pointwise" and rec["classifier"].kind == "linear"
    assert rec["pool"].kind == "pool"
    assert {r.kind for r in p.layers} <= set(KINDS)
    assert not any(r.kind == "other" for r in p.layers)
    assert len({r.name for r in p.layers}) == len(p.layers)


def test_bytes_activations_and_intensity_by_hand():
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=True)
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        r = profile(conv, (8, 10, 10), dtype, batch_size=2).layers[0]
        inputs, weights, outputs = 2 * 8 * 100, 16 * 8 * 9 + 16, 2 * 16 * 100
        assert r.macs == outputs * 8 * 9
        assert (r.bytes_read, r.bytes_written) == (size * (inputs + weights), size * outputs)
        assert r.activations == outputs and r.params == weights
        assert r.intensity == pytest.approx(2 * r.macs / (size * (inputs + weights + outputs)))
    bn = profile(nn.BatchNorm2d(8), (8, 4, 4)).layers[0]  # weight, bias, running mean and var: 4 x 8 read
    assert (bn.kind, bn.bytes_read, bn.bytes_written, bn.macs, bn.intensity) == ("norm-act", 4 * (128 + 32), 4 * 128, 0, 0)


def test_rollups_add_up_to_the_totals():
    p = profile(meta(lambda: effnet.create_model("efficientnet_b0")), 96)
    totals = p.totals()
    for rollup in (p.by_kind(), p.by_block(), p.by_stage()):
        for key in ADDITIVE:
            assert sum(g[key] for g in rollup.values()) == totals[key], key
    assert list(p.by_stage()) == ["stem", *[f"stages.{i}" for i in range(7)], "head", "pool", "classifier"]
    assert "stages.1.1" in p.by_block() and p.by_block()["stages.1.1"]["layers"] > 5
    assert p.by_kind()["se"]["params"] > 0 and p.by_kind()["depthwise"]["macs"] > 0


# --- any nn.Module ------------------------------------------------------------------------------

@pytest.mark.parametrize("build, adds", [(torchvision.models.resnet50, 16), (torchvision.models.mobilenet_v2, 10),
                                         (torchvision.models.efficientnet_b0, 9)])
def test_torchvision_models(build, adds):
    model = meta(build)
    p = profile(model, 224)
    assert p.totals()["macs"] == flop_counter_macs(model, (1, 3, 224, 224))
    assert p.totals()["params"] == sum(q.numel() for q in model.parameters())
    assert sum(r.kind == "add" for r in p.layers) == adds
    assert len({r.name for r in p.layers}) == len(p.layers)


def test_tf_same_padding_counts_the_same_macs():
    # Conv2dSame pads inside its forward: the pad belongs to the conv's record, the MACs stay exact.
    model = meta(lambda: effnet.create_model("efficientnet_b0", padding="same"))
    p = profile(model, 65)
    assert p.totals()["macs"] == flop_counter_macs(model, (1, 3, 65, 65))
    assert p.totals()["macs"] == profile(meta(lambda: effnet.create_model("efficientnet_b0")), 65).totals()["macs"]
    assert p.get("stages.1.0.depthwise.conv").kind == "depthwise" and not any(r.kind == "other" for r in p.layers)


def test_module_called_twice_gets_two_records():
    p = profile(meta(torchvision.models.resnet18), 64)
    names = [r.name for r in p.layers if r.name.startswith("layer1.0.relu")]
    assert names == ["layer1.0.relu", "layer1.0.relu#1"]  # BasicBlock reuses one ReLU


def test_shared_and_unused_parameters_are_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = nn.Linear(16, 16)
            self.b.weight = self.a.weight  # weight tying
            self.spare = nn.Linear(16, 4)  # never called
            self.scale = nn.Parameter(torch.ones(16))  # used functionally by the container

        def forward(self, x):
            return self.b(self.a(x)) * self.scale

    m = Tied()
    p = profile(m, (16,))
    assert p.totals()["params"] == sum(q.numel() for q in m.parameters())
    assert p.totals()["macs"] == 2 * 16 * 16 == flop_counter_macs(meta(Tied), (1, 16))
    assert p.get("b").params == 16  # the tied weight went to "a", only the bias is new
    assert p.get("mul").params == 16 and p.get("spare").kind == "other"


def test_meta_matches_a_real_cpu_run_and_leaves_the_model_alone():
    model = effnet.create_model("mobilenet_v1_025").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    on_meta, on_cpu = profile(model, 64), profile(model, 64, device="cpu")
    assert on_meta.layers == on_cpu.layers
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_input_size_forms_and_batch():
    model = meta(lambda: effnet.create_model("mobilenet_v1_025", in_chans=1))
    a, b, c = profile(model, 32), profile(model, (32, 32)), profile(model, (1, 32, 32), batch_size=3)
    assert a.input_size == b.input_size == (1, 1, 32, 32) and c.input_size == (3, 1, 32, 32)
    assert a.layers == b.layers
    assert c.totals()["macs"] == 3 * a.totals()["macs"] and c.totals()["params"] == a.totals()["params"]


def test_bad_input_is_a_clear_error():
    model = meta(lambda: effnet.create_model("mobilenet_v1_025"))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\)"):  # the model's own check
        profile(model, (5, 32, 32))
    with pytest.raises(ValueError, match=r"forward pass failed for input shape \(1, 5, 32, 32\): "):
        profile(nn.Conv2d(3, 8, 3), (5, 32, 32))
    with pytest.raises(ValueError, match="batch_size"):
        profile(model, 32, batch_size=0)
    with pytest.raises(TypeError, match="floating torch.dtype"):
        profile(model, 32, torch.int8)
    with pytest.raises(ValueError, match="input_size"):
        profile(model, (0, 32))
    with pytest.raises(TypeError, match="nn.Module"):
        profile(lambda x: x, 32)
    with pytest.raises(ValueError, match="input channels"):
        profile(nn.Sequential(nn.ReLU()), 8)


# --- effnet models: what a layer is comes from the block plan -------------------------------------

def test_roles_and_kinds_come_from_the_plan():
    model = meta(lambda: effnet.create_model("efficientnet_b0"))
    p = profile(model, 64)
    rec = {r.name: r for r in p.layers}
    assert (rec["stem.conv"].role, rec["head.conv"].role, rec["classifier"].role) == ("stem", "head", "classifier")
    for spec in model.plan.blocks:
        block = f"stages.{spec.stage}.{model.plan.stage_blocks(spec.stage).index(spec)}"
        mine = [r for r in p.layers if r.block == block]
        roles = {r.role for r in mine}
        assert ("se" in roles) == spec.has_se and ("expand" in roles) == spec.has_expand, block
        assert any(r.role == "shortcut" and r.kind == "add" for r in mine) == spec.residual, block
        assert rec[f"{block}.depthwise.conv"].kind == "depthwise" and rec[f"{block}.project.conv"].kind == "pointwise"
    assert sum(r.role == "shortcut" for r in p.layers) == 9  # B0: 9 of its 16 blocks have a shortcut


def test_the_plan_not_the_class_name_says_a_fused_block_is_fused():
    model = meta(lambda: effnet.create_model("efficientnet_v2_s"))
    block = model.stages[1][0]
    block.__class__ = type("Renamed", (type(block),), {})  # a name no class-name rule would call fused
    assert profile(model, 64).get("stages.1.0.expand.conv").kind == "fused-conv"
    # a model outside effnet with the same module takes the generic path: there the name decides
    generic = nn.Sequential(block)
    assert profile(generic, (24, 16, 16)).get("0.expand.conv").kind == "conv"


def test_a_lone_block_is_read_from_its_spec():
    block = DepthwiseSeparable(block_spec(BlockType.DEPTHWISE_SEPARABLE, 8, 16))
    rec = {r.name: r for r in profile(block, (8, 8, 8)).layers}
    assert (rec["depthwise.conv"].role, rec["pointwise.conv"].role) == ("depthwise", "pointwise")


def test_full_nchw_input_size_as_torchinfo_writes_it():
    model = meta(lambda: effnet.create_model("mobilenet_v1_025"))
    full, split = profile(model, (4, 3, 32, 32)), profile(model, 32, batch_size=4)
    assert full.input_size == split.input_size == (4, 3, 32, 32) and full.layers == split.layers
    assert profile(model, (4, 3, 32, 32), batch_size=4).input_size == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="says batch 4, but batch_size=2"):
        profile(model, (4, 3, 32, 32), batch_size=2)
