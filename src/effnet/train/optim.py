"""Optimisers (SGD-Nesterov, TensorFlow-style RMSProp, AdamW) and the warm-up + decay schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from effnet.train.config import TrainConfig

# Peak learning rate per 256 images and weight decay, per optimiser (None in the config picks these).
DEFAULT_LR = {"sgd": 0.1, "rmsprop": 0.016, "adamw": 1e-3}  # RMSProp: the paper's 0.256 per 4096
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-5, "rmsprop": 1e-5, "adamw": 0.05}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights decay; norm scales/shifts and biases (all 1-D) do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as TensorFlow computes it: epsilon inside the square root, mean square started at 1,
    and the learning rate applied inside the momentum buffer (so lr changes act smoothly).

    TensorFlow's eps=1e-3 inside the root is about PyTorch's eps=0.03 outside it, which is why a
    recipe ported from TF (EfficientNet's) diverges with ``torch.optim.RMSprop`` at the same value.
    """

    def __init__(self, params, lr: float = 0.016, alpha: float = 0.9, eps: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                square_avg = state["square_avg"]
                square_avg.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                update = grad / (square_avg + group["eps"]).sqrt()
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buf)
        return loss


def build_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimiser the config names, with weight decay on conv/linear weights only."""
    wd = DEFAULT_WEIGHT_DECAY[config.optimizer] if config.weight_decay is None else config.weight_decay
    groups = param_groups(model, wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=lr, alpha=config.rmsprop_decay, eps=config.rmsprop_eps, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def peak_lr(config: TrainConfig, global_batch: int) -> float:
    """The config's lr, or the optimiser's default scaled linearly with the global batch (Goyal et al.)."""
    return config.lr if config.lr is not None else DEFAULT_LR[config.optimizer] * global_batch / 256


class WarmupDecay:
    """lr multiplier per optimiser step: linear warm-up, then cosine or staircase-exponential decay.

    A plain object (not a closure) so LambdaLR's state_dict records its numbers and a resumed run
    can check it is continuing the same schedule.
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int, steps_per_epoch: int, min_ratio: float = 0.0,
                 decay_rate: float = 0.97, decay_epochs: float = 2.4) -> None:
        self.kind, self.total_steps, self.warmup_steps = kind, total_steps, warmup_steps
        self.steps_per_epoch, self.min_ratio = steps_per_epoch, min_ratio
        self.decay_rate, self.decay_epochs = decay_rate, decay_epochs

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "exponential":
            return self.decay_rate ** math.floor(step / self.steps_per_epoch / self.decay_epochs)
        t = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                    lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR of :class:`WarmupDecay`."""
    fn = WarmupDecay(config.schedule, config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch),
                     steps_per_epoch, config.min_lr / lr if lr > 0 else 0.0, config.decay_rate, config.decay_epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
