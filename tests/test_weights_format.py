"""The one effnet file format: schema round trip, old layouts, damaged files, umask, reading without torch."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import effnet
from effnet.errors import CheckpointError
from effnet.weights import format as fmt
from effnet.weights import load, load_checkpoint, save
from support import randomized_model

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


def test_save_writes_the_schema_and_load_checkpoint_reads_it_back(tmp_path):
    model = randomized_model("mobilenet_v1_025", num_classes=3)
    path = save(model, tmp_path / "m.safetensors", class_names=["cat", "dog", "fox"], eval_size=(40, 48),
                normalization={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.25], "invert": True},
                training={"epoch": 7, "val_acc": 0.5})
    raw, _ = fmt.read_header(path)
    assert set(raw) == {"format", "format_version", "kind", "config", "class_names", "eval_size",
                        "normalization", "training"}
    assert (raw["format"], raw["format_version"], raw["kind"]) == ("effnet", "2", "model")
    assert json.loads(raw["eval_size"]) == [40, 48] and json.loads(raw["class_names"]) == ["cat", "dog", "fox"]
    loaded, meta = load_checkpoint(path)
    assert meta.config == model.config and meta.format_version == 2
    assert meta.class_names == ("cat", "dog", "fox") and meta.eval_size == (40, 48)
    assert meta.normalization == fmt.Normalization((0.5, 0.4, 0.3), (0.2, 0.2, 0.25), invert=True)
    assert meta.training == {"epoch": 7, "val_acc": 0.5}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    bare = save(model, tmp_path / "bare.safetensors")  # every optional entry left out
    assert set(fmt.read_header(bare)[0]) == {"format", "format_version", "kind", "config"}
    assert fmt.read_metadata(bare).class_names is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"class_names": ["a", "b"]}, "2 class names for a classifier of 3 outputs"),
    ({"class_names": "abc"}, "class_names must be a list of strings"),
    ({"eval_size": (0, 32)}, "eval_size must be [H, W] with positive integers"),
    ({"eval_size": (32, 32, 3)}, "eval_size must be [H, W]"),
    ({"normalization": {"mean": [0.5, 0.5], "std": [1, 1]}}, "normalization has 2 channels, the model takes 3"),
    ({"normalization": {"mean": [0.5], "std": [0.0]}}, "std must be positive"),
    ({"normalization": {"mean": [0.5]}}, "must be an object with mean and std"),
    ({"training": [1, 2]}, "training must be a dict"),
])
def test_save_refuses_bad_metadata_and_writes_nothing(tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[")):
        save(randomized_model("mobilenet_v1_025", num_classes=3), tmp_path / "m.safetensors", **kwargs)
    assert list(tmp_path.iterdir()) == []


def _old_effnet_1(model, path):
    """The metadata effnet.save wrote before format version 2 (git: src/effnet/weights/checkpoints.py)."""
    save_file(dict(model.state_dict()), str(path), metadata={
        "format": "effnet", "format_version": "1", "model": model.config.name or "",
        "config": json.dumps(model.config.to_dict())})


def _old_train_1(model, path):
    """The metadata effnet train wrote before format version 2 (git: src/effnet/train/checkpoint.py,
    train/run.py): every value JSON-encoded, the config under "model_config"."""
    meta = {"model_config": model.config.to_dict(), "class_names": [str(i) for i in range(5)], "image_size": 48,
            "crop_pct": 1.0, "mean": [0.1, 0.1, 0.1], "std": [0.3, 0.3, 0.3], "data": "digits",
            "data_source": None, "split": {"val_fraction": 0.2, "split_seed": 0}, "epoch": 3, "val_acc": 0.75,
            "weights": "ema"}
    save_file(dict(model.state_dict()), str(path),
              metadata={"format": "effnet-train-1", **{k: json.dumps(v) for k, v in meta.items()}})


def test_files_in_the_old_layouts_still_load(tmp_path):
    model = randomized_model("mobilenet_v1_025", num_classes=5)
    _old_effnet_1(model, tmp_path / "v1.safetensors")
    _old_train_1(model, tmp_path / "train1.safetensors")
    x = torch.randn(1, 3, 48, 48)
    for name in ("v1.safetensors", "train1.safetensors"):
        loaded, meta = load_checkpoint(tmp_path / name)
        assert meta.format_version == 1 and meta.config == model.config, name
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), model(x)), name
        assert effnet.load(tmp_path / name).config == model.config
        assert effnet.create_model("mobilenet_v1_025", weights=tmp_path / name, num_classes=5).classifier.out_features == 5
    meta = fmt.read_metadata(tmp_path / "train1.safetensors")
    assert meta.class_names == tuple("01234") and meta.eval_size == (48, 48)
    assert meta.normalization == fmt.Normalization((0.1,) * 3, (0.3,) * 3)
    assert meta.training == {"crop_pct": 1.0, "data": "digits", "data_source": None, "epoch": 3, "val_acc": 0.75,
                             "split": {"val_fraction": 0.2, "split_seed": 0}, "weights": "ema"}


def test_damaged_foreign_and_newer_files_are_one_line_naming_the_file(tmp_path):
    model = randomized_model("mobilenet_v1_025")
    good = save(model, tmp_path / "good.safetensors")
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    cases = {
        "empty.safetensors": (b"", "empty file (0 bytes)"),
        "short.safetensors": (data[:5], "not a safetensors file (only 5 bytes)"),
        "cut-header.safetensors": (data[: 8 + n // 2], "truncated safetensors file"),
        "cut-data.safetensors": (data[:-100], "truncated safetensors file"),
        "padded.safetensors": (data + b"\0" * 16, "corrupt safetensors file"),
        "text.safetensors": (b"hello, this is not a checkpoint", "not a safetensors file"),
        "zip.safetensors": (b"PK\x03\x04" + b"\0" * 60, "PyTorch"),  # load: a corrupt .pt; read_metadata: not safetensors
        "bad-json.safetensors": (data[:8] + b"{" + b"x" * (n - 1) + data[8 + n:], "corrupt safetensors header"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)

    def rewrite(name, **changes):
        raw = {**fmt.read_header(good)[0], **changes}
        save_file(dict(model.state_dict()), str(tmp_path / name), metadata={k: v for k, v in raw.items() if v})
        return name

    cases[rewrite("newer.safetensors", format_version="3")] = (None, "written by a newer effnet (format version 3)")
    cases[rewrite("not-effnet.safetensors", format="")] = (None, "not an effnet file")
    cases[rewrite("kindless.safetensors", kind="")] = (None, "kind must be one of model, graph")
    cases[rewrite("bad-config.safetensors", config='{"spec": 3}')] = (None, "malformed model config")
    cases[rewrite("bad-classes.safetensors", class_names="[1, 2")] = (None, "'class_names' is not valid JSON")
    for name, (_, message) in cases.items():
        for reader in (fmt.read_metadata, load):
            with pytest.raises(CheckpointError) as e:
                reader(tmp_path / name)
            text = str(e.value)
            assert message in text and "\n" not in text and str(tmp_path / name) in text, (name, text)


def _modes(tmp_path, umask):
    old = os.umask(umask)
    try:
        save(randomized_model("mobilenet_v1_025"), tmp_path / f"m{umask:o}.safetensors")
        fmt.write_arrays(tmp_path / f"g{umask:o}.safetensors", {"w": np.zeros(3, np.float32)},
                         fmt.Metadata(kind="graph", graph=[]))
    finally:
        os.umask(old)
    return {stat.S_IMODE(os.stat(tmp_path / f"{p}{umask:o}.safetensors").st_mode) for p in "mg"}


def test_written_files_follow_the_umask(tmp_path):
    # safetensors' save_file replaces the temp file; the mode must still be 0o666 & ~umask, not 0o600
    assert _modes(tmp_path, 0o022) == {0o644}
    assert _modes(tmp_path, 0o007) == {0o660}


def test_graph_files_and_the_torch_free_modules_work_without_torch(tmp_path):
    model = randomized_model("mobilenet_v1_025", num_classes=2)
    save(model, tmp_path / "m.safetensors", class_names=["no", "yes"], eval_size=32)
    script = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
import effnet, effnet.config, effnet.plan, effnet.tables, effnet.errors, effnet.io
from effnet.weights import format as fmt
meta = fmt.read_metadata({str(tmp_path / "m.safetensors")!r})
plan = effnet.plan.expand(meta.config)
arrays, _ = fmt.read_arrays({str(tmp_path / "m.safetensors")!r})
graph = fmt.Metadata(kind="graph", graph=[{{"op": "conv", "name": "stem"}}], config=meta.config,
                     class_names=meta.class_names, eval_size=meta.eval_size)
fmt.write_arrays({str(tmp_path / "g.safetensors")!r}, {{"stem": arrays["stem.conv.weight"]}}, graph)
back, again = fmt.read_arrays({str(tmp_path / "g.safetensors")!r})
assert again == graph and np.array_equal(back["stem"], arrays["stem.conv.weight"])
try:
    effnet.create_model
except ImportError:
    pass
else:
    raise AssertionError("torch was importable")
print(len(plan.blocks), meta.class_names, meta.eval_size, sorted(k for k in sys.modules if k.startswith("torch")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["13", "('no',", "'yes')", "(32,", "32)", "['torch']"]
    assert fmt.read_metadata(tmp_path / "g.safetensors").graph == [{"op": "conv", "name": "stem"}]
    with pytest.raises(CheckpointError, match="an effnet graph file, not model weights"):
        load(tmp_path / "g.safetensors")


def test_public_names_are_still_there():
    import effnet.weights

    for module in (effnet, effnet.weights):
        assert all(getattr(module, name) is not None for name in module.__all__)
        assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        effnet.nope  # noqa: B018
