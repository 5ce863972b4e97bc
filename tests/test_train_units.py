"""effnet.train pieces without a training run: schedule, config, data, sampler, optimiser, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.cli import main
from effnet.errors import CheckpointError
from effnet.train import checkpoint as ckpt
from effnet.train.config import TrainConfig, TrainError
from effnet.train.data import load_dataset, load_digits, train_loader, train_transform
from effnet.train.ema import ModelEma
from effnet.train.optim import RMSpropTF, WarmupDecay, build_optimizer
from effnet.train.progressive import PRESETS, build_schedule, schedule_from_config, stage_at
from effnet.weights import create_model, save


# ---------------------------------------------------------------- progressive schedule
def test_stage_boundaries_split_epochs_evenly():
    s = build_schedule(10, 4, (128, 300), (5, 15), (0, 0), (0.1, 0.3))
    assert [(x.first_epoch, x.end_epoch) for x in s] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert [stage_at(s, e).index for e in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_values_are_linearly_interpolated_and_last_stage_uses_end_values():
    s = build_schedule(8, 4, (128, 300), (5, 15), (0.0, 0.3), (0.1, 0.4), size_multiple=8)
    # 128 + 172 * i/3 = 128, 185.3, 242.7, 300 -> rounded to multiples of 8, except the last (exact)
    assert [x.image_size for x in s] == [128, 184, 240, 300]
    assert [x.randaug for x in s] == [5, 8, 12, 15]  # 8.33 and 11.67 rounded to torchvision's integer bins
    assert [x.mixup for x in s] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert [x.dropout for x in s] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_presets_reproduce_paper_table6_scaled_to_final_size():
    assert PRESETS["v2-s"].randaug == (5, 15) and PRESETS["v2-m"].mixup == (0.0, 0.2)
    assert PRESETS["v2-l"].dropout == (0.1, 0.5) and PRESETS["v2-l"].randaug == (5, 25)
    s = schedule_from_config(TrainConfig(progressive="v2-s", epochs=8), 300, 0.2, 32)
    assert (s[0].image_size, s[-1].image_size, s[0].randaug, s[-1].randaug) == (128, 300, 5, 15)
    assert (s[0].dropout, s[-1].dropout) == (0.1, 0.3)
    m = schedule_from_config(TrainConfig(progressive="v2-m", epochs=8), 64, 0.2, 16)
    assert m[0].image_size == 24 and m[-1].image_size == 64  # 64 * 128/380 = 21.6 -> 24
    assert [x.mixup for x in m] == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2], abs=1e-6)
    # explicit values beat the preset; no preset means constant values
    o = schedule_from_config(TrainConfig(progressive="v2-l", epochs=8, randaug_end=7, size_start=48), 64, 0.2, 32)
    assert o[-1].randaug == 7 and o[0].image_size == 48 and o[-1].dropout == 0.5
    c = schedule_from_config(TrainConfig(epochs=5), 32, 0.25, 32)
    assert len(c) == 1 and (c[0].image_size, c[0].dropout, c[0].mixup) == (32, 0.25, 0.0)


def test_schedule_errors_are_clear():
    with pytest.raises(TrainError, match="need at least 4 epochs"):
        build_schedule(3, 4, (16, 32), (5, 5), (0, 0), (0, 0))
    with pytest.raises(TrainError, match="below the smallest size"):
        schedule_from_config(TrainConfig(epochs=4, stages=2, size_start=16), 64, 0.2, 32)


def test_stage_transform_produces_the_stage_size():
    config = TrainConfig()
    data = load_dataset(config)
    for stage in build_schedule(4, 2, (32, 48), (9, 9), (0, 0), (0.2, 0.2)):
        out = train_transform(stage, config, data)(data.train[0][0])
        assert out.shape == (3, stage.image_size, stage.image_size) and out.dtype == torch.float32


# ---------------------------------------------------------------- config and data
def test_config_rejects_bad_values_with_one_line():
    for kwargs, text in [({"optimizer": "lamb"}, "optimizer must be one of"), ({"epochs": 0}, "epochs must be"),
                         ({"progressive": "v2-xl"}, "progressive must be"), ({"val_fraction": 1.5}, "val_fraction"),
                         ({"ema_decay": 1.0}, "ema_decay"), ({"image_size": 31.5}, "image_size")]:
        with pytest.raises(TrainError, match=text):
            TrainConfig(**kwargs)


def test_embedded_digits_need_no_sklearn(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
    images, targets = load_digits()
    assert images.shape == (1797, 3, 8, 8) and images.dtype == torch.uint8 and int(images.max()) == 255
    assert torch.bincount(targets).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    data = load_dataset(TrainConfig())
    assert len(data.train) + len(data.val) == 1797 and len(data.val) == pytest.approx(0.2 * 1797, abs=10)


def test_digits_match_sklearn_when_it_is_installed():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ref = sklearn_datasets.load_digits()
    images, targets = load_digits()
    assert np.array_equal(images[:, 0].numpy(), (ref.images.astype(np.int32) * 255 + 8) // 16)
    assert np.array_equal(targets.numpy(), ref.target)


def _png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _err(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_data_folders_get_one_line(tmp_path, capsys):
    assert "does not exist" in _err(capsys, ["train", "--data", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert "no class folders" in _err(capsys, ["train", "--data", str(tmp_path / "empty")])
    _png(tmp_path / "d" / "a" / "1.png")
    (tmp_path / "d" / "b").mkdir()
    assert "class folder" in _err(capsys, ["train", "--data", str(tmp_path / "d")]) and "has no images" in \
        _err(capsys, ["train", "--data", str(tmp_path / "d")])


def test_unreadable_images_stop_or_are_skipped(tmp_path, capsys):
    for c in "ab":
        for i in range(3):
            _png(tmp_path / c / f"{i}.png", 40 * i)
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    err = _err(capsys, ["train", "--data", str(tmp_path)])
    assert "1 unreadable image(s)" in err and str(tmp_path / "a" / "broken.png") in err and "--bad-images skip" in err
    data = load_dataset(TrainConfig(data=str(tmp_path), bad_images="skip"))
    assert data.skipped == [str(tmp_path / "a" / "broken.png")] and len(data.train) + len(data.val) == 6


def test_image_size_the_model_cannot_take(capsys):
    err = _err(capsys, ["train", "--image-size", "16", "--epochs", "1"])
    assert "image size 16 is too small" in err and "at least 32" in err


# ---------------------------------------------------------------- sampler, optimiser, EMA
def test_distributed_shards_do_not_overlap_and_cover_everything():
    data = load_dataset(TrainConfig())
    seen = []
    for rank in range(2):
        loader = train_loader(data.train, None, batch_size=8, rank=rank, world=2, seed=3, epoch=1, workers=0)
        seen.append(list(loader.sampler))
    assert not set(seen[0]) & set(seen[1]) or len(data.train) % 2  # padding repeats at most one index
    assert set(seen[0]) | set(seen[1]) == set(range(len(data.train)))
    again = list(train_loader(data.train, None, batch_size=8, rank=0, world=2, seed=3, epoch=1, workers=0).sampler)
    other_epoch = list(train_loader(data.train, None, batch_size=8, rank=0, world=2, seed=3, epoch=2,
                                    workers=0).sampler)
    assert again == seen[0] and other_epoch != seen[0]  # per-epoch seeding, reproducible


def test_no_weight_decay_on_norm_and_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.1), 1e-3)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}


def test_rmsprop_tf_puts_epsilon_inside_the_root():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.0)
    p.grad = torch.tensor([2.0])
    opt.step()
    ms = 0.9 * 1.0 + 0.1 * 4.0  # mean square starts at 1, as in TensorFlow
    assert p.item() == pytest.approx(-0.1 * 2.0 / (ms + 1e-3) ** 0.5)


def test_warmup_then_cosine_and_exponential():
    cos = WarmupDecay("cosine", total_steps=100, warmup_steps=10, steps_per_epoch=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == 1.0 and cos(55) == pytest.approx(0.5) and cos(100) == 0.0
    exp = WarmupDecay("exponential", 100, 0, steps_per_epoch=10, decay_rate=0.97, decay_epochs=2.4)
    assert exp(23) == 1.0 and exp(24) == pytest.approx(0.97) and exp(48) == pytest.approx(0.97**2)


def test_ema_follows_weights_with_warmup():
    model = torch.nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = ema.module.weight.clone()
    ema.update(model)  # first update: decay min(0.99, 2/11)
    assert torch.allclose(ema.module.weight, before + (1 - 2 / 11) * (1.0 - before))


# ---------------------------------------------------------------- checkpoint files
def test_state_round_trips_without_pickle_and_a_damaged_one_is_one_line(tmp_path, capsys):
    state = {k: [] for k in ckpt.STATE_KEYS} | {"rng": ckpt.rng_state(), "epoch": 3}
    ckpt.save_state(tmp_path / "s.pt", state)
    loaded = ckpt.load_state(tmp_path / "s.pt")  # weights_only=True inside
    expected = (torch.rand(2), np.random.rand(), __import__("random").random())
    torch.rand(5), np.random.rand(3), __import__("random").random()  # move every generator on
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(expected[0], torch.rand(2)) and expected[1] == np.random.rand()
    assert expected[2] == __import__("random").random()

    data = (tmp_path / "s.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    for name, message in (("cut.pt", "corrupt or truncated PyTorch file"), ("empty.pt", "corrupt or truncated"),
                          ("other.pt", "not an effnet train state file")):
        with pytest.raises(CheckpointError, match=message) as e:
            ckpt.load_state(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)
    # through the CLI: a run whose newest state file was cut short
    run = tmp_path / "run"
    run.mkdir()
    (run / "epoch-0001.state.pt").write_bytes(data[: len(data) // 2])
    save(create_model("mobilenet_v1_025", num_classes=10), run / "epoch-0001.safetensors")
    (run / "last.json").write_text(json.dumps({"epoch": 1, "weights": "epoch-0001.safetensors",
                                               "state": "epoch-0001.state.pt"}))
    assert "corrupt or truncated PyTorch file" in _err(capsys, ["train", "--output", str(run), "--resume"])


def test_foreign_or_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert "no such checkpoint file" in _err(capsys, ["predict", "--weights", str(tmp_path / "no.safetensors"),
                                                       "x.png"])
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    assert "not an effnet file" in _err(capsys, ["evaluate", "--weights", str(tmp_path / "foreign.safetensors")])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.json").write_text(json.dumps({"epoch": 1, "weights": "gone.safetensors",
                                                            "state": "gone.state.pt"}))
    assert "missing" in _err(capsys, ["train", "--output", str(tmp_path / "run"), "--resume"])


def test_cifar_without_network_is_one_line(monkeypatch, tmp_path, capsys):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("URLError: no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    err = _err(capsys, ["train", "--data", "cifar10", "--data-dir", str(tmp_path)])
    assert "could not get CIFAR-10" in err and "no route to host" in err


def test_trivialaugment_and_batch_mixing():
    from effnet.train.engine import batch_mixer
    from effnet.train.progressive import ProgressiveStage

    config = TrainConfig(augment="trivialaugment")
    data = load_dataset(config)
    out = train_transform(ProgressiveStage(0, 0, 1, 40, 0, 0.0, 0.1), config, data)(data.train[0][0])
    assert out.shape == (3, 40, 40)
    assert batch_mixer(0.0, 0.0, 10) is None
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    mixed, soft = batch_mixer(0.4, 1.0, 10)(images, labels)  # MixUp or CutMix, one per batch
    assert mixed.shape == images.shape and soft.shape == (4, 10) and torch.allclose(soft.sum(1), torch.ones(4))
    assert (soft > 0).sum(1).max() == 2  # two classes mixed into each target


# ---------------------------------------------------------------- effnet train --help
def test_train_help_is_each_fields_metadata_with_its_real_default(capsys):
    import dataclasses

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    packed = "".join(text.split())  # and breaks them after hyphens too ("state-" / "dict")
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"{f.name} has no help in its field metadata"
        assert "".join(f"{f.metadata['help']} (default: ".split()) in packed, f.name
        assert f.default is not None or f.metadata["default_text"], f"{f.name}: say what None means"
    assert "None" not in text
    assert "passes over the training set (default: 25 for digits, else 30)" in text  # the recipe's, then generic
    assert "(default: mobilenet_v2_050)" in text and "(default: the model's own)" in text
    assert "torch.compile the model (one recompilation per progressive size) (default: off)" in text
