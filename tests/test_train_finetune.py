"""Fine-tuning (effnet train --weights): head, stem, freezing, BN, lr groups, resume and bad input."""

from __future__ import annotations

import json

import pytest
import torch

import effnet
from effnet.cli import main
from effnet.train import TrainConfig, checkpoint, train
from effnet.train.config import TrainError
from effnet.train.data import load_dataset
from effnet.train.finetune import apply_freeze, describe_start, frozen_at, load_start, model_parts
from effnet.train.optim import build_optimizer, build_scheduler
from effnet.weights import export_state_dict, load_checkpoint, load_pretrained, read_weights
from support import randomized_model, train_until_interrupted

MODEL = "mobilenet_v2_035"
# Three digit classes, 16 training images each, 32 px: a run of 2 epochs takes a few seconds on one thread.
TINY = {"model": MODEL, "classes": "0,1,2", "train_per_class": 16, "batch_size": 16, "image_size": 32,
        "epochs": 2, "optimizer": "adamw", "lr": 0.004, "workers": 0, "progress": False, "plots": False,
        "ema_decay": 0.0, "scale_min": 0.6, "hflip": 0.0}


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _pretrained(path, classes=("0", "1", "2"), mean=(0.5, 0.5, 0.5), size=32):
    """An effnet file with class names, eval size and normalisation, random weights and BN statistics."""
    model = randomized_model(MODEL, num_classes=len(classes))
    effnet.save(model, path, class_names=classes, eval_size=size,
                normalization={"mean": list(mean), "std": [0.25] * len(mean)})
    return model


