"""Parity with torchvision and timm: key maps for every peer, numeric equality for a representative set.

Numeric runs (random init, no download, one thread, 65x80 inputs): every naming scheme, family and
padding, and every peer up to B4 size (``NUMERIC``: ~1 s each).  The large ones (B5-B8, L2, V2-S/M/L/XL
except one V2-S per source) differ from those only in table values; for them every key name and shape
is checked in both directions on the meta device (``test_every_peer_maps_key_for_key_on_meta``),
which is where a scaled variant could go wrong, without their memory and minutes of CPU time.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import effnet
from effnet.model import EfficientConvNet
from effnet.weights import (
    PEERS,
    CheckpointError,
    convert_state_dict,
    export_peer,
    export_state_dict,
    peer_arch,
    source_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

timm = pytest.importorskip("timm")  # a declared test dependency (pyproject [test]); torchvision is core
torchvision = pytest.importorskip("torchvision")

NUMERIC = [
    ("torchvision", "mobilenet_v2"),
    ("torchvision", "efficientnet_b0"),
    ("torchvision", "efficientnet_v2_s"),
    ("timm", "mobilenetv1_100"),
    ("timm", "mobilenetv2_035"),
    ("timm", "efficientnet_b0"),
    ("timm", "efficientnet_lite0"),
    ("timm", "efficientnetv2_s"),
    ("timm", "tf_efficientnet_b0"),
    ("timm", "tf_efficientnet_lite0"),
    ("timm", "tf_efficientnetv2_b0"),
    # The rest up to B4 size: scaled widths/depths of the schemes above.
    *(("torchvision", f"efficientnet_b{i}") for i in (1, 2, 3, 4)),
    *(("timm", f"mobilenetv2_{w}") for w in ("050", "075", "100", "140")),
    *(("timm", f"{tf}efficientnet_{k}") for tf in ("", "tf_") for k in ("b1", "b2", "b3", "b4")),
    *(("timm", f"{tf}efficientnet_lite{i}") for tf in ("", "tf_") for i in (1, 2, 3, 4)),
    *(("timm", f"tf_efficientnetv2_b{i}") for i in (1, 2, 3)),
]
# Odd height: SAME padding is asymmetric there, so the TF ports' padding is really exercised.
INPUT = (2, 3, 65, 80)


def build_peer(source: str, name: str) -> torch.nn.Module:
    """The peer model with random init and every dropout / drop-path off."""
    if source == "timm":
        return timm.create_model(name, pretrained=False, drop_rate=0.0, drop_path_rate=0.0)
    builder = getattr(torchvision.models, name)
    if name == "mobilenet_v2":
        return builder(weights=None, dropout=0.0)
    return builder(weights=None, dropout=0.0, stochastic_depth_prob=0.0)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every tensor distinct values, so a swapped pair of same-shaped tensors changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()


def ours_from_peer(peer: torch.nn.Module, source: str, name: str) -> EfficientConvNet:
    sd = peer.state_dict()
    config = dataclasses.replace(source_config(sd, source, name), drop_rate=0.0, drop_path_rate=0.0)
    model = EfficientConvNet(config)
    model.load_state_dict(convert_state_dict(sd, source, name))
    return model


@pytest.mark.parametrize(("source", "name"), NUMERIC, ids=[f"{s}-{n}" for s, n in NUMERIC])
def test_outputs_and_training_step_match_peer(source, name):
    torch.manual_seed(0)
    peer = build_peer(source, name)
    randomize(peer)
    ours = ours_from_peer(peer, source, name)
    assert ours.config.padding == PEERS[(source, name)].padding
    x = torch.randn(INPUT)

    peer.eval(), ours.eval()
    with torch.no_grad():
        want, got = peer(x), ours(x)
    assert got.shape == want.shape == (2, 1000)
    assert rel_err(got, want) <= 1e-5

    # One SGD step in training mode: batch statistics, BN running stats, gradients and updates agree.
    peer.train(), ours.train()
    target = torch.randint(0, 1000, (INPUT[0],), generator=torch.Generator().manual_seed(1))
    for m in (peer, ours):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        torch.nn.functional.cross_entropy(m(x), target).backward()
        opt.step()
    after = convert_state_dict(peer.state_dict(), source, name)
    mine = ours.state_dict()
    assert after.keys() == mine.keys()
    for k, v in mine.items():
        if v.is_floating_point():
            assert rel_err(v, after[k]) <= 1e-5, k
        else:
            assert torch.equal(v, after[k]), k
    # Round trip ours -> peer -> ours is exact, and the peer accepts the exported dict strictly.
    exported = export_state_dict(ours, source)
    peer.load_state_dict(exported, strict=True)
    back = convert_state_dict(peer.state_dict(), source, name)
    assert all(torch.equal(back[k], v) for k, v in mine.items())


def test_tf_port_needs_same_padding():
    """The comparison is sensitive: TF weights in a symmetric-padding model give visibly other outputs."""
    peer = build_peer("timm", "tf_efficientnet_lite0").eval()
    randomize(peer)
    wrong = effnet.create_model("efficientnet_lite0", bn_eps=1e-3, drop_rate=0.0).eval()
    wrong.load_state_dict(convert_state_dict(peer.state_dict(), "timm", "tf_efficientnet_lite0"))
    x = torch.randn(INPUT)
    with torch.no_grad():
        assert rel_err(wrong(x), peer(x)) > 1e-3


@pytest.mark.parametrize("key", sorted(PEERS), ids=[f"{s}-{n}" for s, n in sorted(PEERS)])
def test_every_peer_maps_key_for_key_on_meta(key):
    source, name = key
    with torch.device("meta"):
        peer = (timm.create_model(name, pretrained=False) if source == "timm"
                else getattr(torchvision.models, name)(weights=None))
    peer_sd = peer.state_dict()
    converted = convert_state_dict(peer_sd, source, name)
    config = source_config(peer_sd, source, name)
    with torch.device("meta"):
        ours = EfficientConvNet(config)
    ours_sd = ours.state_dict()
    assert converted.keys() == ours_sd.keys()
    assert all(converted[k].shape == v.shape for k, v in ours_sd.items())
    # Reverse direction: names and shapes the peer accepts strictly, for the peer export_peer picks.
    assert export_peer(ours, source).name == name
    exported = export_state_dict(ours, source)
    assert exported.keys() == peer_sd.keys()
    assert all(exported[k].shape == v.shape for k, v in peer_sd.items())
    peer.load_state_dict(exported, strict=True, assign=True)


def test_conversion_settings_per_peer():
    tf = peer_arch("timm", "tf_efficientnet_b0")
    assert (tf.model, tf.padding, tf.bn_eps) == ("efficientnet_b0", "same", 1e-3)
    assert peer_arch("timm", "efficientnet_b0").model_kwargs() == {"padding": "symmetric", "bn_eps": 1e-5,
                                                                   "bn_momentum": 0.1}
    assert peer_arch("torchvision", "efficientnet_v2_s").bn_eps == 1e-3
    assert peer_arch("torchvision", "mobilenet_v2_100").name == "mobilenet_v2"  # our name resolves too
    config = source_config({"classifier.weight": torch.zeros(10, 1280)}, "timm", "tf_efficientnet_b0")
    assert (config.num_classes, config.padding, config.bn_eps) == (10, "same", 1e-3)


def _tv_b0_state_dict() -> dict:
    with torch.device("meta"):
        return torchvision.models.efficientnet_b0(weights=None).state_dict()


def test_wrong_family_is_one_error_listing_keys():
    sd = _tv_b0_state_dict()
    with pytest.raises(CheckpointError) as e:
        convert_state_dict(sd, "torchvision", "efficientnet_v2_s")
    msg = str(e.value)
    assert "\n" not in msg and "missing keys" in msg and "unexpected keys" in msg and "more" in msg


def test_missing_extra_and_shape_mismatch_are_named():
    sd = dict(_tv_b0_state_dict())
    del sd["features.1.0.block.1.fc1.weight"]
    sd["features.9.weight"] = torch.zeros(1)
    sd["features.0.1.weight"] = torch.zeros(33)
    with pytest.raises(CheckpointError) as e:
        convert_state_dict(sd, "torchvision", "efficientnet_b0")
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing keys (1): features.1.0.block.1.fc1.weight" in msg
    assert "unexpected keys (1): features.9.weight" in msg
    assert "features.0.1.weight (33,) vs (32,)" in msg


def test_bn_counters_absent_from_tf_ports_are_filled():
    sd = {k: v for k, v in _tv_b0_state_dict().items() if not k.endswith("num_batches_tracked")}
    out = convert_state_dict(sd, "torchvision", "efficientnet_b0")
    assert out["stem.norm.num_batches_tracked"].item() == 0


def test_unknown_names_and_sources_are_clear():
    with pytest.raises(ValueError, match="did you mean tf_efficientnet_b0"):
        peer_arch("timm", "tf_efficientnet_b00")
    with pytest.raises(ValueError, match="no effnet model holds timm 'mobilenetv2_110d'"):
        peer_arch("timm", "mobilenetv2_110d")
    with pytest.raises(ValueError, match="source must be one of torchvision, timm"):
        convert_state_dict({}, "keras", "efficientnet_b0")
    with pytest.raises(TypeError, match="mapping"):
        convert_state_dict([1, 2], "timm", "efficientnet_b0")


def test_export_refuses_what_the_target_cannot_hold():
    with torch.device("meta"):
        same = effnet.create_model("efficientnet_b0", padding="same")
        lite = effnet.create_model("efficientnet_lite0")
        wide = effnet.create_model("efficientnet_b0", width=1.5)
    with pytest.raises(ValueError, match="torchvision has no efficientnet_b0 with padding='same'"):
        export_state_dict(same, "torchvision")
    assert export_peer(same, "timm").name == "tf_efficientnet_b0"
    with pytest.raises(ValueError, match="torchvision has no architecture equal"):
        export_state_dict(lite, "torchvision")
    with pytest.raises(ValueError, match="no architecture equal"):
        export_state_dict(wide, "timm")


def test_conversion_needs_no_timm(monkeypatch):
    """effnet.weights never imports timm: a timm state dict converts with timm absent."""
    with torch.device("meta"):
        ours = effnet.create_model("efficientnet_lite0", bn_eps=1e-3, padding="same")
    sd = export_state_dict(ours, "timm")
    monkeypatch.setitem(__import__("sys").modules, "timm", None)
    out = convert_state_dict(sd, "timm", "tf_efficientnet_lite0")
    assert out.keys() == ours.state_dict().keys()
