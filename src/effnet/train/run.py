"""``train(config)``: data, model, schedule, the epoch loop, checkpoints and reports.

Single process:   effnet train --model efficientnet_v2_b0 --data path/to/folder --progressive v2-s
Data-parallel:    torchrun --nproc_per_node 2 -m effnet train --data path/to/folder
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from effnet.devices import set_threads
from effnet.io import remove_stale_temp_files, write_atomic
from effnet.model import EfficientConvNet
from effnet.train import checkpoint as ckpt
from effnet.train import distributed
from effnet.train.config import TrainConfig, TrainError
from effnet.train.data import eval_transform, load_dataset, train_loader, train_transform, val_loader
from effnet.train.ema import ModelEma
from effnet.train.engine import Precision, batch_mixer, evaluate, train_one_epoch
from effnet.train.finetune import (
    StartPoint,
    apply_freeze,
    check_freeze,
    describe_recipe,
    describe_start,
    fit_normalization,
    frozen_at,
    load_start,
    model_parts,
)
from effnet.train.optim import build_optimizer, build_scheduler, peak_lr, rebuild_optimizer
from effnet.train.plots import plot_curves, plot_schedule, write_metrics
from effnet.train.progressive import (
    ProgressiveStage,
    format_schedule,
    schedule_from_config,
    schedule_to_dicts,
    stage_at,
)
from effnet.weights import save
from effnet.weights.checkpoints import check_and_load, read_weights
from effnet.weights.format import Normalization, read_metadata
from effnet.zoo import create_model, model_config

# Fields a resumed run may change: they do not alter what is computed.
# (Not workers: augmentation draws from per-worker generators, so the worker count changes the images.)
RESUME_MAY_CHANGE = ("output", "resume", "progress", "plots", "device", "check_images", "threads")
# Fields a resumed run takes when they are asked for: more epochs extend the run (the learning-rate and
# progressive schedules stretch to the new length).  Every other field must match the run's.
RESUME_MAY_EXTEND = ("epochs",)


@dataclass
class RunResult:
    """What a finished run returns: where it wrote, its best accuracy, its per-epoch history."""

    run_dir: Path | None
    best_path: Path | None
    best_acc: float
    best_weights: str  # "raw" or "ema"
    history: list[dict]
    schedule: list[ProgressiveStage]
    start: StartPoint | None = None  # the pretrained starting point (None: random initialisation)


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every random draw of an epoch derives from (seed, epoch, rank): resume then replays exactly."""
    s = (seed * 1_000_003 + epoch * 1009 + rank) % 2**32
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def _say(d: distributed.Dist, text: str) -> None:
    if d.main:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)


def _data_source(data: str | None) -> str | None:
    """How evaluate finds the data again: a name, or the folder as an absolute path."""
    if data in (None, "", "digits", "photos", "cifar10", "cifar100"):
        return data
    return str(Path(data).expanduser().resolve())


def _new_run_dir() -> Path:
    n = 1
    while Path("runs", f"train-{n}").exists():
        n += 1
    return Path("runs", f"train-{n}")


def _sizes(config: TrainConfig, default_final: int, min_size: int) -> tuple[int, int]:
    """(final training size, eval size), checked against the model's total stride."""
    final = config.image_size or default_final
    eval_size = config.eval_size or final
    for name, size in (("image size", final), ("eval size", eval_size)):
        if size < min_size:
            raise TrainError(f"{name} {size} is too small for {config.model}: it needs at least {min_size} pixels "
                             f"(its total stride) so the last stage sees more than padding")
    return final, eval_size


