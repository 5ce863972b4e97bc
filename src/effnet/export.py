"""ONNX export with a dynamic batch dimension, checked by running the file in onnxruntime.

TensorFlow SAME padding depends on the input size, which an exported graph would have to compute
at run time (a shape-dependent ``Pad``, the usual cause of broken SAME-padding exports).  We instead
freeze every :class:`~effnet.layers.Conv2dSame` at the export size for the duration of the export,
so the graph holds plain static pads; the file is then valid for that height and width, any batch.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from effnet.io import atomic_output
from effnet.layers import Conv2dSame
from effnet.model import EfficientConvNet

DEFAULT_OPSET = 18
CHECK_TOLERANCE = 1e-4  # max |onnx - torch| / max |torch| accepted by the built-in check


def _input_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in input_size)):
        raise ValueError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


@contextlib.contextmanager
def frozen_same_padding(model: nn.Module, sample: torch.Tensor) -> Iterator[int]:
    """Fix every Conv2dSame's padding for ``sample``'s size; restore the previous padding on exit.

    Yields how many convolutions were frozen.  Each conv sees its own input size (after the strides
    before it), so the sizes are recorded with forward pre-hooks during one pass.
    """
    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    before = {m: m.static_padding for m in convs}
    sizes: dict[Conv2dSame, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:  # a pre-hook returning a value would replace args
        sizes[module] = tuple(args[0].shape[-2:])

    hooks = [m.register_forward_pre_hook(record) for m in convs]
    try:
        with torch.no_grad():
            model(sample)
        for m in convs:
            m.freeze_padding(sizes[m])
        yield len(convs)
    finally:
        for h in hooks:
            h.remove()
        for m, pad in before.items():
            m.static_padding = pad


def _torch_export(model: nn.Module, sample: torch.Tensor, path: str, opset: int, dynamo: bool) -> None:
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
    with warnings.catch_warnings():
        # The input check in forward is a constant for a traced graph; constant-folding notes are noise.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        # Chosen on purpose (fast, no onnxscript, one file); dynamo=True is tested as the way forward.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        if dynamo:  # torch.export-based: needs onnxscript; weights kept inside the one file
            torch.onnx.export(model, (sample,), path, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
        else:  # TorchScript-based: one self-contained file, dynamic batch through dynamic_axes
            torch.onnx.export(model, (sample,), path, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names)


def export_onnx(
    model: EfficientConvNet,
    path: str | os.PathLike,
    input_size: int | tuple[int, int] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool | None = None,
    dynamo: bool = False,
) -> None:
    """Write ``model`` (eval mode) as ONNX for ``input_size`` = (height, width) and any batch size.

    ``input_size`` defaults to the model's resolution.  ``check`` runs the file in onnxruntime at
    another batch size and compares with PyTorch (default: when onnxruntime is installed).  The file
    is written atomically; the model's mode and SAME padding are restored afterwards.  The default
    exporter is PyTorch's TorchScript-based one (fast, one file); ``dynamo=True`` uses the
    torch.export-based one (needs ``onnxscript``).
    """
    if not isinstance(model, EfficientConvNet):
        raise TypeError(f"export_onnx takes an effnet EfficientConvNet, got {type(model).__name__}")
    h, w = _input_hw(model.config.resolution if input_size is None else input_size)
    if min(h, w) < model.min_input_size:  # before the exporter traces anything or a file is opened
        raise ValueError(f"input_size {h}x{w} is below {model.config.name or 'the model'}'s minimum "
                         f"{model.min_input_size}x{model.min_input_size} (its total stride)")
    if check is None:
        try:
            import onnxruntime  # noqa: F401
            check = True
        except ImportError:
            check = False
    was_training = model.training
    device = next(model.parameters()).device
    sample = torch.randn(2, model.config.in_chans, h, w, device=device)
    model.eval()
    try:
        with frozen_same_padding(model, sample), atomic_output(path) as tmp:
            _torch_export(model, sample, str(tmp), opset, dynamo)
            if check:
                verify_onnx(model, tmp, (h, w))
    finally:
        model.train(was_training)


def verify_onnx(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int],
                batch: int = 3, tolerance: float = CHECK_TOLERANCE) -> float:
    """Run ``path`` in onnxruntime on a random batch and compare with ``model`` (eval); returns the error."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("verifying an ONNX file needs onnxruntime: pip install onnxruntime "
                          "(or pass check=False)") from None
    in_chans = model.config.in_chans
    x = torch.randn(batch, in_chans, *input_size, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(x.to(next(model.parameters()).device)).float().cpu()
    finally:
        model.train(was_training)
    if got.shape != want.shape:
        raise RuntimeError(f"ONNX output shape {tuple(got.shape)} differs from PyTorch's {tuple(want.shape)}")
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
    if not err <= tolerance:
        raise RuntimeError(f"ONNX output differs from PyTorch: relative error {err:.2e} > {tolerance:.0e}")
    return err
