"""Exponential moving average of a model's weights (Polyak averaging), evaluated beside the raw model."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every optimiser step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so a short
    run's average is not dominated by the random initial weights.  BatchNorm running statistics
    are copied, not averaged: they already are running averages.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.module.load_state_dict(state["weights"])
