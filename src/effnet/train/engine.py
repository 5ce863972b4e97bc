"""One training epoch and one evaluation pass; the loop around them lives in :mod:`effnet.train.run`."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from effnet.train.config import TrainError
from effnet.train.distributed import Dist, all_sum, any_flag


@dataclass
class Precision:
    """How the forward pass runs: autocast dtype (None: fp32) and memory format."""

    dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def move(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy against class indices or mixed (soft) targets, with label smoothing."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def batch_mixer(mixup: float, cutmix: float, num_classes: int):
    """MixUp and/or CutMix on a batch (torchvision v2), or None when both alphas are 0."""
    mixers = []
    if mixup > 0:
        mixers.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        mixers.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float
    image_size: int  # the size the loader actually produced (a check on the progressive schedule)


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    *,
    ema,
    mixer,
    label_smoothing: float,
    clip_grad: float | None,
    precision: Precision,
    dist: Dist,
    global_step: int,
    desc: str,
    progress: bool,
    last_good: str,
    keep_eval: list[nn.Module] = (),
) -> tuple[EpochStats, int]:
    """Train over ``loader`` once; returns the epoch's (all-reduced) stats and the new global step.

    ``keep_eval``: modules that stay in eval mode (frozen parts, or BatchNorm with --freeze-bn).
    """
    model.train()
    for module in keep_eval:
        module.eval()  # fixed BN statistics and no stochastic depth: a frozen part computes a fixed function
    device = dist.device
    loss_sum, correct, seen, size_seen = 0.0, 0.0, 0, 0
    start = time.perf_counter()
    # A bar only on a terminal: redirected to a log, its redraws would be most of the file.
    show = progress and dist.main and sys.stdout.isatty() and sys.stderr.isatty()
    bar = tqdm(total=len(loader), desc=desc, unit="batch", leave=False, disable=not show, dynamic_ncols=True)
    for batch, (images, targets) in enumerate(loader):
        size_seen = images.shape[-1]
        images, targets = precision.move(images, device), targets.to(device, non_blocking=True)
        hard_targets = targets
        if mixer is not None:
            # Mixing draws its lambda from torch's global RNG, which the run reseeds every epoch.
            images, targets = mixer(images, targets)
        with precision.autocast(device):
            logits = model(images)
        loss = compute_loss(logits, targets, label_smoothing)

        # Stop before a non-finite loss touches the weights; every rank stops at the same step.
        value = loss.item()  # also the progress bar's number; on CUDA this is the step's one sync point
        if any_flag(not torch.isfinite(torch.tensor(value)), dist):
            bar.close()
            raise TrainError(f"loss became {value} at step {global_step + 1} ({desc}, batch {batch + 1}); "
                             f"stopped without saving; last good checkpoint: {last_good}")

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # DDP all-reduces the gradients during backward
        if clip_grad:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()  # the schedule is per step, so warm-up is smooth even over one epoch
        global_step += 1
        if ema is not None:
            ema.update(_unwrap(model))

        n = images.shape[0]
        loss_sum += value * n
        correct += (logits.argmax(1) == hard_targets).sum().item() if mixer is None else \
            (logits.argmax(1) == targets.argmax(1)).sum().item()
        seen += n
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.1f}%",
                        img_s=f"{seen * dist.world / max(elapsed, 1e-9):.0f}", refresh=False)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    loss_sum, correct, seen_all = all_sum([loss_sum, correct, float(seen)], dist)
    return EpochStats(loss_sum / seen_all, correct / seen_all, int(seen_all), seconds, size_seen), global_step


@torch.no_grad()
def evaluate(model: nn.Module, loader, precision: Precision, dist: Dist) -> dict:
    """Loss, top-1 and top-5 accuracy over the validation set (summed over all processes)."""
    model.eval()
    device = dist.device
    loss_sum, top1, top5, seen = 0.0, 0.0, 0.0, 0
    for images, targets in loader:
        images, targets = precision.move(images, device), targets.to(device)
        with precision.autocast(device):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        top1 += (topk[:, 0] == targets).sum().item()
        top5 += (topk == targets[:, None]).any(1).sum().item()
        seen += len(targets)
    loss_sum, top1, top5, seen = all_sum([loss_sum, top1, top5, float(seen)], dist)
    return {"loss": loss_sum / seen, "acc": top1 / seen, "top5": top5 / seen}


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
