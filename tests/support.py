"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""

import torch

import effnet


def randomized_model(name: str, **kwargs) -> effnet.EfficientConvNet:
    """A seeded zoo model in eval mode whose BatchNorm statistics are random, so that a lost or
    misplaced buffer changes the outputs (fresh statistics are 0 and 1 and would hide it)."""
    torch.manual_seed(0)
    model = effnet.create_model(name, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return model.eval()
