"""Progressive learning (EfficientNetV2, Tan & Le 2021, section 4.2, Algorithm 1).

Training is split into M stages.  Stage i (0-based) trains at image size and regularisation
linearly interpolated between the start values (S0, Phi0) and the end values (Se, Phie):
``v_i = v_0 + (v_e - v_0) * i / (M - 1)``; the last stage uses the end values exactly.
Regularisation here is RandAugment magnitude, mixup alpha and classifier dropout, as in Table 6.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from effnet.train.config import FINETUNE_RANDAUG_FACTOR, TrainConfig, TrainError


@dataclass(frozen=True)
class Preset:
    """One column of the paper's Table 6: ImageNet values, the size as a share of the final size."""

    size_start_ratio: float  # S0 / Se (ImageNet: 128 / final size), applied to the data set's final size
    randaug: tuple[float, float]  # RandAugment magnitude, start -> end
    mixup: tuple[float, float]  # mixup alpha, start -> end
    dropout: tuple[float, float]  # classifier dropout, start -> end
    stages: int = 4  # M = 4 in the paper


# Paper Table 6 values (the official code's configs use lower maxima and leave dropout unscheduled).
PRESETS: dict[str, Preset] = {
    "v2-s": Preset(128 / 300, (5, 15), (0.0, 0.0), (0.1, 0.3)),
    "v2-m": Preset(128 / 380, (5, 20), (0.0, 0.2), (0.1, 0.4)),
    "v2-l": Preset(128 / 380, (5, 25), (0.0, 0.4), (0.1, 0.5)),
}

DEFAULT_RANDAUG = 9  # magnitude when neither a preset nor the user sets one (torchvision's default)


@dataclass(frozen=True)
class ProgressiveStage:
    """One progressive stage: which epochs it covers and the values it trains with."""

    index: int  # 0-based stage number
    first_epoch: int  # first epoch of the stage (0-based, inclusive)
    end_epoch: int  # one past its last epoch
    image_size: int  # training image size (square)
    randaug: int  # RandAugment magnitude (torchvision takes an integer bin)
    mixup: float  # mixup alpha; 0 means no mixup
    dropout: float  # dropout before the classifier


def interpolate(start: float, end: float, i: int, stages: int) -> float:
    """Algorithm 1's linear interpolation: stage 0 gets ``start``, stage M-1 gets ``end``."""
    return end if stages == 1 else start + (end - start) * i / (stages - 1)


def build_schedule(
    epochs: int,
    stages: int,
    size: tuple[int, int],
    randaug: tuple[float, float],
    mixup: tuple[float, float],
    dropout: tuple[float, float],
    size_multiple: int = 8,
    min_size: int = 1,
) -> list[ProgressiveStage]:
    """The M stages over ``epochs`` epochs; intermediate sizes round to ``size_multiple``."""
    if stages > epochs:
        fewer = "--stages 1 (no progressive learning)" if epochs == 1 else f"--stages {epochs} or fewer"
        raise TrainError(f"{stages} progressive stages need at least {stages} epochs, got {epochs}: "
                         f"pass {fewer}, or --epochs {stages} or more")
    out = []
    for i in range(stages):
        if i == stages - 1:
            image_size = size[1]  # the last stage trains at exactly the final size
        else:
            raw = interpolate(size[0], size[1], i, stages)
            image_size = max(min_size, size_multiple * round(raw / size_multiple))
        out.append(ProgressiveStage(
            index=i,
            first_epoch=i * epochs // stages,
            end_epoch=(i + 1) * epochs // stages,
            image_size=int(image_size),
            randaug=round(interpolate(*randaug, i, stages)),
            mixup=round(interpolate(*mixup, i, stages), 6),
            dropout=round(interpolate(*dropout, i, stages), 6),
        ))
    return out


def schedule_from_config(config: TrainConfig, final_size: int, model_dropout: float, min_size: int,
                         start_size: int | None = None) -> list[ProgressiveStage]:
    """Resolve the config's progressive fields (preset, then explicit overrides) into stages.

    Starting from pretrained weights (``config.pretrained``), unset values take the fine-tuning
    defaults: RandAugment at FINETUNE_RANDAUG_FACTOR of its from-scratch magnitude, no mixup, and the
    first stage at ``start_size`` (the checkpoint's resolution, capped at the final size).
    """
    preset = PRESETS.get(config.progressive) if config.progressive else None
    mild = FINETUNE_RANDAUG_FACTOR if config.pretrained else 1.0

    def pick(value, preset_value, fallback):
        return value if value is not None else (preset_value if preset is not None else fallback)

    end = config.randaug_end if config.randaug_end is not None else \
        (preset.randaug[1] if preset else DEFAULT_RANDAUG) * mild
    randaug = (pick(config.randaug_start, preset and preset.randaug[0] * mild, end), end)
    mix_end = pick(config.mixup_end, preset and (0.0 if config.pretrained else preset.mixup[1]), 0.0)
    mixup = (pick(config.mixup_start, preset and (0.0 if config.pretrained else preset.mixup[0]), mix_end), mix_end)
    drop_end = pick(config.dropout_end, preset and preset.dropout[1], model_dropout)
    dropout = (pick(config.dropout_start, preset and preset.dropout[0], drop_end), drop_end)
    if config.size_start is None and config.pretrained and start_size is not None:
        size_start = max(min_size, min(final_size, start_size))
    elif preset is not None and config.size_start is None:
        start = config.size_multiple * round(final_size * preset.size_start_ratio / config.size_multiple)
        size_start = max(min_size, start)
    else:
        size_start = config.size_start if config.size_start is not None else final_size
    if size_start < min_size:
        raise TrainError(f"size_start {size_start} is below the smallest size the model takes ({min_size}): "
                         f"pass --size-start {min_size} or more")
    if size_start > final_size:
        raise TrainError(f"size_start {size_start} is larger than the final image size {final_size}: "
                         f"pass --size-start {final_size} or less, or a larger --image-size")
    stages = config.stages or (preset.stages if preset else 1)
    return build_schedule(config.epochs, stages, (size_start, final_size), randaug, mixup, dropout,
                          config.size_multiple, min_size)


def stage_at(schedule: list[ProgressiveStage], epoch: int) -> ProgressiveStage:
    """The stage that trains epoch ``epoch`` (0-based)."""
    for stage in schedule:
        if stage.first_epoch <= epoch < stage.end_epoch:
            return stage
    raise AssertionError(f"epoch {epoch} outside the schedule")


def format_schedule(schedule: list[ProgressiveStage]) -> str:
    """A small table of the stages, printed at the start of a run."""
    lines = ["stage  epochs     size  randaug  mixup  dropout"]
    for s in schedule:
        lines.append(f"{s.index + 1:>5}  {s.first_epoch + 1:>3}-{s.end_epoch:<5}  {s.image_size:>4}  {s.randaug:>7}"
                     f"  {s.mixup:>5.2f}  {s.dropout:>7.2f}")
    return "\n".join(lines)


def schedule_to_dicts(schedule: list[ProgressiveStage]) -> list[dict]:
    return [asdict(s) for s in schedule]
