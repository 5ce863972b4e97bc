"""Published checkpoints: the recorded table against installed torchvision/timm, the hub cache, downloads.

No test reaches the internet: files are placed in a temporary hub cache, and the real download code
(torch.hub.download_url_to_file) is run against ``file://`` URLs of files the test writes.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import save_file

import effnet
from effnet.weights import (
    PEERS,
    PUBLISHED,
    CheckpointError,
    Published,
    export_state_dict,
    fetch,
    resolve_published,
)
from effnet.weights.hub import list_published
from support import randomized_model


@pytest.fixture()
def hub_dir(tmp_path, monkeypatch):
    """A fresh PyTorch hub cache under TORCH_HOME, as a user would set it; downloads are forbidden."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so TORCH_HOME decides, even if set_dir ran before
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected download: {args[0]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_table_matches_installed_enums():
    models = pytest.importorskip("torchvision").models
    recorded = {p.name: p for p in PUBLISHED.values() if p.source == "torchvision"}
    expected = set()
    for (source, arch) in PEERS:
        if source != "torchvision":
            continue
        enum = models.get_model_weights(arch)
        for w in enum:
            pub = recorded[f"torchvision/{arch}.{w.name}"]
            expected.add(pub.name)
            assert pub.url == w.url
            assert pub.default == (w is enum.DEFAULT)
            assert pub.hash_prefix and pub.url.endswith(f"-{pub.hash_prefix}.pth")
    assert set(recorded) == expected


def test_timm_table_matches_installed_pretrained_cfgs():
    timm = pytest.importorskip("timm")
    from timm.models import get_pretrained_cfg

    recorded = {p.name: p for p in PUBLISHED.values() if p.source == "timm"}
    expected = set()
    for (source, arch) in PEERS:
        if source != "timm":
            continue
        for model_tag in timm.list_models(arch, pretrained=True):
            cfg = get_pretrained_cfg(model_tag)
            if not cfg.hf_hub_id:
                continue
            pub = recorded[f"timm/{model_tag}"]
            expected.add(pub.name)
            assert cfg.hf_hub_id == f"timm/{model_tag}"
            assert pub.url == f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
            assert pub.num_classes == cfg.num_classes
        defaults = [p.tag for p in recorded.values() if p.arch == arch and p.default]
        if defaults:  # timm's default tag: the one timm.create_model(arch, pretrained=True) loads
            first = timm.models.get_pretrained_cfg(arch)
            assert f"{arch}.{defaults[0]}" == f"{arch}.{first.tag}"
    assert set(recorded) == expected


def test_names_resolve():
    tv_b0 = resolve_published("torchvision", "efficientnet_b0")
    assert tv_b0.name == "torchvision/efficientnet_b0.IMAGENET1K_V1"
    assert resolve_published("torchvision", "mobilenet_v2_100").tag == "IMAGENET1K_V2"  # torchvision DEFAULT
    assert resolve_published("timm", "efficientnet_b0").name == "timm/efficientnet_b0.ra_in1k"
    # timm has only the TF port of B6 with weights:
    assert resolve_published("timm", "efficientnet_b6").arch == "tf_efficientnet_b6"
    assert resolve_published("timm/tf_efficientnet_b0", "efficientnet_b0").tag == "ns_jft_in1k"
    with pytest.raises(ValueError, match="is for effnet model 'efficientnet_b0', not 'efficientnet_b1'"):
        resolve_published("timm/tf_efficientnet_b0.ap_in1k", "efficientnet_b1")
    with pytest.raises(ValueError, match="did you mean timm/tf_efficientnet_b0.ap_in1k"):
        resolve_published("timm/tf_efficientnet_b0.ap_in1kk", "efficientnet_b0")
    with pytest.raises(ValueError, match="publishes no weights for 'mobilenet_v1_025'"):
        resolve_published("timm", "mobilenet_v1_025")
    assert "timm/tf_efficientnet_lite0.in1k" in list_published("efficientnet_lite0")


def test_cached_timm_tf_port_loads_with_same_padding(hub_dir):
    pub = PUBLISHED["timm/tf_efficientnet_lite0.in1k"]
    assert pub.cache_path() == hub_dir / "timm--tf_efficientnet_lite0.in1k.safetensors"
    ref = randomized_model("efficientnet_lite0", padding="same", bn_eps=1e-3)
    hub_dir.mkdir(parents=True)
    save_file(export_state_dict(ref, "timm"), str(pub.cache_path()))  # "placed by hand"
    model = effnet.create_model("efficientnet_lite0", weights="timm/tf_efficientnet_lite0.in1k")
    assert (model.config.padding, model.config.bn_eps) == ("same", 1e-3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.state_dict().items())
    with pytest.raises(ValueError, match="trained with bn_eps=0.001"):
        effnet.create_model("efficientnet_lite0", weights="timm/tf_efficientnet_lite0.in1k", bn_eps=1e-5)


def test_damaged_cache_file_says_how_to_recover(hub_dir):
    pub = PUBLISHED["timm/efficientnet_lite0.ra_in1k"]
    hub_dir.mkdir(parents=True)
    pub.cache_path().write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="delete it to download timm/efficientnet_lite0.ra_in1k again"):
        effnet.create_model("efficientnet_lite0", weights="timm")
    assert pub.cache_path().read_bytes() == b"\x00" * 10  # left for the user to inspect


