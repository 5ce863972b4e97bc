"""effnet train end to end on tiny data: accuracy, exact resume, SIGKILL safety, NaN stop, DDP, CLIs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from effnet.cli import main
from effnet.train import TrainConfig, TrainError, checkpoint, engine, train
from effnet.weights import load, load_checkpoint, read_weights, save
from support import train_until_interrupted

# A small, quick setting: 300 digit images as PNG files, mobilenet_v2_035 at 32 px, batches of 32.
TINY = {"model": "mobilenet_v2_035", "epochs": 4, "batch_size": 16, "image_size": 32, "optimizer": "adamw",
        "lr": 0.004, "workers": 0, "progress": False, "plots": False, "ema_decay": 0.9, "scale_min": 0.6,
        "hflip": 0.0, "randaug_end": 4}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _files(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()}


@pytest.mark.slow
def test_progressive_run_changes_size_and_resume_is_bitwise_exact(digits_folder, tmp_path, monkeypatch):
    config = dict(TINY, data=str(digits_folder), stages=2, size_start=32, image_size=48, mixup_start=0.0,
                  mixup_end=0.4, randaug_start=2, randaug_end=8, dropout_start=0.1, dropout_end=0.3)
    full = train(TrainConfig(**config, output=str(tmp_path / "full")))
    # the data pipeline really delivers the stage's size, and the schedule reached the loop
    assert [h["image_size_seen"] for h in full.history] == [32, 32, 48, 48]
    assert [h["mixup"] for h in full.history] == [0.0, 0.0, 0.4, 0.4]
    assert [h["dropout"] for h in full.history] == [0.1, 0.1, 0.3, 0.3]

    # Interrupt after epoch 2's checkpoint, as a Ctrl-C would, then resume.
    train_until_interrupted(monkeypatch, TrainConfig(**config, output=str(tmp_path / "split")), 2)
    resumed = train(TrainConfig(output=str(tmp_path / "split"), resume=True, progress=False, plots=False))

    a, _ = read_weights(tmp_path / "full" / "epoch-0004.safetensors")
    b, _ = read_weights(tmp_path / "split" / "epoch-0004.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights differ"
    ema_a = checkpoint.load_state(tmp_path / "full" / "epoch-0004.state.pt")["ema"]["weights"]
    ema_b = checkpoint.load_state(tmp_path / "split" / "epoch-0004.state.pt")["ema"]["weights"]
    assert all(ema_a[k].equal(ema_b[k]) for k in ema_a)
    assert [h["val_acc"] for h in resumed.history] == [h["val_acc"] for h in full.history]
    best_a, meta_a = read_weights(tmp_path / "full" / "best.safetensors")
    best_b, meta_b = read_weights(tmp_path / "split" / "best.safetensors")
    assert meta_a == meta_b and all(best_a[k].equal(best_b[k]) for k in best_a)
    rows = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]  # one clean log across the interruption


# `effnet train` with one patch, in the test's own child process: just before the n-th rename of a file
# whose name holds TEXT, the process stops itself (SIGSTOP), its temp file fully written, so that the
# test can SIGKILL it from outside at exactly that instant.
_STOP_BEFORE_RENAME = """
import os, signal, sys
from effnet.cli import main

text, n, seen, real_replace = sys.argv[1], int(sys.argv[2]), [], os.replace

def replace(src, dst):
    if text in os.fspath(dst):
        seen.append(dst)
        if len(seen) == n:
            os.kill(os.getpid(), signal.SIGSTOP)
    real_replace(src, dst)

