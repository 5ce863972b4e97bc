"""``effnet runtime devices|summary|export`` and ``effnet predict --engine opencl``."""

import numpy as np
import pytest
from PIL import Image

import effnet
from effnet import runtime as rt
from effnet.cli import main
from support import randomized_model


def test_devices_lists_opencl(capsys):
    assert main(["runtime", "devices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0: ") and " on " in out


def test_export_then_summary_of_the_file(tmp_path, capsys):
    out = tmp_path / "net.safetensors"
    assert main(["runtime", "export", "mobilenet_v1_025", "--input-size", "32", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    g = rt.load(out)
    assert g.input_shape == (3, 32, 32)
    assert main(["runtime", "summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{g.totals()['params']:,} params" in text
    assert main(["runtime", "summary", "mobilenet_v1_025", "--no-optimize", "--input-size", "32"]) == 0
    assert "batchnorm" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["summary", "no_such_model"], "unknown model 'no_such_model'"),
    (["summary", "absent.safetensors"], "no such file"),
    (["export", "mobilenet_v1_025", "-o", "/no/such/folder/net.safetensors"], "does not exist"),
])
def test_runtime_cli_errors_are_one_line(args, message, capsys):
    assert main(["runtime", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_predict_with_the_opencl_engine_agrees_with_torch(tmp_path, capsys):
    model = randomized_model("mobilenet_v2_035", num_classes=3)
    weights = tmp_path / "best.safetensors"
    effnet.save(model, weights, class_names=["a", "b", "c"], eval_size=32,
                normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
    lines = []
    for engine in ("torch", "opencl"):
        assert main(["predict", "--weights", str(weights), str(image), "--top-k", "3", "--engine", engine]) == 0
        lines.append(capsys.readouterr().out.strip())
    assert lines[0] == lines[1]  # same classes, same probabilities to 0.1%
