"""ONNX export: onnxruntime output equals PyTorch's at a non-square size and another batch size."""

from __future__ import annotations

import sys

import pytest
import torch

import effnet
from effnet.export import export_onnx, verify_onnx
from effnet.layers import Conv2dSame

pytestmark = pytest.mark.usefixtures("one_thread")

onnx = pytest.importorskip("onnx")  # declared test dependencies (pyproject [test])
ort = pytest.importorskip("onnxruntime")

SIZE = (96, 128)  # non-square; export runs at batch 2, the check below at batch 3


def random_model(name: str, **kwargs) -> effnet.EfficientConvNet:
    torch.manual_seed(0)
    model = effnet.create_model(name, **kwargs)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN really takes part
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


CASES = [
    ("mobilenet_v2_100", {}),
    ("efficientnet_b0", {}),
    ("efficientnet_lite0", {"padding": "same", "bn_eps": 1e-3}),
    ("efficientnet_v2_s", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_onnx_matches_pytorch_at_another_batch(tmp_path, name, kwargs):
    model = random_model(name, **kwargs)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, SIZE, check=False)
    assert model.training  # mode restored
    graph = onnx.load(str(path)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic batch, not a fixed 2
    x = torch.randn(3, 3, *SIZE)
    with torch.no_grad():
        want = model.eval()(x)
    got = run_onnx(path, x)
    assert got.shape == want.shape == (3, 1000)
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-4


def test_same_padding_is_frozen_for_export_and_restored(tmp_path):
    model = random_model("efficientnet_lite0", padding="same", bn_eps=1e-3)
    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    assert convs and all(c.static_padding is None for c in convs)
    export_onnx(model, tmp_path / "m.onnx", (65, 79), check=True)  # odd sizes: asymmetric SAME pads
    assert all(c.static_padding is None for c in convs)  # dynamic again: other sizes still work
    assert model.eval()(torch.randn(1, 3, 40, 52)).shape == (1, 1000)
    # The graph holds no shape-dependent padding arithmetic: no Shape ops at all.
    assert "Shape" not in {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}


@pytest.mark.slow
def test_dynamo_exporter_also_gives_a_dynamic_batch(tmp_path):
    pytest.importorskip("onnxscript")  # declared in the [test] extra; the default exporter needs none
    model = random_model("mobilenet_v1_025")
    export_onnx(model, tmp_path / "d.onnx", (64, 96), dynamo=True, check=False)
    assert [p.name for p in tmp_path.iterdir()] == ["d.onnx"]  # weights inside, no .data side file
    assert verify_onnx(model, tmp_path / "d.onnx", (64, 96), batch=3) <= 1e-4


def test_failed_check_leaves_previous_file(tmp_path, monkeypatch):
    model = random_model("mobilenet_v1_025")
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")
    from effnet import export

    def failing(*args, **kwargs):
        raise RuntimeError("ONNX output differs from PyTorch")

    monkeypatch.setattr(export, "verify_onnx", failing)
    with pytest.raises(RuntimeError, match="differs"):
        export_onnx(model, path, 64, check=True)
    assert path.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_bad_arguments():
    model = random_model("mobilenet_v1_025")
    for size in (0, (64,), (64, "a"), (64.0, 64), True):
        with pytest.raises(ValueError, match="input_size must be"):
            export_onnx(model, "unused.onnx", size)
    with pytest.raises(TypeError, match="EfficientConvNet"):
        export_onnx(torch.nn.Linear(2, 2), "unused.onnx", 64)


def test_check_without_onnxruntime(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = random_model("mobilenet_v1_025")
    export_onnx(model, tmp_path / "m.onnx", 64)  # check=None: skipped quietly when onnxruntime is absent
    assert (tmp_path / "m.onnx").stat().st_size > 0
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        export_onnx(model, tmp_path / "n.onnx", 64, check=True)
    assert not (tmp_path / "n.onnx").exists()
