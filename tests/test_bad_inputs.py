"""Bad inputs through the CLI and the API: each one a clear error, never a traceback or a silent result.

Every case asserts a failure (non-zero exit, or the right exception type), no ``Traceback``, at most
three lines, and a message naming the problem.  The CLI cases run in real ``python -m effnet``
processes: the cheap ones together in one interpreter (one ``import torch`` instead of forty), each
with its own captured stdout/stderr and exit status as the real entry point would give them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.devices import resolve_device
from effnet.suggest import close_matches
from effnet.train import TrainConfig, train
from effnet.train.data import load_digits, read_image
from effnet.zoo import MODELS

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("EFFNET_DEBUG", None)
# A run small enough for seconds: 60 digit images as PNG files, mobilenet_v2_035 at 32 px.
TINY = {"model": "mobilenet_v2_035", "epochs": 2, "batch_size": 8, "image_size": 32, "optimizer": "adamw",
        "lr": 0.004, "workers": 0, "progress": False, "plots": False, "stages": 1, "check_images": False}


def assert_clear(rc: int, err: str, *words: str) -> None:
    """Failed, one short message without a traceback, naming the problem (every word in ``words``)."""
    assert rc != 0, f"exit status 0; stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3, f"{len(lines)} lines:\n{err}"
    for w in words:
        assert w in err, f"{w!r} not in: {err}"


# --------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A data folder, a finished two-epoch run, damaged copies of it, and a few bad files."""
    root = tmp_path_factory.mktemp("bad")
    images, targets = load_digits()
    data = root / "digits"
    for d in range(10):
        (data / str(d)).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(targets.numpy() == d)[:6]):
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(data / str(d) / f"{j}.png")
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainConfig(**TINY, data=str(data), output=str(root / "run")))
    finally:
        torch.set_num_threads(before)
    run = root / "run"
    pointer = json.loads((run / "last.json").read_text())

    def damaged_copy(name: str, state_bytes: bytes) -> str:
        copy = root / name
        copy.mkdir()
        for p in run.iterdir():
            (copy / p.name).write_bytes(p.read_bytes())
        (copy / pointer["state"]).write_bytes(state_bytes)
        return str(copy)

    state = (run / pointer["state"]).read_bytes()
    # a run folder whose weights file holds another model (copied over from another run)
    mixed = Path(damaged_copy("mixed", state))
    other = effnet.create_model("mobilenet_v2_050", num_classes=10)
    effnet.save(other, mixed / pointer["weights"], class_names=[str(d) for d in range(10)], eval_size=32)
    (root / "notes.txt").write_text("not an image, not a checkpoint\n")
    (root / "empty").mkdir()
    return {
        "data": str(data), "run": str(run), "W": str(result.best_path), "img": str(data / "3" / "0.png"),
        "text": str(root / "notes.txt"), "empty": str(root / "empty"), "root": str(root),
        "truncated": damaged_copy("truncated", state[: len(state) // 2]),
        "zero": damaged_copy("zero", b""), "mixed": str(mixed),
    }


# ------------------------------------------------------------------------------- CLI, one process
# (id, argv with {placeholders} from `files`, words the error must contain)
CLI_CASES = [
    ("train-device", ["train", "--device", "banana"], ["unknown device 'banana'", "cpu"]),
    ("train-cuda-missing", ["train", "--device", "cuda:99", "--data", "{data}"], ["cuda:99", "cpu"]),
    ("evaluate-device", ["evaluate", "--weights", "{W}", "--device", "banana"], ["unknown device", "cpu"]),
    ("predict-device", ["predict", "--weights", "{W}", "{img}", "--device", "banana"], ["unknown device", "cpu"]),
    ("bench-device", ["bench", "--device", "banana", "--models", "mobilenet_v2_035"], ["banana", "cpu"]),
    ("train-model-typo", ["train", "--model", "efficientnet_bo"], ["did you mean efficientnet_b0"]),
    ("profile-model-typo", ["profile", "efficientnet_bo"], ["did you mean efficientnet_b0"]),
    ("command-typo", ["trian"], ["invalid choice: 'trian'", "did you mean train"]),
    ("choice-typo", ["zoo", "--format", "jsn"], ["did you mean json"]),
    ("optimizer-typo", ["train", "--optimizer", "adam"], ["optimizer must be one of", "adamw"]),
    ("epochs-below-stages", ["train", "--epochs", "1"], ["3 progressive stages", "--stages 1"]),
    ("epochs-zero", ["train", "--epochs", "0"], ["epochs must be a positive integer"]),
    ("epochs-not-int", ["train", "--epochs", "two"], ["--epochs", "invalid int value"]),
    ("batch-size-zero", ["train", "--batch-size", "0"], ["batch_size must be a positive integer"]),
    ("image-size-small", ["train", "--image-size", "8"], ["image size 8 is too small", "at least 32"]),
    ("size-start-small", ["train", "--size-start", "8"], ["size_start 8", "--size-start 32"]),
    ("drop-path-range", ["train", "--drop-path-rate", "1.5"], ["drop_path_rate", "[0, 1)"]),
    ("progressive-name", ["train", "--progressive", "v2-x"], ["progressive must be one of", "v2-s"]),
    ("width-zero", ["train", "--width", "0", "--data", "{data}"], ["width multiplier"]),
    ("phi-huge", ["train", "--model", "efficientnet_b0", "--phi", "1e6", "--data", "{data}"],
     ["phi must be", "between -10 and 25"]),
    ("data-missing", ["train", "--data", "{root}/no-such-folder"], ["does not exist"]),
    ("data-empty", ["train", "--data", "{empty}"], ["no class folders"]),
    ("data-is-a-file", ["train", "--data", "{text}"], ["notes.txt is a file"]),
    ("train-threads", ["train", "--threads", "0", "--data", "{data}"], ["threads must be a positive integer"]),
    ("resume-no-output", ["train", "--resume"], ["--resume needs --output"]),
    ("resume-nothing", ["train", "--resume", "--output", "{empty}"], ["nothing to resume"]),
    ("resume-other-model", ["train", "--resume", "--output", "{run}", "--model", "efficientnet_b0"],
     ["--model", "mobilenet_v2_035", "efficientnet_b0"]),
    ("resume-other-data", ["train", "--resume", "--output", "{run}", "--data", "cifar10"], ["--data", "cifar10"]),
    ("resume-truncated-state", ["train", "--resume", "--output", "{truncated}"], ["state.pt"]),
    ("resume-empty-state", ["train", "--resume", "--output", "{zero}"], ["state.pt"]),
    ("resume-weights-of-another-model", ["train", "--resume", "--output", "{mixed}"],
     ["mobilenet_v2_050", "mobilenet_v2_035"]),
    ("evaluate-missing", ["evaluate", "--weights", "{root}/nope.safetensors"], ["nope.safetensors", "no such checkpoint file"]),
    ("evaluate-not-safetensors", ["evaluate", "--weights", "{text}"], ["notes.txt"]),
    ("evaluate-batch-zero", ["evaluate", "--weights", "{W}", "--batch-size", "0"], ["--batch-size"]),
    ("evaluate-threads", ["evaluate", "--weights", "{W}", "--threads", "0"], ["--threads must be a positive integer"]),
    ("evaluate-confusion-folder", ["evaluate", "--weights", "{W}", "--confusion", "{text}/cm.png"],
     ["notes.txt is not a folder", "--confusion"]),
    ("predict-missing-image", ["predict", "--weights", "{W}", "{root}/nope.png"], ["cannot read image", "nope.png"]),
    ("predict-not-image", ["predict", "--weights", "{W}", "{text}"], ["cannot read image", "notes.txt"]),
    ("predict-top-k", ["predict", "--weights", "{W}", "{img}", "--top-k", "0"], ["--top-k"]),
    ("predict-threads", ["predict", "--weights", "{W}", "{img}", "--threads", "0"], ["--threads"]),
    ("profile-resolution-small", ["profile", "efficientnet_b0", "--resolution", "8"], ["8x8", "minimum 32x32"]),
    ("profile-resolution-zero", ["profile", "mobilenet_v2_035", "--resolution", "0"], ["--resolution"]),
    ("profile-source", ["profile", "keras:mobilenet"], ["unknown model source 'keras'"]),
    ("zoo-no-match", ["zoo", "resnet*"], ["no zoo model matches"]),
    ("models-no-match", ["models", "efficientnet_bo"], ["no zoo model matches", "did you mean efficientnet_b0"]),
    ("bench-output-file", ["bench", "--models", "mobilenet_v2_035", "--device", "cpu", "--out", "{text}/out"],
     ["notes.txt", "not a folder"]),
]

# Runs each argv through effnet.cli.main in one interpreter, as `python -m effnet` would run it alone:
# its own stdout/stderr, SystemExit's status, and an uncaught exception printed as a traceback.
_RUNNER = """
import contextlib, io, json, sys, traceback
from effnet.cli import main
results = []
for argv in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            rc = 1
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def cli_results(files) -> dict[str, dict]:
    argvs = [[a.format(**files) for a in argv] for _, argv, _ in CLI_CASES]
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(argvs), capture_output=True, text=True, check=False,
                          env=ENV, cwd=files["root"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {case[0]: r for case, r in zip(CLI_CASES, results)}


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_clear_line(case, cli_results):
    name, _, words = case
    r = cli_results[name]
    assert_clear(r["rc"], r["err"], *words)


@pytest.mark.slow
def test_cli_entry_point_in_its_own_process(files):
    """The real `python -m effnet` process: status 2 and the one line."""
    proc = subprocess.run([sys.executable, "-m", "effnet", "train", "--device", "banana"], capture_output=True,
                          text=True, env=ENV, check=False, cwd=files["root"], timeout=300)
    assert proc.returncode == 2
    assert_clear(proc.returncode, proc.stderr, "unknown device 'banana'", "available here: cpu")


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_naming_the_checkpoint(files, tmp_path):
    """SIGINT after the first checkpoint: one line with the checkpoint and the resume command, exit 130."""
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "effnet", "train", "--data", files["data"], "--output", str(out),
                             "--model", "mobilenet_v2_035", "--epochs", "200", "--batch-size", "8",
                             "--image-size", "32", "--stages", "1", "--no-plots", "--workers", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    while not (out / "last.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert_clear(proc.returncode, err, "last good checkpoint", str(out), "--resume")
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


# ------------------------------------------------------------------------------------------- API
def _model():
    return effnet.create_model("mobilenet_v2_035", num_classes=10).eval()


API_CASES = [
    ("num_classes-float", lambda: effnet.create_model("mobilenet_v2_035", num_classes=2.5), TypeError, ["num_classes"]),
    ("num_classes-str", lambda: effnet.create_model("mobilenet_v2_035", num_classes="10"), TypeError,
     ["num_classes", "'10'"]),
    ("num_classes-negative", lambda: effnet.model_config("efficientnet_b0", num_classes=-1), ValueError,
     ["num_classes", ">= 0"]),
    ("in_chans-zero", lambda: effnet.model_config("efficientnet_b0", in_chans=0), ValueError, ["in_chans"]),
    ("in_chans-bool", lambda: effnet.model_config("efficientnet_b0", in_chans=True), TypeError, ["in_chans"]),
    ("drop_rate-range", lambda: effnet.model_config("efficientnet_b0", drop_rate=1.5), ValueError,
     ["drop_rate", "[0, 1)"]),
    ("drop_rate-str", lambda: effnet.model_config("efficientnet_b0", drop_rate="0.2"), TypeError, ["drop_rate"]),
    ("width-str", lambda: effnet.model_config("efficientnet_b0", width="2"), TypeError, ["width multiplier"]),
    ("width-huge", lambda: effnet.model_config("efficientnet_b0", width=1e300), ValueError,
     ["width multiplier", "at most 100"]),
    ("depth-zero", lambda: effnet.model_config("efficientnet_b0", depth=0), ValueError, ["depth multiplier"]),
    ("phi-huge", lambda: effnet.efficientnet(phi=1e6), ValueError, ["phi", "-10", "25"]),
    ("phi-str", lambda: effnet.efficientnet(phi="1"), TypeError, ["phi must be a number"]),
    ("phi-nan", lambda: effnet.compound_coefficients(float("nan")), ValueError, ["phi"]),
    ("alpha-overflow", lambda: effnet.compound_coefficients(20, alpha=1e30), ValueError, ["alpha**phi"]),
    ("resolution-small", lambda: effnet.model_config("efficientnet_b0", resolution=8), ValueError,
     ["resolution", ">= 32"]),
    ("model-name-typo", lambda: effnet.create_model("efficientnet_bo"), ValueError,
     ["did you mean efficientnet_b0"]),
    ("input-uint8", lambda: _model()(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), TypeError,
     ["uint8", "x.float() / 255", "normalise"]),
    ("input-float64", lambda: _model()(torch.zeros(1, 3, 64, 64, dtype=torch.float64)), TypeError,
     ["float64", "float32"]),
    ("input-int64", lambda: _model()(torch.zeros(1, 3, 64, 64, dtype=torch.int64)), TypeError, ["int64"]),
    ("input-1x1", lambda: _model()(torch.zeros(1, 3, 1, 1)), ValueError, ["1x1", "minimum 32x32"]),
    ("input-0x0", lambda: _model()(torch.zeros(1, 3, 0, 0)), ValueError, ["0x0", "minimum 32x32"]),
    ("input-narrow", lambda: _model().feature_maps(torch.zeros(1, 3, 64, 16)), ValueError, ["64x16"]),
    ("input-list", lambda: _model()([[0.0]]), TypeError, ["torch.Tensor"]),
    ("device-unknown", lambda: resolve_device("banana"), ValueError, ["banana", "cpu"]),
    ("device-type", lambda: resolve_device(3), TypeError, ["device"]),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_one_clear_line(case):
    _, call, kind, words = case
    with pytest.raises(kind) as info:
        call()
    assert_clear(1, str(info.value), *words)


def test_export_below_the_minimum_size_writes_nothing(tmp_path):
    path = tmp_path / "small.onnx"
    with pytest.raises(ValueError) as info:
        effnet.export_onnx(_model(), path, (16, 16), check=False)
    assert_clear(1, str(info.value), "16x16", "minimum 32x32")
    assert list(tmp_path.iterdir()) == []


def test_convert_names_missing_and_unexpected_keys_separately():
    torchvision = pytest.importorskip("torchvision")
    sd = torchvision.models.mobilenet_v2().state_dict()
    del sd["classifier.1.weight"]
    with pytest.raises(effnet.weights.CheckpointError) as info:
        effnet.convert_state_dict(sd, "torchvision", "mobilenet_v2")
    assert "missing keys (1): classifier.1.weight" in str(info.value) and "unexpected" not in str(info.value)
    sd["features.99.weight"] = sd.pop("features.0.0.weight")
    with pytest.raises(effnet.weights.CheckpointError) as info:
        effnet.convert_state_dict(sd, "torchvision", "mobilenet_v2")
    msg = str(info.value)
    assert "missing keys (2): " in msg and "features.0.0.weight" in msg and "classifier.1.weight" in msg
    assert "unexpected keys (1): features.99.weight" in msg


# ------------------------------------------------------------------------ the fixed silent cases
def test_sixteen_bit_greyscale_png_is_scaled_by_its_bit_depth(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I")  # really stored as 16-bit
    got = read_image(tmp_path / "ramp16.png")
    assert got.shape == (3, 64, 64) and got.dtype == torch.uint8
    want = torch.from_numpy(np.rint(ramp / 257.0).astype(np.uint8))
    assert (got[0].int() - want.int()).abs().max() <= 1
    assert (got == 255).float().mean() < 0.01  # clipping made 99% of it white


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "m.safetensors"
        effnet.save(effnet.create_model("mobilenet_v2_035", num_classes=3), path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_below_the_total_stride_every_model_refuses():
    for name in ("mobilenet_v1_025", "efficientnet_lite0", "efficientnet_v2_b0"):
        with torch.device("meta"):
            model = effnet.create_model(name).eval()
        assert model.min_input_size == model.plan.output_stride == 32
        model(torch.zeros(1, 3, 32, 32, device="meta"))  # the minimum itself is accepted
        with pytest.raises(ValueError, match="minimum 32x32"):
            model(torch.zeros(1, 3, 31, 32, device="meta"))


def test_resume_applies_a_new_epoch_count_and_logs_it(files, tmp_path, capsys):
    run = tmp_path / "run"
    for p in Path(files["run"]).iterdir():
        (run / p.name).parent.mkdir(exist_ok=True)
        (run / p.name).write_bytes(p.read_bytes())
    result = train(TrainConfig(output=str(run), resume=True, epochs=3, progress=False, plots=False))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert "epochs" in capsys.readouterr().out.split("resuming")[1].splitlines()[0]


def test_a_phi_model_is_named_for_what_it_is_and_rebuilds_from_its_file(tmp_path):
    with torch.device("meta"):
        config = effnet.efficientnet(phi=1.5).config
    assert "b0" not in config.name and "phi" in config.name and "1.5" in config.name
    model = effnet.efficientnet(phi=0.5, num_classes=3)
    effnet.save(model, tmp_path / "phi.safetensors")
    again = effnet.load(tmp_path / "phi.safetensors")
    assert again.config == model.config and again.config.name == model.config.name


def test_typo_ranking_puts_the_look_alike_first():
    assert close_matches("efficientnet_bo", MODELS)[0] == "efficientnet_b0"
    assert close_matches("efficientnet_bl", MODELS)[0] == "efficientnet_b1"
    assert close_matches("mobilenet_v2_l00", MODELS)[0] == "mobilenet_v2_100"
    assert close_matches("efficeintnet_b3", MODELS)[0] == "efficientnet_b3"  # swapped neighbours
    assert close_matches("EfficientNet-B4", MODELS)[0] == "efficientnet_b4"  # case and dash
    assert close_matches("banana", ["cpu", "cuda:0"]) == []
    # torch-free, like the config it checks names for
    script = ("import sys; sys.modules['torch'] = None; import effnet.config; from effnet.suggest import did_you_mean; "
              "print(did_you_mean('efficientnet_bo', ['efficientnet_b8', 'efficientnet_b0']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, check=False)
    assert done.stdout.strip() == "; did you mean efficientnet_b0, efficientnet_b8?", done.stderr


def test_progress_bars_stay_out_of_logs(files, tmp_path, capsys):
    """With output captured (not a terminal), progress=True draws no bar."""
    train(TrainConfig(**{**TINY, "epochs": 1, "progress": True}, data=files["data"], output=str(tmp_path / "r")))
    captured = capsys.readouterr()
    assert "epoch   1/1" in captured.out
    assert "batch/s" not in captured.err + captured.out and "it/s" not in captured.err + captured.out


def test_predict_inverts_a_dark_on_light_drawing_for_a_dark_background_model(files, tmp_path, capsys):
    import dataclasses

    from effnet.train.predict_cli import predict
    from effnet.weights import load_checkpoint

    model, meta = load_checkpoint(files["W"])
    assert meta.training["background"] == "dark"  # effnet train measured the digit PNGs' polarity
    digit = read_image(files["img"]).permute(1, 2, 0).numpy()
    Image.fromarray(digit).save(tmp_path / "white_on_black.png")
    Image.fromarray(255 - digit).save(tmp_path / "black_on_white.png")
    paths = [str(tmp_path / "white_on_black.png"), str(tmp_path / "black_on_white.png")]
    a, b = predict(model, meta, paths, 3, torch.device("cpu"))
    assert a == b  # the drawing is inverted back: the same input reaches the model
    assert "black_on_white.png is dark on light; inverted" in capsys.readouterr().err
    unknown = dataclasses.replace(meta, training={**meta.training, "background": None})
    plain, inverted = predict(model, unknown, paths, 10, torch.device("cpu"))
    assert plain != inverted  # without the record, nothing is inverted


def test_evaluate_checks_a_read_only_output_folder_before_the_work(files, tmp_path, monkeypatch, capsys):
    from effnet import io as effnet_io
    from effnet.cli import main

    def read_only(path, mode, **kwargs):
        return not (mode & os.W_OK and Path(path) == tmp_path)

    calls = []
    monkeypatch.setattr(effnet_io.os, "access", read_only)
    monkeypatch.setattr("effnet.train.evaluate_cli.load_dataset", lambda *a, **k: calls.append(a))
    assert main(["evaluate", "--weights", files["W"], "--confusion", str(tmp_path / "cm.png")]) == 2
    assert_clear(2, capsys.readouterr().err, "read-only", str(tmp_path), "--confusion")
    assert calls == []  # failed before reading any data