os.replace = replace
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_then_resume_is_bitwise_exact(digits_folder, tmp_path, capsys):
    flags = ["--data", str(digits_folder), "--model", "mobilenet_v2_035", "--epochs", "2", "--batch-size", "32",
             "--image-size", "32", "--workers", "0", "--no-progress", "--no-plots", "--ema-decay", "0.9",
             "--no-check-images"]
    run, full = tmp_path / "run", tmp_path / "full"
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-c", _STOP_BEFORE_RENAME, "state.pt", "2", "train", *flags,
                                  "--output", str(run)], env=ENV, stdout=out, stderr=out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child (OMP_NUM_THREADS=1): one thread sums in one order
    try:
        assert main(["train", *flags, "--output", str(full)]) == 0  # the uninterrupted run, meanwhile
        watchdog = threading.Timer(300, child.kill)
        watchdog.start()
        try:
            _, status = os.waitpid(child.pid, os.WUNTRACED)
            assert os.WIFSTOPPED(status), log.read_text()[-2000:]
            # Epoch 2's weights are in place, its state file sits complete under a temp name, the pointer
            # still names epoch 1: now the real SIGKILL.
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
        finally:
            watchdog.cancel()
        temp = [p.name for p in run.iterdir() if p.name.startswith(".epoch-0002.state.pt.") and p.name.endswith(".tmp")]
        assert len(temp) == 1 and json.loads((run / "last.json").read_text())["epoch"] == 1
        weights, state = checkpoint.last_checkpoint(run)
        epoch_1, meta = read_weights(weights)
        assert meta.training["epoch"] == 1 and checkpoint.load_state(state)["epoch"] == 1
        capsys.readouterr()
        assert main(["train", *flags, "--output", str(run), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "resuming after epoch 1" in out and f"removed {run / temp[0]}" in out
    assert _files(run) == _files(full)  # the temp file is gone, nothing else is left over
    for name in ("epoch-0002.safetensors", "best.safetensors"):
        (a, meta_a), (b, meta_b) = read_weights(full / name), read_weights(run / name)
        assert meta_a == meta_b and a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    last, _ = read_weights(run / "epoch-0002.safetensors")
    assert not any(epoch_1[k].equal(last[k]) for k in last)  # epoch 2 did train: the comparison has teeth
    ema_a = checkpoint.load_state(full / "epoch-0002.state.pt")["ema"]["weights"]
    ema_b = checkpoint.load_state(run / "epoch-0002.state.pt")["ema"]["weights"]
    assert all(ema_a[k].equal(ema_b[k]) for k in ema_a)
    rows = [[json.loads(r)["val_acc"] for r in (d / "metrics.jsonl").read_text().splitlines()] for d in (full, run)]
    assert len(rows[0]) == 2 and rows[0] == rows[1]


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(digits_folder, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = engine.compute_loss

    def poisoned(logits, targets, smoothing):
        calls["n"] += 1
        loss = real(logits, targets, smoothing)
        return loss * float("nan") if calls["n"] == 9 else loss  # 7 steps per epoch: epoch 2, batch 2

    monkeypatch.setattr(engine, "compute_loss", poisoned)
    run = tmp_path / "nan"
    argv = ["train", "--data", str(digits_folder), "--model", "mobilenet_v2_035", "--epochs", "3", "--batch-size",
            "32", "--image-size", "32", "--workers", "0", "--no-progress", "--no-plots", "--output", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "loss became nan at step 9" in err and "epoch 2/3, batch 2" in err
    assert str(run / "epoch-0001.safetensors") in err
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    load(run / "epoch-0001.safetensors")


@pytest.mark.slow
def test_main_job_learns_digits_on_a_short_run(tmp_path):
    """`effnet train`'s recipe, cut to 8 epochs: well past chance (the full 25 epochs reach >= 96%)."""
    result = train(TrainConfig.for_data(None, epochs=8, progress=False, plots=False, output=str(tmp_path / "d")))
    assert [s.image_size for s in result.schedule] == [32, 40, 48]
    assert max(result.history[-1]["val_acc"], result.history[-1]["ema_val_acc"]) >= 0.7  # chance: 0.1


@pytest.mark.slow
def test_evaluate_predict_and_class_mismatch(digits_folder, tmp_path, capsys):
    stale = tmp_path / "r" / ".epoch-0001.state.pt.k3x_9a0q.tmp"  # left by a run SIGKILLed mid-write
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    result = train(TrainConfig(**{**TINY, "plots": True}, data=str(digits_folder), output=str(tmp_path / "r")))
    assert {"curves.png", "schedule.png", "metrics.csv", "metrics.jsonl", "best.safetensors", "config.json",
            "last.json"} <= _files(tmp_path / "r")
    assert not stale.exists()
    best = str(result.best_path)
    assert main(["evaluate", "--weights", best, "--confusion", str(tmp_path / "cm.png")]) == 0
    out = capsys.readouterr().out
    top1 = float(out.split("top-1 ")[1].split("%")[0])
    assert top1 == pytest.approx(100 * result.best_acc, abs=0.01)  # same split, same weights, same number
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"

    image = digits_folder / "3" / "0.png"
    assert main(["predict", "--weights", best, str(image), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    probs = [float(p.rstrip("%")) for p in line.split(": ", 1)[1].replace(",", "").split()[1::2]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 100.05

    # any effnet file: one from effnet.save (no class names, no data: evaluate needs --data) ...
    model, meta = load_checkpoint(best)
    plain = save(model, tmp_path / "plain.safetensors", eval_size=meta.eval_size, normalization=meta.normalization)
    assert main(["predict", "--weights", str(plain), str(image), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.split(": ", 1)[1].startswith("class ")
    assert main(["evaluate", "--weights", str(plain)]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert main(["evaluate", "--weights", str(plain), "--data", str(digits_folder), "--confusion",
                 str(tmp_path / "cm2.png")]) == 0
    assert "top-1 " in capsys.readouterr().out
    # ... and one in effnet train's old layout (format "effnet-train-1"), read as the same model
    old = {"model_config": model.config.to_dict(), "class_names": list(meta.class_names), "image_size": 32,
           "crop_pct": meta.training["crop_pct"], "mean": list(meta.normalization.mean),
           "std": list(meta.normalization.std), "data": "folder", "data_source": str(digits_folder),
           "split": meta.training["split"], "epoch": 1, "val_acc": 0.5, "weights": "raw"}
    save_file(dict(model.state_dict()), str(tmp_path / "old.safetensors"),
              metadata={"format": "effnet-train-1", **{k: json.dumps(v) for k, v in old.items()}})
    assert main(["predict", "--weights", str(tmp_path / "old.safetensors"), str(image), "--top-k", "3"]) == 0
    assert capsys.readouterr().out.strip() == line

    # different classes: a folder whose class names differ from the checkpoint's
    other = tmp_path / "letters"
    for c in "ab":
        (other / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(other / c / f"{i}.png")
    assert main(["evaluate", "--weights", best, "--data", str(other)]) == 2
    assert "was trained on classes" in capsys.readouterr().err
    with pytest.raises(TrainError, match="already holds a run"):
        train(TrainConfig(**TINY, data=str(other), output=str(tmp_path / "r")))
    # a run whose data folder gained a class before --resume: its checkpoint's classes do not match
    train(TrainConfig(**{**TINY, "epochs": 1, "batch_size": 2}, data=str(other), output=str(tmp_path / "o")))
    (other / "c").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(other / "c" / f"{i}.png")
    assert main(["train", "--output", str(tmp_path / "o"), "--resume"]) == 2
    assert "must match to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(digits_folder, tmp_path):
    flags = ["--data", str(digits_folder), "--model", "mobilenet_v2_035", "--epochs", "12", "--batch-size", "8",
             "--image-size", "32", "--optimizer", "adamw", "--lr", "0.004", "--workers", "0", "--no-progress", "--scale-min", "0.6",
             "--hflip", "0", "--randaug-end", "4",
             "--no-plots", "--device", "cpu"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          "-m", "effnet", "train", *flags, "--output", str(tmp_path / "ddp")],
                         env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.count("effnet train: mobilenet_v2_035") == 1  # only rank 0 prints
    assert ddp.stdout.count("epoch  12/12") == 1 and "device cpu x2" in ddp.stdout
    assert _files(tmp_path / "ddp") == {"best.safetensors", "config.json", "last.json", "metrics.csv",
                                        "metrics.jsonl", "epoch-0012.safetensors", "epoch-0012.state.pt"}
    assert not (tmp_path / "runs").exists()  # no stray run folder from rank 1
    ddp_acc = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])["val_acc"]
    # one process with the same global batch (2 x 8) and the same recipe
    single = train(TrainConfig(**{**TINY, "epochs": 12, "ema_decay": 0.998}, data=str(digits_folder),
                               output=str(tmp_path / "one")))
    one_acc = single.history[-1]["val_acc"]
    assert min(ddp_acc, one_acc) >= 0.25 and abs(ddp_acc - one_acc) <= 0.2, (ddp_acc, one_acc)  # chance is 0.1