def _build_model(config: TrainConfig, data, resume_weights: Path | None, resume_state: dict | None):
    """(model, final size, eval size, min size, start point): random or pretrained weights, as configured."""
    num_classes = len(data.classes)
    overrides = {k: getattr(config, k) for k in ("width", "depth", "phi", "spec") if getattr(config, k) is not None}
    try:
        # A spec file names its own base model (activation, dropout, BN); --model does not apply to it.
        base = model_config(None if config.spec else config.model, num_classes=num_classes, in_chans=config.in_chans,
                            drop_path_rate=config.drop_path_rate, **overrides)
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from None
    min_size = base.spec.output_stride
    check_freeze(config, len(base.spec.stages))  # before any weights are read
    start = None
    if not config.pretrained:
        final, eval_size = _sizes(config, data.image_size or base.resolution, min_size)
        model = create_model(base.name, num_classes=num_classes, in_chans=config.in_chans,
                             drop_path_rate=config.drop_path_rate, resolution=eval_size, **overrides)
    else:
        if resume_state is not None:  # the run's own checkpoint replaces the starting weights: no source file needed
            start = StartPoint(**resume_state["start"])
            model = EfficientConvNet(read_metadata(resume_weights).config)
        else:
            model, start = load_start(config, data.classes, data.mean, data.std, config.drop_path_rate, overrides)
        # The weights expect the inputs they were trained on: their normalisation, and sizes near theirs.
        data.mean, data.std = fit_normalization(start.mean, start.std, config.in_chans)
        final, eval_size = _sizes(config, start.resolution, min_size)
        model.config = dataclasses.replace(model.config, resolution=eval_size)
    if config.zero_head and (start is None or not start.head_loaded):
        # U(+-1/sqrt(num_classes)) suits 1000 classes; with few classes it starts at confidently wrong logits.
        torch.nn.init.zeros_(model.classifier.weight)
    return model, final, eval_size, min_size, start


def _resolve_resume(config: TrainConfig, requested: Collection[str] | None
                    ) -> tuple[TrainConfig, dict | None, Path | None, list[str]]:
    """With ``resume``: the saved config with the allowed changes, its state, weights path and what changed.

    ``requested`` names the fields the caller asked for (the CLI's flags); None takes every field that
    differs from TrainConfig's default.  Asking for another value of a field that must match is an error.
    """
    if not config.resume:
        return config, None, None, []
    if config.output is None:
        raise TrainError("--resume needs --output, the run folder to continue")
    found = ckpt.last_checkpoint(config.output)
    if found is None:
        raise TrainError(f"nothing to resume in {config.output} (no {ckpt.POINTER}); start without --resume")
    weights_path, state_path = found
    state = ckpt.load_state(state_path)
    saved = TrainConfig.from_dict(state["config"])
    for name in ("weights", "weights_from"):
        given = getattr(config, name)
        if given is not None and given != getattr(saved, name):
            began = saved.weights or (" ".join(saved.weights_from) if saved.weights_from else "random weights")
            flag = "--" + name.replace("_", "-")
            raise TrainError(f"{flag} {given if isinstance(given, str) else ' '.join(given)} conflicts with "
                             f"--resume: the run in {config.output} started from {began} and continues from its "
                             f"own checkpoint; leave {flag} out, or start a new run with another --output")
    if requested is None:
        requested = {f.name for f in dataclasses.fields(TrainConfig) if getattr(config, f.name) != f.default}
    fixed = sorted(set(requested) - set(RESUME_MAY_CHANGE) - set(RESUME_MAY_EXTEND))
    clash = [f"--{k.replace('_', '-')} {_shown(k, getattr(config, k))} (the run has {_shown(k, getattr(saved, k))})"
             for k in fixed if _shown(k, getattr(config, k)) != _shown(k, getattr(saved, k))]
    if clash:
        may = ", ".join(f"--{k}" for k in ("epochs", "device", "threads", "progress", "plots"))
        raise TrainError(f"--resume continues the run in {config.output} as it was started, but you asked for "
                         f"{'; '.join(clash)}; a resume may change only {may} (a new --output starts a new run)")
    changed = {k: getattr(config, k) for k in RESUME_MAY_EXTEND
               if k in requested and getattr(config, k) != getattr(saved, k)}
    if "epochs" in changed and changed["epochs"] <= state["epoch"]:
        raise TrainError(f"the run in {config.output} already finished epoch {state['epoch']}; to extend it, "
                         f"pass --epochs {state['epoch'] + 1} or more (got {changed['epochs']})")
    notes = [f"--{k} {v} instead of the run's {getattr(saved, k)}" for k, v in changed.items()]
    config = dataclasses.replace(saved, **{k: getattr(config, k) for k in RESUME_MAY_CHANGE}, **changed)
    return config, state, weights_path, notes


def _shown(field_name: str, value) -> str:
    """A flag's value as compared and shown: no --data means the digits, a data folder its full path."""
    if field_name == "data":
        return _data_source(value) or "digits"
    return "none" if value is None else str(value)