def _err(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- the head and the stem
def test_head_kept_when_classes_match_and_new_otherwise(tmp_path):
    src = _pretrained(tmp_path / "p.safetensors")
    config = TrainConfig(model=MODEL, weights=str(tmp_path / "p.safetensors"))
    kept, start = load_start(config, ["0", "1", "2"], (0.1,) * 3, (0.2,) * 3, None, {})
    assert start.head_loaded and torch.equal(kept.classifier.weight, src.classifier.weight)
    assert start.mean == [0.5] * 3 and start.normalization_from == "checkpoint" and start.resolution == 32
    assert torch.equal(kept.stages[2][0].depthwise.norm.running_var, src.stages[2][0].depthwise.norm.running_var)
    assert "head kept" in describe_start(start, ["0", "1", "2"], 3)[0]

    renamed, start = load_start(config, ["0", "1", "7"], (0.1,) * 3, (0.2,) * 3, None, {})
    assert not start.head_loaded and not torch.equal(renamed.classifier.weight, src.classifier.weight)
    assert "other class names" in describe_start(start, ["0", "1", "7"], 3)[0]

    more, start = load_start(config, list("abcde"), (0.1,) * 3, (0.2,) * 3, None, {})
    assert more.classifier.weight.shape[0] == 5 and not start.head_loaded
    assert torch.equal(more.head.conv.weight, src.head.conv.weight)  # everything below the head is loaded
    assert "the checkpoint has 3 classes, the data 5; classifier re-initialised" in describe_start(
        start, list("abcde"), 3)[0]


@pytest.mark.parametrize("in_chans", [1, 2, 4, 6])
def test_stem_adapts_and_a_gray_image_gives_the_rgb_output(tmp_path, in_chans):
    src = _pretrained(tmp_path / "p.safetensors")
    model, info = load_pretrained(MODEL, tmp_path / "p.safetensors", num_classes=3, in_chans=in_chans)
    assert info.stem_channels == 3 and model.stem.conv.weight.shape[1] == in_chans
    gray = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = src.eval()(gray.expand(-1, 3, -1, -1))
        got = model.eval()(gray.expand(-1, in_chans, -1, -1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if in_chans == 6:  # a multiple of 3: timm's repeat-and-rescale exactly (each filter twice, halved)
        torch.testing.assert_close(model.stem.conv.weight, src.stem.conv.weight.repeat(1, 2, 1, 1) / 2)


def test_peer_file_through_weights_from(tmp_path):
    src = randomized_model(MODEL, num_classes=3)
    torch.save(export_state_dict(src, "timm"), tmp_path / "timm.pth")
    config = TrainConfig(model=MODEL, weights_from=["timm", "mobilenetv2_035", str(tmp_path / "timm.pth")])
    model, start = load_start(config, ["a", "b", "c"], (0.5,) * 3, (0.5,) * 3, None, {})
    assert start.source == "timm" and start.normalization_from.startswith("ImageNet")
    assert start.head_loaded  # same count; a peer file names no classes
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))


# ---------------------------------------------------------------- freezing, BN, lr groups
def _step(model, optimizer, keep_eval, steps=3):
    for _ in range(steps):
        model.train()
        for m in keep_eval:
            m.eval()
        loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_freeze_backbone_and_stages_really_freeze():
    torch.manual_seed(0)
    model = effnet.create_model(MODEL, num_classes=3)
    parts = model_parts(model)
    assert parts == ["stem", *(f"stages.{i}" for i in range(7)), "head"]
    for freeze, n_frozen in (("backbone", 9), ("stages:2", 3), ("none", 0)):
        frozen = frozen_at(TrainConfig(freeze=freeze), parts, 0)
        assert frozen == tuple(parts[:n_frozen])
        before = {k: v.clone() for k, v in model.state_dict().items()}
        keep_eval = apply_freeze(model, frozen, freeze_bn=False)
        optimizer = build_optimizer(model, TrainConfig(optimizer="adamw", lr=0.01), 0.01)
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        _step(model, optimizer, keep_eval)
        modules = dict(model.named_modules())
        for name in parts:
            is_frozen = name in frozen
            for key, p in modules[name].named_parameters():
                assert (id(p) in in_optimizer) != is_frozen and p.requires_grad != is_frozen
                assert (p.grad is None) == is_frozen
            if is_frozen:  # weights and BN statistics alike
                assert all(torch.equal(t, before[f"{name}.{k}"]) for k, t in modules[name].state_dict().items())
        assert not torch.equal(model.classifier.weight, before["classifier.weight"])
        if freeze == "stages:2":  # the first unfrozen stage moved
            assert not torch.equal(model.stages[2][0].project.conv.weight, before["stages.2.0.project.conv.weight"])


def test_gradual_unfreezing_and_head_only_epochs():
    parts = ["stem", "stages.0", "stages.1", "head"]
    config = TrainConfig(freeze="backbone", unfreeze_every=2, head_only_epochs=1)
    assert [frozen_at(config, parts, e) for e in range(8)] == [
        tuple(parts), tuple(parts), tuple(parts), tuple(parts[:3]), tuple(parts[:3]), tuple(parts[:2]),
        tuple(parts[:2]), tuple(parts[:1])]
    assert frozen_at(TrainConfig(head_only_epochs=2), parts, 1) == tuple(parts)
    assert frozen_at(TrainConfig(head_only_epochs=2), parts, 2) == ()


def test_freeze_bn_keeps_running_statistics():
    torch.manual_seed(0)
    model = effnet.create_model(MODEL, num_classes=3)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    keep_eval = apply_freeze(model, (), freeze_bn=True)
    weights = model.stages[1][0].project.conv.weight.clone()
    _step(model, build_optimizer(model, TrainConfig(optimizer="adamw"), 0.01), keep_eval)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    assert not torch.equal(model.stages[1][0].project.conv.weight, weights)  # the rest trains
    _step(model, build_optimizer(model, TrainConfig(optimizer="adamw"), 0.01), apply_freeze(model, (), False), 1)
    assert not all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())  # without it they move


