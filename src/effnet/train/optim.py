"""Optimisers (SGD-Nesterov, TensorFlow-style RMSProp, AdamW) and the warm-up + decay schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from effnet.train.config import FINETUNE_LR_FACTOR, TrainConfig, TrainError

# Peak learning rate per 256 images and weight decay, per optimiser (None in the config picks these).
DEFAULT_LR = {"sgd": 0.1, "rmsprop": 0.016, "adamw": 1e-3}  # RMSProp: the paper's 0.256 per 4096
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-5, "rmsprop": 1e-5, "adamw": 0.05}


def param_groups(model: nn.Module, weight_decay: float, lr: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Conv/linear weights decay; norm scales/shifts and biases (all 1-D) do not.  Frozen parameters
    (``requires_grad`` off) are left out.  With ``backbone_lr_mult`` != 1 the classifier and the rest
    (the backbone) get groups of their own, the backbone's at ``lr * backbone_lr_mult``."""
    head = {id(p) for p in model.classifier.parameters()} if backbone_lr_mult != 1 else set()
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in head, p.ndim > 1), []).append(p)
    out = []
    for (is_head, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if backbone_lr_mult != 1:
            group.update(lr=lr * (1.0 if is_head else backbone_lr_mult), name="head" if is_head else "backbone")
        out.append(group)
    return out


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
    groups = param_groups(model, wd, lr, config.backbone_lr_mult)
    if not groups:
        raise TrainError("nothing to train: every parameter is frozen")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=lr, alpha=config.rmsprop_decay, eps=config.rmsprop_eps, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def peak_lr(config: TrainConfig, global_batch: int) -> float:
    """The config's lr, or the optimiser's default scaled linearly with the global batch (Goyal et al.),
    times FINETUNE_LR_FACTOR when the run starts from pretrained weights."""
    if config.lr is not None:
        return config.lr
    return DEFAULT_LR[config.optimizer] * global_batch / 256 * (FINETUNE_LR_FACTOR if config.pretrained else 1.0)


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
                    lr: float, start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR of :class:`WarmupDecay`, positioned after ``start_step`` steps (for an optimiser
    rebuilt mid-run when the frozen parts change)."""
    fn = WarmupDecay(config.schedule, config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch),
                     steps_per_epoch, config.min_lr / lr if lr > 0 else 0.0, config.decay_rate, config.decay_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    if start_step:
        scheduler.last_epoch = start_step
        scheduler._last_lr = [base * fn(start_step) for base in scheduler.base_lrs]
        for group, value in zip(optimizer.param_groups, scheduler._last_lr):
            group["lr"] = value
    return scheduler


def rebuild_optimizer(old: torch.optim.Optimizer, model: nn.Module, config: TrainConfig,
                      lr: float) -> torch.optim.Optimizer:
    """A new optimiser over the parameters that train now, keeping the state (momenta) of those that
    trained before: the frozen parts changed, and an optimiser's parameter groups are fixed."""
    new = build_optimizer(model, config, lr)
    for group in new.param_groups:
        for p in group["params"]:
            if p in old.state:
                new.state[p] = old.state[p]
    return new