def _interrupted(run_dir: Path | None) -> str:
    """The one line for Ctrl-C: where the last complete checkpoint is and the command that continues."""
    found = ckpt.last_checkpoint(run_dir) if run_dir is not None and run_dir.is_dir() else None
    if found is None:
        return "interrupted before the first checkpoint; nothing to resume"
    return (f"interrupted; last good checkpoint: {found[0]}; continue with: "
            f"effnet train --output {run_dir} --resume")


def train(config: TrainConfig, *, requested: Collection[str] | None = None) -> RunResult:
    """Run training as the config says; under torchrun, every process calls this.

    With ``config.resume``, ``requested`` names the fields the caller set on purpose (see
    :func:`_resolve_resume`).  Ctrl-C raises KeyboardInterrupt with one line naming the last good
    checkpoint and the command that resumes from it.
    """
    set_threads(config.threads)
    d = distributed.setup(config.device)
    where: dict[str, Path] = {}  # the run folder, once known, for the interruption message
    try:
        return _train(config, d, requested, where)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(where.get("run_dir"))) from None
    finally:
        distributed.teardown(d)


def _train(config: TrainConfig, d: distributed.Dist, requested: Collection[str] | None,
           where: dict[str, Path]) -> RunResult:
    config, resume_state, resume_weights, resume_changes = _resolve_resume(config, requested)
    data = load_dataset(config)
    for path in data.skipped:
        _say(d, f"skipping unreadable image {path}")
    torch.manual_seed(config.seed)  # the initial weights; the same on every rank (DDP also broadcasts them)
    model, final_size, _, min_size, start = _build_model(config, data, resume_weights, resume_state)
    schedule = schedule_from_config(config, final_size, model.config.drop_rate, min_size,
                                    start.resolution if start else None)
    parts = model_parts(model)
    crop_pct = data.crop_pct if config.crop_pct is None else config.crop_pct

    run_dir = Path(config.output) if config.output else _new_run_dir()
    where["run_dir"] = run_dir
    if d.main:
        if not config.resume and (run_dir / ckpt.POINTER).exists():
            raise TrainError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --output")
        run_dir.mkdir(parents=True, exist_ok=True)
        # A run killed while writing a file left its temp file; nothing else writes to this folder.
        for stale in remove_stale_temp_files(run_dir):
            _say(d, f"removed {stale}, a partial write of an interrupted run")

    # Precision and placement: bf16 autocast and NHWC are the fast path on CUDA; fp32 NCHW on CPU.
    cuda = d.device.type == "cuda"
    amp = config.amp if config.amp != "auto" else ("bf16" if cuda else "off")
    precision = Precision({"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp],
                          config.channels_last if config.channels_last is not None else cuda)
    model.to(d.device, memory_format=torch.channels_last if precision.channels_last else torch.preserve_format)
    ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None

    global_batch = config.batch_size * d.world
    lr = peak_lr(config, global_batch)
    steps_per_epoch = -(-len(data.train) // d.world) // config.batch_size  # DistributedSampler share, drop_last
    if steps_per_epoch == 0:
        raise TrainError(f"{len(data.train)} training images give no full batch of {config.batch_size} per process")
    # What trains is a function of the epoch; a resumed run first rebuilds the set its checkpoint was saved with.
    start_epoch = resume_state["epoch"] if resume_state is not None else 0
    frozen = frozen_at(config, parts, max(0, start_epoch - 1))
    keep_eval = apply_freeze(model, frozen, config.freeze_bn)
    optimizer = build_optimizer(model, config, lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch, lr)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp == "fp16")

    global_step, history = 0, []
    best = {"acc": -1.0, "epoch": 0, "weights": "raw"}
    last_good = "none yet"
    if resume_state is not None:
        weights, saved = read_weights(resume_weights)
        if (saved.config.spec, saved.config.in_chans) != (model.config.spec, model.config.in_chans):
            raise TrainError(f"{resume_weights} holds {saved.config.name or 'a custom model'}'s weights, but the run "
                             f"in {run_dir} trains {model.config.name or 'a custom model'}: its folder mixes two "
                             "runs' files")
        if list(saved.class_names or ()) != data.classes:
            raise TrainError(f"checkpoint {resume_weights} has classes {list(saved.class_names or ())[:10]}, the "
                             f"data has {data.classes[:10]}; they must match to resume")
        check_and_load(model, weights, f"{resume_weights} (model {saved.config.name or 'custom'})")
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        if ema is not None:
            ema.load_state_dict(resume_state["ema"])
        ckpt.set_rng_state(resume_state["rng"])
        start_epoch, global_step = resume_state["epoch"], resume_state["global_step"]
        history, best = list(resume_state["history"]), dict(resume_state["best"])
        last_good = str(resume_weights)

    net = _wrap(model, config, d)

    n_params = sum(p.numel() for p in model.parameters())
    _say(d, f"effnet train: {model.config.name or config.model} ({n_params:,} parameters, {len(data.classes)} classes) on {data.name}: "
            f"{len(data.train)} train / {len(data.val)} val images")
    _say(d, f"device {d.device} x{d.world}, amp {amp}, channels_last {precision.channels_last}, "
            f"{config.optimizer} lr {lr:.4g} (global batch {global_batch}), {config.epochs} epochs, "
            f"EMA {config.ema_decay or 'off'}, output {run_dir}")
    _say(d, "progressive schedule" + (f" ({config.progressive}, paper Table 6 scaled to {final_size} px)"
                                      if config.progressive else "") + ":\n" + format_schedule(schedule))
    if start is not None:
        for line in describe_start(start, data.classes, config.in_chans):
            _say(d, line)
        _say(d, describe_recipe(config, lr, schedule))
    if resume_state is not None:
        _say(d, f"resuming after epoch {start_epoch} from {resume_weights} (the run's saved settings apply"
                + (f"; {', '.join(resume_changes)}" if resume_changes else "") + ")")
    if d.main:
        write_atomic(run_dir / "config.json", json.dumps(
            {"train": config.to_dict(), "model": model.config.to_dict(), "schedule": schedule_to_dicts(schedule),
             "classes": data.classes, "start": start.to_dict() if start else None}, indent=1).encode())

    workers = config.workers if config.workers is not None else (0 if data.in_memory else min(8, os.cpu_count() or 1))
    # What every weights file of the run says about itself (effnet.weights.save's keywords); "training"
    # holds what `effnet evaluate` needs to find the same validation split again.
    # "background": the digits are light on dark, so predict inverts a digit drawn dark on light.
    run_facts = {"data": data.name, "data_source": _data_source(config.data), "crop_pct": crop_pct,
                 "split": {"val_fraction": config.val_fraction, "split_seed": config.split_seed},
                 "classes_kept": config.classes, "pretrained": start.label if start else None,
                 "background": data.background}

    def file_metadata(size: int, **facts) -> dict:
        return {"class_names": data.classes, "eval_size": (size, size),
                "normalization": Normalization(data.mean, data.std), "training": {**run_facts, **facts}}

    run_start = time.perf_counter()

    for epoch in range(start_epoch, config.epochs):
        stage = stage_at(schedule, epoch)
        if frozen_at(config, parts, epoch) != frozen:
            # Gradual unfreezing / the end of --head-only-epochs: a new set trains, so a new optimiser (the
            # momenta of the parameters that already trained carry over) on the same lr schedule.
            frozen = frozen_at(config, parts, epoch)
            keep_eval = apply_freeze(model, frozen, config.freeze_bn)
            optimizer = rebuild_optimizer(optimizer, model, config, lr)
            scheduler = build_scheduler(optimizer, config, steps_per_epoch, lr, start_step=global_step)
            net = _wrap(model, config, d)  # DDP records the trainable parameters when it is built
            _say(d, f"epoch {epoch + 1}: " + (f"frozen now: {', '.join(frozen)}" if frozen else "everything trains"))
        # Validate at the stage's size unless --eval-size is set: BN statistics gathered at 32 px do not
        # fit 48 px inputs, so a fixed final size would read near chance for the early stages.
        stage_eval = config.eval_size or stage.image_size
        val_dl = val_loader(data.val, eval_transform(stage_eval, crop_pct, data.mean, data.std),
                            batch_size=max(config.batch_size, 64), rank=d.rank, world=d.world, workers=workers,
                            pin_memory=cuda)
        model.dropout.p = stage.dropout  # progressive regularisation: dropout grows with the stage
        seed_epoch(config.seed, epoch, d.rank)
        loader = train_loader(data.train, train_transform(stage, config, data), batch_size=config.batch_size,
                              rank=d.rank, world=d.world, seed=config.seed, epoch=epoch, workers=workers,
                              pin_memory=cuda)
        stats, global_step = train_one_epoch(
            net, loader, optimizer, scheduler, scaler, ema=ema,
            mixer=batch_mixer(stage.mixup, config.cutmix_alpha, len(data.classes)),
            label_smoothing=config.label_smoothing, clip_grad=config.clip_grad, precision=precision, dist=d,
            global_step=global_step, desc=f"epoch {epoch + 1}/{config.epochs}", progress=config.progress,
            last_good=last_good, keep_eval=keep_eval)
        val = evaluate(net, val_dl, precision, d)
        row = {"epoch": epoch + 1, "stage": stage.index + 1, "image_size": stage.image_size,
               "image_size_seen": stats.image_size, "randaug": stage.randaug, "mixup": stage.mixup,
               "dropout": stage.dropout, "lr": optimizer.param_groups[0]["lr"], "train_loss": stats.loss,
               "train_acc": stats.acc, "val_loss": val["loss"], "val_acc": val["acc"], "val_top5": val["top5"],
               "images_per_s": stats.images / stats.seconds, "epoch_s": stats.seconds,
               "eval_size": stage_eval}
        candidates = {"raw": val["acc"]}
        if ema is not None:
            ema_val = evaluate(ema.module, val_dl, precision, d)
            row.update(ema_val_loss=ema_val["loss"], ema_val_acc=ema_val["acc"], ema_val_top5=ema_val["top5"])
            candidates["ema"] = ema_val["acc"]
        history.append(row)

        which = max(candidates, key=candidates.get)
        improved = candidates[which] > best["acc"]
        if improved:
            best = {"acc": candidates[which], "epoch": epoch + 1, "weights": which}
        if d.main:
            if improved:
                src = ema.module if which == "ema" else model
                save(src, run_dir / ckpt.BEST,
                     **file_metadata(stage_eval, epoch=epoch + 1, val_acc=best["acc"], weights=which))
            state = {"config": config.to_dict(), "epoch": epoch + 1, "global_step": global_step,
                     "start": start.to_dict() if start else None,
                     "stage": stage.index, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else {},
                     "rng": ckpt.rng_state(), "history": history, "best": best}
            last_good = str(ckpt.save_checkpoint(run_dir, epoch + 1, model, file_metadata(
                stage_eval, epoch=epoch + 1, val_acc=val["acc"], weights="raw"), state))
            write_metrics(run_dir, history)
        distributed.barrier(d)  # no rank runs ahead of the checkpoint it may have to resume from
        ema_text = f" ema {100 * row['ema_val_acc']:.2f}%" if ema is not None else ""
        _say(d, f"epoch {epoch + 1:>3}/{config.epochs} stage {stage.index + 1} size {stage.image_size:>3} | "
                f"train loss {stats.loss:.4f} acc {100 * stats.acc:5.1f}% | val loss {val['loss']:.4f} "
                f"acc {100 * val['acc']:.2f}%{ema_text} | lr {row['lr']:.3g} | "
                f"{row['images_per_s']:.0f} img/s | {stats.seconds:.1f} s" + (" *" if improved else ""))

    best_path = run_dir / ckpt.BEST if d.main and (run_dir / ckpt.BEST).exists() else None
    if d.main and history and config.plots:
        plot_curves(run_dir, history)
        plot_schedule(run_dir, history)
    _say(d, f"done in {time.perf_counter() - run_start:.0f} s; best checkpoint: {best_path} "
            f"(val acc {100 * best['acc']:.2f}%, {best['weights']} weights, epoch {best['epoch']})")
    return RunResult(run_dir if d.main else None, best_path, best["acc"], best["weights"], history, schedule, start)


def _wrap(model: torch.nn.Module, config: TrainConfig, d: distributed.Dist) -> torch.nn.Module:
    """The model as the loop calls it: in DDP across processes, compiled if asked."""
    net = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda"
                                                        else None)
    if config.compile:
        net = torch.compile(net)
    return net
