"""Our own checkpoints: safetensors with the model name and config in the metadata; safe reading.

Nothing here unpickles arbitrary objects: safetensors holds only tensors, and ``.pt``/``.pth`` files
are read with ``torch.load(weights_only=True)``, which refuses anything but tensors and containers.
Files are written atomically (temp file in the same folder, then ``os.replace``), so a failed save
leaves any earlier file untouched.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from effnet.io import atomic_output
from effnet.model import EfficientConvNet, ModelConfig
from effnet.weights.convert import CheckpointError, checked_rename

FORMAT = "effnet"  # the "format" entry of our safetensors metadata
FORMAT_VERSION = "1"
# Weights written by `effnet train` (effnet.train.checkpoint) keep the JSON config under "model_config".
TRAIN_FORMAT, TRAIN_CONFIG_KEY = "effnet-train-1", "model_config"
_SAFETENSORS_MAGIC_MAX = 100_000_000  # a header longer than this is not a safetensors header
# Wrapper keys training scripts put around a state dict ({"state_dict": ..., "optimizer": ...}).
_WRAPPER_KEYS = ("state_dict", "model", "module")

PathLike = str | os.PathLike


def save(model: EfficientConvNet, path: PathLike) -> None:
    """Write ``model`` as safetensors with its name and :class:`ModelConfig` in the metadata."""
    from safetensors.torch import save_file

    if not isinstance(model, EfficientConvNet):
        raise TypeError(f"save() takes an effnet EfficientConvNet, got {type(model).__name__}")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.name or "",
        "config": json.dumps(model.config.to_dict()),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _sniff(path: Path) -> str:
    """"safetensors", "zip" (torch.save), "pickle" (legacy torch.save) or "unknown", from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte header length can itself start with b"PK" or 0x80.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < _SAFETENSORS_MAGIC_MAX:
        return "safetensors"
    if head[:2] == b"PK":
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def read_checkpoint(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors or ``.pt``/``.pth`` file, never unpickling code.

    Pickle files give empty metadata.  Training wrappers (``{"state_dict": ...}``) and a leading
    ``module.`` (DataParallel) are removed.  Any unreadable file raises a one-line CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    kind = _sniff(path)
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({_one_line(e)})") from None
        return tensors, metadata
    if kind == "unknown":
        raise CheckpointError(f"{path}: not a safetensors or PyTorch checkpoint (unrecognised file header)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only=True stopped at an object that is not a tensor: it would run code, so refuse.
        raise CheckpointError(f"{path}: refused to unpickle: it holds Python objects other than tensors, "
                              "which could run code (read with torch.load(weights_only=True))") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({_one_line(e)})") from None
    return _unwrap(obj, path), {}


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


def config_from_metadata(metadata: Mapping[str, str], path: PathLike) -> ModelConfig:
    """The :class:`ModelConfig` stored by :func:`save` or `effnet train`; CheckpointError when absent."""
    if metadata.get("format") == TRAIN_FORMAT and TRAIN_CONFIG_KEY in metadata:
        metadata = {"config": metadata[TRAIN_CONFIG_KEY]}
    elif metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an effnet checkpoint (no effnet config in its metadata); for a "
                              "plain or torchvision/timm state dict use create_model(name, weights=path)")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed effnet config in metadata ({_one_line(e)})") from None
    return config


def check_and_load(model: EfficientConvNet, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state_dict`` into ``model`` only if every key and shape fits; otherwise change nothing."""
    expected = model.state_dict()
    sd = checked_rename(state_dict, {k: k for k in expected}, expected, what)
    model.load_state_dict(sd)


def load(path: PathLike, *, map_location: str | torch.device = "cpu") -> EfficientConvNet:
    """Rebuild the model saved by :func:`save` (architecture from the metadata) and load its weights."""
    tensors, metadata = read_checkpoint(path)
    config = config_from_metadata(metadata, path)
    model = EfficientConvNet(config)
    check_and_load(model, tensors, f"{path} (model {config.name or 'custom'})")
    return model.to(map_location)
