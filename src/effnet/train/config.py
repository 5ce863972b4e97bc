"""The training configuration: one dataclass, every field with the reason it exists."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from effnet.suggest import did_you_mean

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "exponential")
AUGMENTS = ("randaugment", "trivialaugment", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
BAD_IMAGES = ("stop", "skip")
PRESETS = ("v2-s", "v2-m", "v2-l")
WEIGHT_SOURCES = ("torchvision", "timm")  # libraries whose state-dict files --weights-from converts
IN_CHANS = (1, 3)  # grayscale or RGB images (every data set is read as RGB; 1 converts after augmenting)

# Fine-tuning defaults (used when `weights` is set and the user leaves a value unset): pretrained
# features need smaller steps than the ones that shape random weights, and they were learnt under
# augmentation already, so heavy regularisation mostly slows the new head down.
FINETUNE_LR_FACTOR = 0.25  # peak lr = this x the from-scratch default (or x the data recipe's lr)
FINETUNE_RANDAUG_FACTOR = 0.5  # RandAugment magnitudes = this x the from-scratch ones; mixup off


# Data-set recipes: values that replace TrainConfig's generic defaults when the user leaves them unset.
# "digits" is the main job (`effnet train`): >= 96% in a few minutes on 2 CPU cores (docs/training.md).
RECIPES: dict[str, dict] = {
    "digits": {
        "model": "mobilenet_v2_050",  # 0.7 M parameters: a few seconds per epoch at 32-48 px on 2 cores
        "epochs": 25,  # past 97% validation accuracy with room to spare
        "batch_size": 32,  # 45 steps per epoch: 1,438 images are few, more steps learn faster
        "optimizer": "adamw",  # reached 96% in fewer epochs than SGD in a sweep of 8 settings
        "lr": 0.002,
        "stages": 3, "size_start": 32, "image_size": 48,  # progressive learning: 32 -> 40 -> 48 px
        "randaug_start": 2, "randaug_end": 6,  # weak to moderate augmentation as the size grows
        "dropout_start": 0.1, "dropout_end": 0.3,  # and regularisation with it (Algorithm 1)
    },
}


def option(default: object, reason: str, default_text: str | None = None, **flag):
    """A TrainConfig field with its one-line reason, which ``effnet train --help`` shows as the flag's help.

    ``default_text`` says in words what a ``None`` default means ("the model's own", ...); ``flag``
    holds argparse settings of its own (``metavar``, ``nargs``).
    """
    return field(default=default, metadata={"help": reason, "default_text": default_text, "flag": flag})


class TrainError(ValueError):
    """A problem with the run's input or its course (bad data, diverged loss); printed as one line."""


def parse_freeze(text: str) -> tuple[str, int]:
    """``"none"`` -> ("none", 0), ``"backbone"`` -> ("backbone", 0), ``"stages:K"`` -> ("stages", K)."""
    if text in ("none", "backbone"):
        return text, 0
    m = re.fullmatch(r"stages:(\d+)", text or "")
    if m is None:
        raise TrainError(f"freeze must be backbone, stages:K (K a whole number) or none, got {text!r}")
    return "stages", int(m.group(1))


def finetune_recipe(recipe: dict) -> dict:
    """A from-scratch data recipe adjusted for fine-tuning: FINETUNE_LR_FACTOR x its lr, FINETUNE_RANDAUG_FACTOR
    x its RandAugment, no mixup, and no size_start (the schedule starts near the checkpoint's resolution)."""
    out = {k: v for k, v in recipe.items() if k not in ("size_start", "mixup_start", "mixup_end")}
    if "lr" in recipe:
        out["lr"] = recipe["lr"] * FINETUNE_LR_FACTOR
    for key in ("randaug_start", "randaug_end"):
        if key in recipe:
            out[key] = recipe[key] * FINETUNE_RANDAUG_FACTOR
    return out


