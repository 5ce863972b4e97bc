"""Analytic per-layer complexity of any ``nn.Module``: params, MACs, activations, bytes and intensity.

One forward pass runs on the ``meta`` device (shapes only, no arithmetic, milliseconds even for
EfficientNet-L2 at 800 px) under a ``TorchDispatchMode`` that sees every aten op, while module
hooks keep the path of the module being run.  Ops inside a leaf module (a module with no children:
Conv2d, BatchNorm2d, ReLU, Linear, ...) add up to one record named by the module's qualified name;
ops run directly in a container's ``forward`` (the residual add, SE's mean and gating multiply)
become records of their own, named ``<module path>.<op>`` (e.g. ``stages.1.1.add``).

Conventions (those of the papers' "mult-adds" and of pycls/fvcore):
- MACs count convolutions and matrix products only (bias and elementwise ops are free), so the
  total is exactly half of ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs.
- Bytes model a layer that reads each input, weight and buffer once and writes its output once,
  every tensor at the profiled dtype: no cache reuse, no fusion.
- Activations are the output elements of each record (summed: what training keeps for backward,
  as an upper bound, since in-place activations share storage).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from effnet.analysis.counting import Counter
from effnet.analysis.records import KINDS, LayerRecord, Profile, summarize

__all__ = ["KINDS", "LayerRecord", "Profile", "profile", "summarize"]


def profile(
    model: nn.Module,
    input_size: int | Sequence[int],
    dtype: torch.dtype = torch.float32,
    *,
    batch_size: int | None = None,
    device: str = "meta",
) -> Profile:
    """Profile one forward pass of ``model`` in eval mode; the model is left as it was.

    ``input_size``: an int S (a square S x S image), ``(H, W)`` (channels taken from the model),
    ``(C, H, W)``, or the full input shape ``(N, C, H, W)`` as torchinfo users write it (then N is the
    batch, and ``batch_size``, if given, must agree).  Other ranks are per-sample shapes (``(16,)``
    for a Linear).  ``device="meta"`` counts analytically; another device runs the copy there for
    real, with random input.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (torch.float32, torch.bfloat16, ...), got {dtype!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    shape = _input_shape(model, input_size, batch_size)
    device = torch.device(device)
    # A model already on meta in the right dtype runs as it is (put in eval mode for the pass, then
    # back); anything else runs as a copy, so the caller's weights and mode are never touched.
    work = model if _is_meta(model, dtype) and device.type == "meta" else _copy_to(model, device, dtype)
    modes = {m: m.training for m in work.modules()}
    work.eval()
    if device.type == "meta":
        x = torch.empty(shape, device=device, dtype=dtype)
    else:
        x = torch.randn(shape, device=device, dtype=dtype)
    counter = Counter(work, dtype)
    try:
        with torch.no_grad(), counter:
            work(x)
    except (RuntimeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (an op with no meta kernel? try device='cpu')" if isinstance(e, NotImplementedError) else ""
        raise ValueError(f"forward pass failed for input shape {shape}: {first}{hint}") from e
    finally:
        counter.remove_hooks()
        for m, training in modes.items():
            m.training = training
    return Profile(counter.finish(), shape, dtype)


def _is_meta(model: nn.Module, dtype: torch.dtype) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.is_meta and (t.dtype == dtype or not t.is_floating_point()) for t in tensors)


def _input_shape(model: nn.Module, input_size: int | Sequence[int], batch_size: int | None) -> tuple[int, ...]:
    """The full input shape, batch first, from the forms :func:`profile` accepts."""
    if isinstance(input_size, bool):
        raise TypeError("input_size must be an int or a sequence of ints, got a bool")
    size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
    if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"input_size must be a positive int or a sequence of positive ints, got {input_size!r}")
    if len(size) == 4:  # (N, C, H, W): the batch is in the shape
        if batch_size not in (None, size[0]):
            raise ValueError(f"input_size {size} says batch {size[0]}, but batch_size={batch_size}; give one of them")
        return size
    if len(size) == 1 and isinstance(input_size, int):
        size = (size[0], size[0])
    if len(size) == 2:  # (H, W): the channel count comes from the model
        size = (_in_channels(model), *size)
    return (batch_size or 1, *size)


def _in_channels(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if isinstance(getattr(config, "in_chans", None), int):
        return config.in_chans
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    raise ValueError("cannot tell the model's input channels; pass input_size as (C, H, W)")


def _copy_to(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A deep copy on ``device``; for meta, tensors are replaced up front so no weight is ever copied."""
    if device.type != "meta":
        return copy.deepcopy(model).to(device=device, dtype=dtype)
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(_meta_like(p, dtype), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = _meta_like(b, dtype)
    return copy.deepcopy(model, memo)


def _meta_like(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty_like(t, device="meta", dtype=dtype if t.is_floating_point() else t.dtype)
