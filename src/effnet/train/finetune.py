"""Fine-tuning: the starting weights, what they bring (head, normalisation, resolution), what is frozen.

    effnet train --data path/to/folder --model efficientnet_lite0 --weights timm
    effnet train --data path/to/folder --weights runs/train-1/best.safetensors --freeze backbone --unfreeze-every 2
    effnet train --data path/to/folder --model efficientnet_b0 --weights-from timm efficientnet_b0 b0.pth

Freezing works on the model's parts from input to output: the stem, each stage, the head conv;
the classifier always trains.  A frozen part has ``requires_grad`` off, is left out of the
optimiser, and stays in eval mode (its BatchNorm statistics and stochastic depth are fixed too), so
it is a fixed feature extractor.  The set of frozen parts is a function of the epoch alone
(:func:`frozen_at`), which keeps resumed runs exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from effnet.model import EfficientConvNet
from effnet.train.config import (
    FINETUNE_LR_FACTOR,
    FINETUNE_RANDAUG_FACTOR,
    TrainConfig,
    TrainError,
    parse_freeze,
)
from effnet.train.data import IMAGENET_MEAN, IMAGENET_STD, gray_normalization
from effnet.weights import load_pretrained


@dataclass
class StartPoint:
    """What the starting checkpoint brought; saved with the run so a resume needs no source file."""

    label: str  # the published name or file the weights came from
    source: str  # "effnet", "torchvision" or "timm"
    mean: list[float]  # input normalisation the weights were trained with
    std: list[float]
    normalization_from: str  # "checkpoint", "ImageNet (peer weights)" or "data (not recorded)"
    resolution: int  # the size the checkpoint was evaluated at (its config's resolution if not recorded)
    checkpoint_classes: int  # classifier outputs in the checkpoint
    head_loaded: bool
    stem_channels: int  # input channels of the checkpoint's stem

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fit_normalization(mean, std, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std for ``in_chans`` channels: averaged for gray, repeated from a gray checkpoint's one value."""
    if len(mean) == in_chans:
        return tuple(mean), tuple(std)
    if in_chans == 1:
        return gray_normalization(mean, std)
    if len(mean) == 1:
        return tuple(mean) * in_chans, tuple(std) * in_chans
    raise TrainError(f"normalisation has {len(mean)} channels; cannot fit it to {in_chans}")


def load_start(config: TrainConfig, class_names: list[str], data_mean, data_std,
               drop_path_rate: float | None, overrides: dict) -> tuple[EfficientConvNet, StartPoint]:
    """The model with the starting weights of ``config`` (``weights`` or ``weights_from``) loaded."""
    if config.weights_from is not None:
        source, arch, path = config.weights_from
        weights, peer = path, (source, arch)
    else:
        weights, peer = config.weights, None
    model, info = load_pretrained(config.model, weights, peer=peer, num_classes=len(class_names),
                                  in_chans=config.in_chans, class_names=class_names,
                                  drop_path_rate=drop_path_rate, progress=config.progress, **overrides)
    meta = info.metadata
    if meta is not None:  # an effnet file: what its run recorded (files of effnet.save may record less)
        norm = meta.normalization
        if norm is not None and norm.invert:
            raise TrainError(f"{info.label} expects inverted inputs (1 - x); effnet train does not feed those")
        mean, std = (list(norm.mean), list(norm.std)) if norm else (list(data_mean), list(data_std))
        norm_from = "checkpoint" if norm else "data (the checkpoint does not record it)"
        resolution = meta.eval_size[0] if meta.eval_size else meta.config.resolution
    elif info.source == "effnet":  # a plain state dict of our names: nothing recorded
        mean, std, norm_from = list(data_mean), list(data_std), "data (a plain state dict records none)"
        resolution = model.config.resolution
    else:
        mean, std, norm_from = list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet (peer weights)"
        resolution = model.config.resolution
    start = StartPoint(info.label, info.source, mean, std, norm_from, int(resolution), info.num_classes,
                       info.head_loaded, info.stem_channels)
    return model, start