@dataclass
class TrainConfig:
    """Everything one training run needs; the CLI flags map one-to-one onto these fields."""

    # --- model
    model: str = option("mobilenet_v2_050", "zoo name; the default is small enough for 2 CPU cores in minutes")
    width: float | None = option(None, "width multiplier override", "the model's own")
    depth: float | None = option(None, "depth multiplier override", "the model's own")
    phi: float | None = option(None, "compound scaling coefficient for EfficientNet/Lite", "the model's own")
    drop_path_rate: float | None = option(None, "stochastic depth of the last block", "the model's own")
    in_chans: int = option(3, "input channels: 3 for RGB; 1 trains on grayscale (images are converted after "
                              "augmenting; pretrained RGB stem filters are summed, so a gray image gives the "
                              "RGB model's output)")
    spec: str | None = option(None, "architecture spec JSON (effnet search blocks); its base model replaces --model",
                              "the model's own table")
    zero_head: bool = option(True, "start the classifier at zero: the TF init gives ~10x too large logits "
                                   "for 10 classes")

    # --- fine-tuning: the starting weights and what trains (docs/training.md, "Fine-tuning")
    weights: str | None = option(
        None, "start from these weights instead of random ones: an effnet .safetensors file, a torchvision/timm "
        "state-dict file, or a published name (timm, torchvision, timm/efficientnet_b0.ra_in1k); also picks "
        "the fine-tuning defaults: lr/4, no mixup, half the RandAugment magnitude, sizes from the checkpoint",
        "random weights")
    weights_from: tuple[str, str, str] | None = option(
        None, "like --weights, for a peer library's own state-dict file (.safetensors, or .pth read with "
        "weights_only=True) of its model MODEL, e.g. timm tf_efficientnet_lite0 weights.pth", "none",
        nargs=3, metavar=("torchvision|timm", "MODEL", "FILE"))
    freeze: str = option(
        "none", "what does not train: backbone (all but the classifier: few images, or a task close to the "
        "pretraining one), stages:K (the stem and the first K stages: generic low-level features kept, the "
        "rest adapts), or none (everything trains: enough images, or a task unlike the pretraining one)",
        metavar="backbone|stages:K|none")
    unfreeze_every: int = option(
        0, "gradual unfreezing: every N epochs the frozen part nearest the output (head conv, then the last "
        "stage, ... down to the stem) starts training too; 0 keeps --freeze for the whole run. Use it when a "
        "frozen run learns fast and then stalls")
    head_only_epochs: int = option(
        0, "train only the classifier for the first N epochs, then as --freeze says: for a head that starts "
        "random (--no-zero-head), whose first large gradients would otherwise disturb the pretrained layers")
    freeze_bn: bool = option(
        False, "keep every BatchNorm in eval mode (running statistics fixed, scale and shift still learnt): "
        "for batches too small (below ~16 images) to estimate batch statistics")
    backbone_lr_mult: float = option(
        1.0, "learning rate of everything but the classifier as a multiple of --lr, e.g. 0.1 (discriminative "
        "learning rates): pretrained layers move slowly while the new head learns at the full rate")

    # --- data
    data: str | None = option(None, "digits (embedded), photos (the search proxy), cifar10, cifar100, "
                                    "or an image folder", "digits")
    data_dir: str = option("~/.cache/effnet", "where torchvision keeps downloaded CIFAR")
    val_fraction: float = option(0.2, "share held out for validation when the data has no val/ split")
    split_seed: int = option(0, "seeds the train/val split, apart from the run's seed so splits stay comparable")
    classes: str | None = option(None, "comma-separated class names to keep, e.g. 0,1,2,3,4: train and "
                                       "validate on a subset of the classes", "all")
    train_per_class: int | None = option(None, "keep only this many training images per class (drawn by "
                                               "--split-seed; validation unchanged): few-shot runs", "all")
    bad_images: str = option("stop", "an unreadable image file: stop the run, or skip it (paths are printed)")
    check_images: bool = option(True, "open every file once before training, so a bad one fails now, "
                                      "not hours in")
    workers: int | None = option(None, "DataLoader processes", "0 for in-memory data (digits, CIFAR), else up to 8")

    # --- schedule of the run
    epochs: int = option(30, "passes over the training set")
    batch_size: int = option(64, "images per step on each process")
    image_size: int | None = option(None, "final (largest) training size",
                                    "the data set's natural size, else the model's resolution")
    eval_size: int | None = option(None, "validation size", "each stage's training size, the final one at the end")
    crop_pct: float | None = option(None, "eval resize-then-center-crop ratio",
                                    "1.0 for digits and CIFAR, 0.875 for folders")

    # --- progressive learning (EfficientNetV2 Algorithm 1); a preset fills every None below
    progressive: str | None = option(None, "v2-s, v2-m, v2-l: paper Table 6, scaled to image_size; none for "
                                           "constant values", "none")
    stages: int | None = option(None, "M, the number of progressive stages", "4 with a preset, else 1")
    size_start: int | None = option(None, "image size of the first stage",
                                    "the preset's share of image_size, else image_size")
    randaug_start: float | None = option(None, "RandAugment magnitude of the first stage",
                                         "the preset's, else randaug_end")
    randaug_end: float | None = option(None, "RandAugment magnitude of the last stage",
                                       "the preset's, else 9 (torchvision's)")
    mixup_start: float | None = option(None, "mixup alpha of the first stage (0 switches mixup off)",
                                       "the preset's, else mixup_end")
    mixup_end: float | None = option(None, "mixup alpha of the last stage", "the preset's, else 0")
    dropout_start: float | None = option(None, "classifier dropout of the first stage",
                                         "the preset's, else dropout_end")
    dropout_end: float | None = option(None, "classifier dropout of the last stage",
                                       "the preset's, else the model's own")
    size_multiple: int = option(8, "stage sizes are rounded to this, so feature maps stay evenly divisible")

    # --- augmentation and loss
    augment: str = option("randaugment", "per-image policy: randaugment, trivialaugment or none")
    randaug_ops: int = option(2, "RandAugment operations per image (N in the RandAugment paper)")
    scale_min: float | None = option(None, "RandomResizedCrop smallest area share",
                                     "0.6 for digits, 0.35 for CIFAR, 0.08 for folders")
    hflip: float | None = option(None, "horizontal flip probability",
                                 "0 for digits, whose flips are wrong; else 0.5")
    cutmix_alpha: float = option(0.0, "CutMix alpha; with mixup on too, each batch picks one of the two")
    label_smoothing: float = option(0.1, "spreads this much target mass over all classes (Inception-v3)")

    # --- optimisation
    optimizer: str = option("sgd", "sgd (Nesterov), rmsprop (TensorFlow-style epsilon) or adamw")
    lr: float | None = option(None, "peak learning rate", "the optimiser's rate per 256 images (sgd 0.1, "
                                                          "rmsprop 0.016, adamw 0.001) times global batch / 256")
    momentum: float = option(0.9, "SGD/RMSProp momentum")
    weight_decay: float | None = option(None, "L2/decoupled decay, never on norm and bias",
                                        "sgd 5e-5, rmsprop 1e-5, adamw 0.05")
    rmsprop_decay: float = option(0.9, "RMSProp moving-average decay of squared gradients, the paper's")
    rmsprop_eps: float = option(1e-3, "RMSProp epsilon, inside the square root as in TensorFlow")
    schedule: str = option("cosine", "decay after warm-up: cosine to min_lr, or exponential (paper)")
    warmup_epochs: float = option(1.0, "linear warm-up from 0, so early large gradients do not wreck BN stats "
                                       "or pretrained weights")
    min_lr: float = option(0.0, "where cosine ends")
    decay_rate: float = option(0.97, "exponential: multiply the lr by this every decay_epochs")
    decay_epochs: float = option(2.4, "exponential: epochs between decays (the paper's 0.97 per 2.4 epochs)")
    clip_grad: float | None = option(None, "clip the global gradient norm to this", "no clipping")
    ema_decay: float = option(0.998, "weight EMA decay (0: no EMA); warms up as (1+n)/(10+n) so short runs "
                                     "use it")

    # --- speed and reproducibility
    device: str = option("auto", "auto (cuda when present), cpu, cuda, cuda:1, ...")
    amp: str = option("auto", "bf16, fp16, off; auto: bf16 on CUDA, off on CPU")
    channels_last: bool | None = option(None, "NHWC memory format", "on for CUDA, where it is faster; off on CPU")
    compile: bool = option(False, "torch.compile the model (one recompilation per progressive size)")
    seed: int = option(0, "every random choice derives from (seed, epoch, rank), which makes resume exact")
    threads: int | None = option(None, "CPU threads for torch (1 makes small-model timings comparable)",
                                 "torch's, one per core")

    # --- output
    output: str | None = option(None, "run folder", "runs/train-N, the first N not taken")
    resume: bool = option(False, "continue the run in --output from its last complete checkpoint")
    progress: bool = option(True, "tqdm bar per epoch (off for logs that are not a terminal)")
    plots: bool = option(True, "PNG curves and schedule at the end (matplotlib)")

    def __post_init__(self) -> None:
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "augment": AUGMENTS, "amp": AMP_MODES,
                   "bad_images": BAD_IMAGES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                value = getattr(self, name)
                raise TrainError(f"{name} must be one of {', '.join(allowed)}, got {value!r}"
                                 f"{did_you_mean(str(value), allowed)}")
        if self.progressive is not None and self.progressive not in PRESETS:
            raise TrainError(f"progressive must be one of {', '.join(PRESETS)} (or none), got {self.progressive!r}"
                             f"{did_you_mean(str(self.progressive), PRESETS)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "randaug_ops": self.randaug_ops,
                    "size_multiple": self.size_multiple}
        for name in ("image_size", "eval_size", "stages", "size_start", "threads"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TrainError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TrainError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        for name in ("mixup_start", "mixup_end", "randaug_start", "randaug_end", "cutmix_alpha", "warmup_epochs",
                     "min_lr", "clip_grad", "ema_decay", "weight_decay", "lr"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise TrainError(f"{name} must not be negative, got {value}")
        for name in ("label_smoothing", "dropout_start", "dropout_end", "hflip", "drop_path_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise TrainError(f"{name} must be in [0, 1), got {value}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise TrainError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.scale_min is not None and not 0.0 < self.scale_min <= 1.0:
            raise TrainError(f"scale_min must be in (0, 1], got {self.scale_min}")
        if self.crop_pct is not None and not 0.0 < self.crop_pct <= 1.0:
            raise TrainError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        self._check_finetuning()

    def _check_finetuning(self) -> None:
        parse_freeze(self.freeze)
        if self.weights is not None and self.weights_from is not None:
            raise TrainError("give --weights or --weights-from, not both")
        if self.weights_from is not None:
            if not (isinstance(self.weights_from, (list, tuple)) and len(self.weights_from) == 3):
                raise TrainError(f"weights_from must be [source, model, file], got {self.weights_from!r}")
            self.weights_from = tuple(str(v) for v in self.weights_from)  # JSON gives a list back
            if self.weights_from[0] not in WEIGHT_SOURCES:
                raise TrainError(f"--weights-from source must be one of {', '.join(WEIGHT_SOURCES)}, "
                                 f"got {self.weights_from[0]!r}")
        if self.in_chans not in IN_CHANS:
            raise TrainError(f"in_chans must be one of {', '.join(map(str, IN_CHANS))} for image data, "
                             f"got {self.in_chans!r}")
        for name in ("unfreeze_every", "head_only_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TrainError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.train_per_class is not None and (not isinstance(self.train_per_class, int) or self.train_per_class < 1):
            raise TrainError(f"train_per_class must be a positive integer, got {self.train_per_class!r}")
        if not self.backbone_lr_mult >= 0:
            raise TrainError(f"backbone_lr_mult must not be negative, got {self.backbone_lr_mult}")
        if self.classes is not None and not [c for c in self.classes.split(",") if c.strip()]:
            raise TrainError("classes must name at least one class, e.g. --classes 0,1,2")

    @property
    def pretrained(self) -> bool:
        """The run starts from weights (--weights or --weights-from): the fine-tuning defaults apply."""
        return self.weights is not None or self.weights_from is not None

    @staticmethod
    def for_data(data: str | None = None, **overrides) -> TrainConfig:
        """The config for ``data`` with its recipe (if any) under the caller's ``overrides``.

        Starting from weights, the recipe turns into its fine-tuning version (:func:`finetune_recipe`).
        """
        recipe = RECIPES.get(data or "digits", {})
        if overrides.get("weights") is not None or overrides.get("weights_from") is not None:
            recipe = finetune_recipe(recipe)
        return TrainConfig(**{**recipe, **overrides, "data": data})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in known})
