"""The training configuration: one dataclass, every field with the reason it exists."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from effnet.suggest import did_you_mean

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "exponential")
AUGMENTS = ("randaugment", "trivialaugment", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
BAD_IMAGES = ("stop", "skip")
PRESETS = ("v2-s", "v2-m", "v2-l")


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


def option(default: object, reason: str, default_text: str | None = None):
    """A TrainConfig field with its one-line reason, which ``effnet train --help`` shows as the flag's help.

    ``default_text`` says in words what a ``None`` default means ("the model's own", ...).
    """
    return field(default=default, metadata={"help": reason, "default_text": default_text})


class TrainError(ValueError):
    """A problem with the run's input or its course (bad data, diverged loss); printed as one line."""


@dataclass
class TrainConfig:
    """Everything one training run needs; the CLI flags map one-to-one onto these fields."""

    # --- model
    model: str = option("mobilenet_v2_050", "zoo name; the default is small enough for 2 CPU cores in minutes")
    width: float | None = option(None, "width multiplier override", "the model's own")
    depth: float | None = option(None, "depth multiplier override", "the model's own")
    phi: float | None = option(None, "compound scaling coefficient for EfficientNet/Lite", "the model's own")
    drop_path_rate: float | None = option(None, "stochastic depth of the last block", "the model's own")
    zero_head: bool = option(True, "start the classifier at zero: the TF init gives ~10x too large logits "
                                   "for 10 classes")

    # --- data
    data: str | None = option(None, "digits (embedded), cifar10, cifar100, or an image folder", "digits")
    data_dir: str = option("~/.cache/effnet", "where torchvision keeps downloaded CIFAR")
    val_fraction: float = option(0.2, "share held out for validation when the data has no val/ split")
    split_seed: int = option(0, "seeds the train/val split, apart from the run's seed so splits stay comparable")
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
    warmup_epochs: float = option(1.0, "linear warm-up from 0, so early large gradients do not wreck BN stats")
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

    @staticmethod
    def for_data(data: str | None = None, **overrides) -> TrainConfig:
        """The config for ``data`` with its recipe (if any) under the caller's ``overrides``."""
        recipe = RECIPES.get(data or "digits", {})
        return TrainConfig(**{**recipe, **overrides, "data": data})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in known})
