"""Our own checkpoints (:mod:`effnet.weights.format` on the torch side) and safe reading of any file.

:func:`save` writes an ``EfficientConvNet`` with its config and the optional class names, evaluation
size, normalisation and training facts; :func:`load` / :func:`load_checkpoint` rebuild it.  ``effnet
train`` writes its weights through :func:`save` as well, so there is one format and one loader.

Nothing here unpickles arbitrary objects: safetensors holds only tensors, and ``.pt``/``.pth`` files
are read with ``torch.load(weights_only=True)``, which refuses anything but tensors and containers.
Files are written atomically (:mod:`effnet.io`), so a failed save leaves any earlier file untouched.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from effnet.errors import CheckpointError
from effnet.io import atomic_output
from effnet.model import EfficientConvNet
from effnet.weights.convert import checked_rename
from effnet.weights.format import Metadata, Normalization, read_header

# Wrapper keys training scripts put around a state dict ({"state_dict": ..., "optimizer": ...}).
_WRAPPER_KEYS = ("state_dict", "model", "module")

PathLike = str | os.PathLike


def save(model: EfficientConvNet, path: PathLike, *, class_names: Sequence[str] | None = None,
         eval_size: int | tuple[int, int] | None = None,
         normalization: Normalization | Mapping | None = None, training: dict | None = None) -> Path:
    """Write ``model`` as an effnet file: safetensors with its :class:`ModelConfig` in the metadata.

    Optional: ``class_names`` (one per output), ``eval_size`` (an int or ``(H, W)``), ``normalization``
    (a :class:`Normalization` or ``{"mean": [...], "std": [...], "invert": False}``) and
    ``training`` (a JSON-serialisable dict of the run's facts).  Bad values raise ValueError before
    anything is written.
    """
    from safetensors.torch import save_file

    if not isinstance(model, EfficientConvNet):
        raise TypeError(f"save() takes an effnet EfficientConvNet, got {type(model).__name__}")
    if isinstance(eval_size, int) and not isinstance(eval_size, bool):
        eval_size = (eval_size, eval_size)
    metadata = Metadata(kind="model", config=model.config, class_names=class_names, eval_size=eval_size,
                        normalization=normalization, training=training).to_strings()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _looks_like_pickle(path: Path) -> bool:
    """Whether the file starts like ``torch.save`` output (zip) or a legacy pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    # a safetensors file's 8-byte header length can itself start with b"PK" or 0x80; its 9th byte is "{"
    safetensors = len(head) == 9 and head[8:9] == b"{"
    return not safetensors and (head[:2] == b"PK" or head[:1] == b"\x80")


def read_checkpoint(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and raw metadata of a safetensors or ``.pt``/``.pth`` file, never unpickling code.

    Pickle files give empty metadata.  Training wrappers (``{"state_dict": ...}``) and a leading
    ``module.`` (DataParallel) are removed.  Any unreadable file raises a one-line CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    if _looks_like_pickle(path):
        return _unwrap(load_pickled(path), path), {}
    metadata, _ = read_header(path)  # empty, truncated, foreign: one line naming the file
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({_one_line(e)})") from None
    return tensors, metadata


def load_pickled(path: PathLike) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure a one-line CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only=True stopped at an object that is not a tensor: it would run code, so refuse.
        raise CheckpointError(f"{path}: refused to unpickle: it holds Python objects other than tensors, "
                              "which could run code (read with torch.load(weights_only=True))") from None
    except FileNotFoundError:
        raise CheckpointError(f"no such file: {path}") from None
    except Exception as e:  # noqa: BLE001 -- zip, pickle and (torch >= 2.14) safetensors readers raise their own
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch file ({_one_line(e)})") from None


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(2):  # at most {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not named tensors: {', '.join(bad[:8])}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def check_and_load(model: EfficientConvNet, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state_dict`` into ``model`` only if every key and shape fits; otherwise change nothing."""
    expected = model.state_dict()
    sd = checked_rename(state_dict, {k: k for k in expected}, expected, what)
    model.load_state_dict(sd)


def read_weights(path: PathLike) -> tuple[dict[str, torch.Tensor], Metadata]:
    """The state dict and checked metadata of an effnet model file (any layout this version reads)."""
    tensors, raw = read_checkpoint(path)
    if not raw:  # a .pt/.pth state dict: no metadata to rebuild from
        raise CheckpointError(f"{path}: a plain PyTorch state dict, not an effnet file; use "
                              "create_model(name, weights=path)")
    metadata = Metadata.from_strings(raw, path)
    if metadata.kind != "model":
        raise CheckpointError(f"{path}: an effnet {metadata.kind} file, not model weights")
    return tensors, metadata


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu"
                    ) -> tuple[EfficientConvNet, Metadata]:
    """The model of an effnet file (architecture from its metadata, weights checked) and its metadata."""
    tensors, metadata = read_weights(path)
    model = EfficientConvNet(metadata.config)
    check_and_load(model, tensors, f"{path} (model {metadata.config.name or 'custom'})")
    return model.to(map_location), metadata


def load(path: PathLike, *, map_location: str | torch.device = "cpu") -> EfficientConvNet:
    """Rebuild the model saved by :func:`save` or ``effnet train`` and load its weights."""
    return load_checkpoint(path, map_location=map_location)[0]
