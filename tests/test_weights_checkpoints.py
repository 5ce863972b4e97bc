"""Our safetensors checkpoints, safe reading of user files, and create_model(weights=<local file>)."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch
from safetensors.torch import save_file

import effnet
from effnet.weights import CheckpointError, export_state_dict
from effnet.weights.checkpoints import load, read_checkpoint, save
from support import randomized_model

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes: "nothing changed on disk" is equality of two of these."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_save_load_round_trip_rebuilds_the_model(tmp_path):
    model = randomized_model("efficientnet_lite0", num_classes=10, padding="same", bn_eps=1e-3)
    path = tmp_path / "lite.safetensors"
    save(model, path)
    _, metadata = read_checkpoint(path)
    assert (metadata["format"], metadata["format_version"], metadata["kind"]) == ("effnet", "2", "model")
    assert json.loads(metadata["config"])["padding"] == "same"
    loaded = effnet.weights.load(path)
    assert loaded.config == model.config and loaded.config.name == "efficientnet_lite0"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))
    assert [p.name for p in tmp_path.iterdir()] == ["lite.safetensors"]  # no temp file left behind


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save(randomized_model("mobilenet_v1_025"), path)
    before = snapshot(tmp_path)

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save(randomized_model("mobilenet_v1_050"), path)
    assert snapshot(tmp_path) == before


def _bad_files(tmp_path) -> dict:
    good = tmp_path / "good.safetensors"
    save(randomized_model("mobilenet_v1_025"), good)
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00not a checkpoint at all" * 10)
    torch.save(randomized_model("mobilenet_v1_025").state_dict(), tmp_path / "sd.pt")
    pt = (tmp_path / "sd.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(pt[: len(pt) // 2])
    (tmp_path / "sd.pt").unlink()
    # Metadata says efficientnet_b0, tensors are a MobileNetV1's: a wrong-model file.
    b0 = effnet.model_config("efficientnet_b0")
    save_file(dict(randomized_model("mobilenet_v1_025").state_dict()), str(tmp_path / "wrong.safetensors"),
              metadata={"format": "effnet", "format_version": "1", "model": "efficientnet_b0",
                        "config": json.dumps(b0.to_dict())})
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    (tmp_path / "empty.pt").write_bytes(b"")
    good.unlink()
    return {
        "truncated.safetensors": "truncated safetensors file",
        "garbage.safetensors": "not a safetensors file",
        "truncated.pt": "corrupt or truncated PyTorch file",
        "wrong.safetensors": "does not fit: missing keys",
        "plain.safetensors": "not an effnet file",
        "empty.pt": "empty file (0 bytes)",
    }


def test_bad_files_give_one_line_and_change_nothing(tmp_path):
    expected = _bad_files(tmp_path)
    before = snapshot(tmp_path)
    for name, message in expected.items():
        with pytest.raises(CheckpointError) as e:
            load(tmp_path / name)
        assert message in str(e.value) and "\n" not in str(e.value), name
        assert str(tmp_path / name) in str(e.value), name
        with pytest.raises(ValueError) as e:  # the same files through create_model
            effnet.create_model("mobilenet_v1_025", weights=tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load(tmp_path / "absent.safetensors")
    assert snapshot(tmp_path) == before


class _CreatesFile:
    """Unpickling this runs ``open(target, "w")``: the classic malicious-pickle payload, made harmless."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"stem.conv.weight": torch.zeros(1), "x": _CreatesFile(target)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    assert not target.exists()
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="refused to unpickle") as e:
        read_checkpoint(path)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        effnet.create_model("mobilenet_v1_025", weights=path)
    assert not target.exists()
    assert snapshot(tmp_path) == before


def test_weights_from_own_file_and_wrong_model(tmp_path):
    model = randomized_model("mobilenet_v2_050", bn_eps=1e-3)
    path = tmp_path / "m.safetensors"
    save(model, path)
    again = effnet.create_model("mobilenet_v2_050", weights=path)
    assert again.config.bn_eps == 1e-3  # taken from the checkpoint
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="holds a 'mobilenet_v2_050' checkpoint, not 'mobilenet_v2_100'"):
        effnet.create_model("mobilenet_v2_100", weights=path)
    with pytest.raises(ValueError, match="trained with bn_eps=0.001"):
        effnet.create_model("mobilenet_v2_050", weights=path, bn_eps=1e-5)


def test_weights_from_torchvision_pt_with_wrapper_and_dataparallel_prefix(tmp_path):
    tv = pytest.importorskip("torchvision").models.mobilenet_v2(weights=None).eval()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}
    torch.save(wrapped, tmp_path / "tv.pth")
    ours = effnet.create_model("mobilenet_v2_100", weights=tmp_path / "tv.pth").eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), rtol=0, atol=1e-5)
    with pytest.raises(CheckpointError, match="missing keys"):  # a torchvision file of another model
        effnet.create_model("efficientnet_b0", weights=tmp_path / "tv.pth")


def test_local_timm_tf_port_takes_same_padding(tmp_path):
    ref = randomized_model("efficientnet_lite0", padding="same", bn_eps=1e-3)
    save_file(export_state_dict(ref, "timm"), str(tmp_path / "tf_lite0.safetensors"))
    ours = effnet.create_model("efficientnet_lite0", weights=tmp_path / "tf_lite0.safetensors",
                               padding="same")
    assert (ours.config.padding, ours.config.bn_eps) == ("same", 1e-3)
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in ref.state_dict().items())


def test_other_num_classes_keeps_fresh_classifier_and_warns(tmp_path):
    model = randomized_model("mobilenet_v1_025")
    save(model, tmp_path / "m.safetensors")
    with pytest.warns(UserWarning, match="classifier not loaded .*1000 classes, model 7"):
        tuned = effnet.create_model("mobilenet_v1_025", weights=tmp_path / "m.safetensors", num_classes=7)
    assert tuned.classifier.out_features == 7
    assert torch.equal(tuned.stem.conv.weight, model.stem.conv.weight)
    features = effnet.create_model("mobilenet_v1_025", weights=tmp_path / "m.safetensors", num_classes=0)
    assert isinstance(features.classifier, torch.nn.Identity)


def test_weights_argument_is_validated():
    with pytest.raises(TypeError, match="weights must be a file path or a published checkpoint name"):
        effnet.create_model("mobilenet_v1_025", weights=3)
    with pytest.raises(ValueError, match="unknown model"):
        effnet.create_model("mobilenet_v9", weights="timm")


def test_safe_reading_needs_no_timm(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    save(randomized_model("mobilenet_v1_025"), tmp_path / "m.safetensors")
    assert load(tmp_path / "m.safetensors").config.name == "mobilenet_v1_025"