def test_backbone_lr_multiplier_in_optimizer_groups():
    model = effnet.create_model(MODEL, num_classes=3)
    config = TrainConfig(optimizer="sgd", backbone_lr_mult=0.1, weight_decay=1e-4)
    optimizer = build_optimizer(model, config, 0.5)
    groups = {(g["name"], g["weight_decay"]): g for g in optimizer.param_groups}
    assert set(groups) == {("head", 1e-4), ("head", 0.0), ("backbone", 1e-4), ("backbone", 0.0)}
    head = {id(p) for g in optimizer.param_groups if g["name"] == "head" for p in g["params"]}
    assert head == {id(model.classifier.weight), id(model.classifier.bias)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    scheduler = build_scheduler(optimizer, TrainConfig(warmup_epochs=0, epochs=4), 10, 0.5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert 0 < lrs["backbone"] < 0.5 and lrs["backbone"] == pytest.approx(0.1 * lrs["head"])
    # with the multiplier at 1 the groups are the plain decay / no-decay pair
    assert len(build_optimizer(model, TrainConfig(optimizer="sgd"), 0.5).param_groups) == 2


# ---------------------------------------------------------------- runs
def test_finetuning_run_resumes_exactly_without_its_source_file(tmp_path, monkeypatch, capsys):
    _pretrained(tmp_path / "p.safetensors", classes=("a", "b", "c", "d"))
    # head-only for 1 epoch, then stem + stage 1 frozen, then one more part thawed each epoch: the set of
    # trained parameters changes at every epoch, including right after the interruption.
    config = dict(TINY, epochs=3, weights=str(tmp_path / "p.safetensors"), head_only_epochs=1, freeze="stages:1",
                  unfreeze_every=1, freeze_bn=True, backbone_lr_mult=0.5, ema_decay=0.9)
    full = train(TrainConfig(**config, output=str(tmp_path / "full")))
    out = capsys.readouterr().out
    assert "new head: the checkpoint has 4 classes, the data 3" in out and "recipe: lr 0.004" in out
    assert "epoch 2: frozen now: stem, stages.0" in out and "epoch 3: frozen now: stem\n" in out
    assert full.start.head_loaded is False and full.start.resolution == 32

    train_until_interrupted(monkeypatch, TrainConfig(**config, output=str(tmp_path / "split")), 1)
    (tmp_path / "p.safetensors").unlink()  # the resumed run continues from its own checkpoint
    train(TrainConfig(output=str(tmp_path / "split"), resume=True, progress=False, plots=False))
    a, meta = read_weights(tmp_path / "full" / "epoch-0003.safetensors")
    b, _ = read_weights(tmp_path / "split" / "epoch-0003.safetensors")
    assert all(a[k].equal(b[k]) for k in a), "resumed fine-tuning run differs"
    # the checkpoint's normalisation (not the digits' own 0.5/0.5) is what predict/evaluate will use
    assert meta.normalization.mean == (0.5,) * 3 and meta.normalization.std == (0.25,) * 3
    assert meta.training["pretrained"].endswith("p.safetensors")


def test_gray_finetuning_stores_its_normalisation_for_predict(tmp_path, capsys):
    _pretrained(tmp_path / "p.safetensors", mean=(0.2, 0.4, 0.6))
    argv = ["train", "--weights", str(tmp_path / "p.safetensors"), "--in-chans", "1", "--freeze", "backbone",
            "--output", str(tmp_path / "g"), "--model", MODEL, "--classes", "0,1,2", "--train-per-class", "16",
            "--image-size", "32", "--epochs", "1", "--stages", "1", "--workers", "0", "--no-progress", "--no-plots"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stem adapted from 3 to 1 input channels (filters summed)" in out and "head kept" in out
    model, meta = load_checkpoint(tmp_path / "g" / "best.safetensors")
    assert model.config.in_chans == 1 and meta.normalization.mean == pytest.approx([0.4])
    assert meta.eval_size == (32, 32)
    from PIL import Image
    Image.new("RGB", (8, 8), (200, 200, 200)).save(tmp_path / "x.png")
    best = str(tmp_path / "g" / "best.safetensors")
    assert main(["predict", "--weights", best, str(tmp_path / "x.png")]) == 0
    capsys.readouterr()
    # evaluate finds the same 3 classes of the digits again, in gray, without flags
    assert main(["evaluate", "--weights", best, "--confusion", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "digits validation" in out and [line.split()[0] for line in out.splitlines()[2:5]] == ["0", "1", "2"]


def test_finetuning_defaults_and_data_subsets():
    config = TrainConfig.for_data(None, weights="w.safetensors")
    assert config.lr == pytest.approx(0.0005) and (config.randaug_start, config.randaug_end) == (1, 3)
    assert config.size_start is None  # the schedule starts at the checkpoint's resolution
    assert TrainConfig.for_data(None, weights="w", lr=0.01, randaug_end=7).lr == 0.01
    data = load_dataset(TrainConfig(classes="7,3", train_per_class=5))
    assert data.classes == ["3", "7"] and len(data.train) == 10
    full_val = load_dataset(TrainConfig()).val.targets
    assert data.val.targets.tolist().count(1) == int((full_val == 7).sum())  # validation: all of 3 and 7
    assert data.val.targets.tolist().count(0) == int((full_val == 3).sum()) and len(data.val) == \
        int((full_val == 3).sum() + (full_val == 7).sum())
    assert torch.equal(data.val.images[data.val.targets == 1], load_dataset(TrainConfig()).val.images[full_val == 7])


# ---------------------------------------------------------------- bad input, one line each
def test_bad_finetuning_input_gets_one_line(tmp_path, capsys, monkeypatch):
    _pretrained(tmp_path / "p.safetensors")
    base = ["train", "--classes", "0,1,2", "--epochs", "1", "--no-progress", "--no-plots"]
    err = _err(capsys, [*base, "--model", "mobilenet_v2_050", "--weights", str(tmp_path / "p.safetensors")])
    assert "holds a 'mobilenet_v2_035' checkpoint, not 'mobilenet_v2_050'" in err
    err = _err(capsys, [*base, "--model", "mobilenet_v2_035", "--width", "0.5", "--weights", str(tmp_path / "p.safetensors")])
    assert "another stage table" in err
    src = randomized_model("efficientnet_b0", num_classes=3)
    torch.save(export_state_dict(src, "timm"), tmp_path / "b0.pth")
    err = _err(capsys, [*base, "--model", MODEL, "--weights-from", "timm", "efficientnet_b0", str(tmp_path / "b0.pth")])
    assert "timm efficientnet_b0 weights are for effnet model 'efficientnet_b0', not 'mobilenet_v2_035'" in err
    (tmp_path / "notes.txt").write_text("not weights")
    err = _err(capsys, [*base, "--model", MODEL, "--weights", str(tmp_path / "notes.txt")])
    assert "notes.txt: not a safetensors file (unrecognised file header)" in err
    err = _err(capsys, [*base, "--model", MODEL, "--weights", str(tmp_path / "p.safetensors"), "--freeze", "stages:99"])
    assert "--freeze stages:99: mobilenet_v2_035 has 7 stages; K must be 0 to 7" in err
    assert "freeze must be backbone, stages:K" in _err(capsys, [*base, "--freeze", "top"])

    # offline, a published name that is not cached: the cache path and the file to put there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import urllib.error

    def offline(url, dst, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    err = _err(capsys, [*base, "--model", "mobilenet_v2_050", "--weights", "timm"])
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "timm--mobilenetv2_050.lamb_in1k.safetensors") in err

    # --weights with --resume: only when it names other weights than the run started from
    run = tmp_path / "run"
    train(TrainConfig(**dict(TINY, epochs=1), output=str(run)))
    err = _err(capsys, ["train", "--output", str(run), "--resume", "--weights", str(tmp_path / "p.safetensors")])
    assert "conflicts with --resume" in err and "started from random weights" in err
    with pytest.raises(TrainError, match="give --weights or --weights-from, not both"):
        TrainConfig(weights="a", weights_from=["timm", "x", "y"])
    state = checkpoint.load_state(checkpoint.last_checkpoint(run)[1])
    assert json.loads(json.dumps(state["config"]))["weights"] is None
