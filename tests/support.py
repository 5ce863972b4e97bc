"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""

import pytest
import torch

import effnet
from effnet.train import checkpoint, train


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


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BN statistics and affine far from the identity, so that a missed fold shows; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.rand(n, generator=g) - 0.5
            m.running_mean = torch.rand(n, generator=g) - 0.5
            m.running_var = torch.rand(n, generator=g) * 1.5 + 0.5
    return model.eval()


def train_until_interrupted(monkeypatch, config, epoch: int) -> None:
    """Run ``effnet.train.train(config)`` and stop it right after epoch ``epoch``'s checkpoint, as Ctrl-C would."""
    real_save = checkpoint.save_checkpoint

    def save_then_stop(run_dir, at, *args):
        path = real_save(run_dir, at, *args)
        if at == epoch:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr("effnet.train.run.ckpt.save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr("effnet.train.run.ckpt.save_checkpoint", real_save)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b||."""
    return float(((a - b).norm() / b.norm()).detach())


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def conv_case(ci: int, co: int, hw: tuple[int, int], stride: int, pads: tuple[int, int, int, int], proj: bool,
              res: bool, c2: int = 16) -> tuple:
    """A 3x3 conv + SiLU (+ a 1x1 project to ``c2`` channels, or ``ci`` with a residual; + the residual) in
    NHWC: (x, weights flattened as the conv kernels take them, bias, project, residual, float32 reference)."""
    import torch.nn.functional as F

    k = 3
    x, w, b = torch.randn(2, *hw, ci), torch.randn(co, ci, k, k), torch.randn(co)
    wflat = w.permute(2, 3, 1, 0).reshape(-1, co).contiguous()
    c2 = ci if res else c2
    p = (torch.randn(co, c2), torch.randn(c2)) if proj else None
    ref = nhwc(F.silu(F.conv2d(F.pad(x.permute(0, 3, 1, 2), (pads[2], pads[3], pads[0], pads[1])), w, b, stride)))
    residual = torch.randn(*ref.shape[:3], c2 if proj else co) if res else None
    ref = ref @ p[0] + p[1] if proj else ref
    return x, wflat, b, p, residual, ref + residual if res else ref