def test_cached_torchvision_pth_loads(hub_dir):
    pub = resolve_published("torchvision", "mobilenet_v2_100")
    ref = randomized_model("mobilenet_v2_100")
    hub_dir.mkdir(parents=True)
    torch.save(export_state_dict(ref, "torchvision"), pub.cache_path())
    model = effnet.create_model("mobilenet_v2_100", weights="torchvision", num_classes=1000)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.state_dict().items())


def _serve(tmp_path, monkeypatch, name: str, payload: bytes, *, hash_prefix: str | None) -> Published:
    """Point published checkpoint ``name`` at a local file:// URL holding ``payload``."""
    src = tmp_path / "served.bin"
    src.write_bytes(payload)
    pub = dataclasses.replace(PUBLISHED[name], url=src.as_uri(), hash_prefix=hash_prefix)
    monkeypatch.setitem(PUBLISHED, name, pub)
    return pub


def test_real_download_code_fills_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # torch.hub.set_dir, undone after
    ref = randomized_model("mobilenet_v2_100")
    torch.save(export_state_dict(ref, "torchvision"), tmp_path / "ckpt.pth")
    payload = (tmp_path / "ckpt.pth").read_bytes()
    digest = hashlib.sha256(payload).hexdigest()[:8]
    pub = _serve(tmp_path, monkeypatch, "torchvision/mobilenet_v2.IMAGENET1K_V2", payload, hash_prefix=digest)
    model = effnet.create_model("mobilenet_v2_100", weights=pub.name)
    assert pub.cache_path().read_bytes() == payload
    assert torch.equal(model.stem.conv.weight, ref.stem.conv.weight)
    assert fetch(pub) == pub.cache_path()  # second time: from the cache


def test_bad_hash_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    name = "torchvision/efficientnet_b0.IMAGENET1K_V1"
    pub = _serve(tmp_path, monkeypatch, name, b"tampered", hash_prefix="0000")
    with pytest.raises(CheckpointError, match="integrity check") as e:
        effnet.create_model("efficientnet_b0", weights="torchvision", progress=False)
    assert "\n" not in str(e.value)
    assert not any(pub.cache_path().parent.iterdir())


def test_offline_error_names_url_and_cache_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    name = "timm/efficientnet_b0.ra_in1k"
    real_url = PUBLISHED[name].url
    missing = dataclasses.replace(PUBLISHED[name], url=(tmp_path / "unreachable").as_uri())
    monkeypatch.setitem(PUBLISHED, name, missing)
    with pytest.raises(ConnectionError) as e:
        effnet.create_model("efficientnet_b0", weights="timm", progress=False)
    msg = str(e.value)
    assert missing.url in msg and str(missing.cache_path()) in msg and "\n" not in msg
    assert real_url == "https://huggingface.co/timm/efficientnet_b0.ra_in1k/resolve/main/model.safetensors"
    assert not missing.cache_path().exists()