def describe_start(start: StartPoint, class_names: list[str], in_chans: int) -> list[str]:
    """The lines a fine-tuning run prints about its starting point."""
    n = len(class_names)
    if start.head_loaded:
        head = f"head kept: the checkpoint's classifier has the same {n} classes"
    elif start.checkpoint_classes == n:
        head = f"new head: {n} classes as in the checkpoint, but other class names; classifier re-initialised"
    else:
        head = (f"new head: the checkpoint has {start.checkpoint_classes or 'no'} classes, the data {n}; "
                f"classifier re-initialised")
    lines = [f"fine-tuning from {start.label} ({start.source} weights); {head}"]
    if start.stem_channels != in_chans:
        how = "summed" if in_chans == 1 else "repeated and rescaled"
        lines.append(f"stem adapted from {start.stem_channels} to {in_chans} input channels (filters {how})")
    lines.append(f"normalisation from {start.normalization_from}: mean {_fmt(start.mean)} std {_fmt(start.std)}; "
                 f"checkpoint resolution {start.resolution} px")
    return lines


def describe_recipe(config: TrainConfig, lr: float, schedule) -> str:
    """One line on the fine-tuning choices in force (defaults or the user's)."""
    kind, k = parse_freeze(config.freeze)
    freeze = {"none": "nothing frozen", "backbone": "backbone frozen"}.get(
        kind, f"stem + stages 1-{k} frozen" if k else "stem frozen")
    if config.unfreeze_every and kind != "none":
        freeze += f", one more part thawed every {config.unfreeze_every} epochs"
    if config.head_only_epochs:
        freeze = f"classifier only for {config.head_only_epochs} epochs, then {freeze}"
    lr_note = " (a quarter of the from-scratch default)" if config.lr is None else ""
    ra = f"{schedule[0].randaug}->{schedule[-1].randaug}"
    mix = "off" if all(s.mixup == 0 for s in schedule) else f"{schedule[0].mixup}->{schedule[-1].mixup}"
    return (f"recipe: lr {lr:.3g}{lr_note}, backbone lr x{config.backbone_lr_mult:g}, warm-up "
            f"{config.warmup_epochs:g} epochs, {freeze}, BatchNorm {'frozen' if config.freeze_bn else 'training'}, "
            f"RandAugment {ra}, mixup {mix}, sizes {schedule[0].image_size}->{schedule[-1].image_size} px "
            f"(fine-tuning defaults: lr x{FINETUNE_LR_FACTOR:g}, RandAugment x{FINETUNE_RANDAUG_FACTOR:g}, no mixup, "
            f"start at the checkpoint's resolution)")


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


# --- freezing ------------------------------------------------------------------------------------


def model_parts(model: EfficientConvNet) -> list[str]:
    """The freezable parts from input to output: ``stem``, ``stages.0`` ..., and ``head`` (the head conv)."""
    parts = ["stem", *(f"stages.{i}" for i in range(model.plan.num_stages))]
    if model.plan.head.conv_channels is not None:
        parts.append("head")
    return parts


def check_freeze(config: TrainConfig, num_stages: int) -> None:
    """--freeze stages:K must name stages the model has."""
    kind, k = parse_freeze(config.freeze)
    n = num_stages
    if kind == "stages" and k > n:
        raise TrainError(f"--freeze stages:{k}: {config.model} has {n} stages; K must be 0 to {n}")


def frozen_at(config: TrainConfig, parts: list[str], epoch: int) -> tuple[str, ...]:
    """The parts that do not train in ``epoch`` (0-based)."""
    if epoch < config.head_only_epochs:
        return tuple(parts)  # the classifier alone
    kind, k = parse_freeze(config.freeze)
    frozen = {"none": [], "backbone": parts, "stages": parts[:1 + k]}[kind]
    if config.unfreeze_every:
        thawed = (epoch - config.head_only_epochs) // config.unfreeze_every  # from the output side down
        frozen = frozen[:max(0, len(frozen) - thawed)]
    return tuple(frozen)


def apply_freeze(model: EfficientConvNet, frozen: tuple[str, ...], freeze_bn: bool) -> list[nn.Module]:
    """Switch ``requires_grad`` off in the ``frozen`` parts, on elsewhere; returns the modules the training
    loop must keep in eval mode (the frozen parts, and every BatchNorm with ``freeze_bn``)."""
    modules = dict(model.named_modules())
    off = {id(p) for name in frozen for p in modules[name].parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in off)
    keep_eval = [modules[name] for name in frozen]
    if freeze_bn:
        keep_eval += [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return keep_eval
