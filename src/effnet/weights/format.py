"""The effnet file format: one safetensors file whose metadata says what the tensors are (no torch here).

Metadata entries are strings (safetensors keeps nothing else); structured values are JSON:

=================  ==========================================================================
``format``         ``"effnet"``
``format_version`` ``"2"``; a reader refuses a newer version instead of misreading it
``kind``           ``"model"`` (an ``EfficientConvNet``'s state dict) or ``"graph"`` (a runtime
                   layer graph, its arrays named by the graph's nodes)
``config``         ``ModelConfig.to_dict()`` (required for ``model``)
``graph``          the node list (required for ``graph``)
``class_names``    optional list of strings, one per classifier output
``eval_size``      optional ``[H, W]`` the model is evaluated at
``normalization``  optional ``{"mean": [...], "std": [...], "invert": false}``, per input channel,
                   applied to images scaled to [0, 1] (``invert``: the model saw ``1 - x``)
``training``       optional dict of the run that wrote the file (epoch, accuracy, data, ...)
=================  ==========================================================================

Older layouts still read: format ``"effnet"`` version 1 (``effnet.save`` before the schema:
``config`` only) and ``"effnet-train-1"`` (``effnet train``: every value JSON, ``model_config``,
``image_size``, ``mean``/``std`` and the run's facts).  The reader checks the safetensors header
against the file's length, so a zero-byte, truncated or foreign file is one :class:`CheckpointError`
line naming the file.  Only json, numpy and safetensors are used, so the runtime reads graph files
on machines without torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet.config import ModelConfig
from effnet.errors import CheckpointError
from effnet.io import atomic_output

FORMAT = "effnet"
FORMAT_VERSION = 2
KINDS = ("model", "graph")
LEGACY_TRAIN_FORMAT = "effnet-train-1"  # what `effnet train` wrote before version 2
_MAX_HEADER = 100_000_000  # a safetensors header longer than this is not one

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Normalization:
    """How images are fed to the model: ``(x - mean) / std`` per channel, x in [0, 1] (``1 - x`` first
    when ``invert``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    invert: bool = False

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (not isinstance(values, (list, tuple)) or not values
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
                raise ValueError(f"normalization {name} must be a non-empty list of numbers, got {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if len(self.mean) != len(self.std):
            raise ValueError(f"normalization mean and std differ in length ({len(self.mean)} vs {len(self.std)})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"normalization std must be positive, got {list(self.std)}")
        if not isinstance(self.invert, bool):
            raise TypeError(f"normalization invert must be true or false, got {self.invert!r}")

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "invert": self.invert}

    @staticmethod
    def from_dict(d: object) -> Normalization:
        if not isinstance(d, Mapping) or not {"mean", "std"} <= d.keys():
            raise ValueError(f"normalization must be an object with mean and std, got {d!r}")
        return Normalization(d["mean"], d["std"], d.get("invert", False))


@dataclass(frozen=True)
class Metadata:
    """What an effnet file says about its tensors; validated when built, so no writer can write a bad one."""

    kind: str  # "model" or "graph"
    config: ModelConfig | None = None  # the architecture (required for kind "model")
    graph: list | None = None  # the runtime's node list (required for kind "graph")
    class_names: tuple[str, ...] | None = None  # one per classifier output
    eval_size: tuple[int, int] | None = None  # (H, W) the model is evaluated at
    normalization: Normalization | None = None  # input scaling the model was trained with
    training: dict | None = None  # facts of the run that wrote it
    format_version: int = FORMAT_VERSION  # the version the file was written in (1 for the old layouts)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "model" and not isinstance(self.config, ModelConfig):
            raise ValueError("a model file needs its ModelConfig (config)")
        if self.kind == "graph" and not isinstance(self.graph, list):
            raise ValueError(f"a graph file needs its node list (graph), got {type(self.graph).__name__}")
        if self.class_names is not None:
            names = self.class_names
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"class_names must be a list of strings, got {names!r}"[:200])
            object.__setattr__(self, "class_names", tuple(names))
            classes = self.config.num_classes if self.config is not None else len(names)
            if classes and len(names) != classes:
                raise ValueError(f"{len(names)} class names for a classifier of {classes} outputs")
        if self.eval_size is not None:
            size = self.eval_size
            if (not isinstance(size, (list, tuple)) or len(size) != 2
                    or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
                raise ValueError(f"eval_size must be [H, W] with positive integers, got {size!r}")
            object.__setattr__(self, "eval_size", tuple(size))
        if self.normalization is not None:
            if not isinstance(self.normalization, Normalization):
                object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
            channels = self.config.in_chans if self.config is not None else None
            if channels is not None and len(self.normalization.mean) not in (1, channels):
                raise ValueError(f"normalization has {len(self.normalization.mean)} channels, the model takes "
                                 f"{channels}")
        if self.training is not None and not isinstance(self.training, dict):
            raise ValueError(f"training must be a dict, got {type(self.training).__name__}")

    def to_strings(self) -> dict[str, str]:
        """The safetensors metadata of a file in the current format version."""
        out = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": self.kind}
        if self.config is not None:
            out["config"] = json.dumps(self.config.to_dict())
        if self.graph is not None:
            out["graph"] = json.dumps(self.graph)
        if self.class_names is not None:
            out["class_names"] = json.dumps(list(self.class_names))
        if self.eval_size is not None:
            out["eval_size"] = json.dumps(list(self.eval_size))
        if self.normalization is not None:
            out["normalization"] = json.dumps(self.normalization.to_dict())
        if self.training is not None:
            out["training"] = json.dumps(self.training)
        return out

    @staticmethod
    def from_strings(raw: Mapping[str, str], path: PathLike) -> Metadata:
        """Parse and check the metadata of ``path`` (any layout this version reads); CheckpointError if bad."""
        fmt = raw.get("format")
        if fmt == LEGACY_TRAIN_FORMAT:
            return _parse(path, _from_train_1, raw)
        if fmt != FORMAT:
            raise CheckpointError(f"{path}: not an effnet file (its metadata has no \"format\": \"effnet\"); for a "
                                  "plain or torchvision/timm state dict use create_model(name, weights=path)")
        version = raw.get("format_version", "")
        if not version.isdigit():
            raise CheckpointError(f"{path}: effnet file with a malformed format_version {version!r}")
        if int(version) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer effnet (format version {version}); this effnet "
                                  f"reads versions 1 to {FORMAT_VERSION}: upgrade effnet to load it")
        return _parse(path, _from_effnet_1 if int(version) == 1 else _from_effnet_2, raw)


def is_effnet(raw: Mapping[str, str]) -> bool:
    """Whether safetensors metadata claims to be an effnet file (of any layout, readable or not)."""
    return raw.get("format") in (FORMAT, LEGACY_TRAIN_FORMAT)


def _json(raw: Mapping[str, str], key: str) -> object:
    try:
        return json.loads(raw[key])
    except json.JSONDecodeError as e:
        raise ValueError(f"metadata {key!r} is not valid JSON ({e})") from None


def _config(d: object) -> ModelConfig:
    if not isinstance(d, dict):
        raise TypeError(f"metadata 'config' must be a JSON object, got {type(d).__name__}")
    try:
        return ModelConfig.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"malformed model config in metadata ({type(e).__name__}: {e})") from None


def _from_effnet_2(raw: Mapping[str, str]) -> Metadata:
    optional = {k: _json(raw, k) for k in ("graph", "class_names", "eval_size", "normalization", "training")
                if k in raw}
    config = _config(_json(raw, "config")) if "config" in raw else None
    return Metadata(kind=raw.get("kind", ""), config=config, **optional)


def _from_effnet_1(raw: Mapping[str, str]) -> Metadata:
    """``effnet.save`` before version 2: {"format", "format_version": "1", "model": name, "config"}."""
    if "config" not in raw:
        raise ValueError("metadata has no 'config'")
    return Metadata(kind="model", config=_config(_json(raw, "config")), format_version=1)


def _from_train_1(raw: Mapping[str, str]) -> Metadata:
    """``effnet train`` before version 2: every value JSON; the eval size was one int, mean/std loose."""
    values = {k: _json(raw, k) for k in raw if k != "format"}
    if "model_config" not in values:
        raise ValueError("metadata has no 'model_config'")
    size = values.pop("image_size", None)
    mean, std = values.pop("mean", None), values.pop("std", None)
    return Metadata(
        kind="model", config=_config(values.pop("model_config")), class_names=values.pop("class_names", None),
        eval_size=(size, size) if size is not None else None,
        normalization=Normalization(mean, std) if mean is not None and std is not None else None,
        training=values, format_version=1)


def _parse(path: PathLike, parse, raw: Mapping[str, str]) -> Metadata:
    try:
        return parse(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad effnet metadata: {str(e).splitlines()[0] if str(e) else e!r}") from None


def read_header(path: PathLike) -> tuple[dict[str, str], dict[str, dict]]:
    """(metadata, tensor entries) of a safetensors file, checked against the file's length.

    Raises a one-line :class:`CheckpointError` naming the file when it is missing, empty, truncated,
    padded or not safetensors at all.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a safetensors file")
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        first = f.read(1)
        if len(head) < 8 or n == 0 or n > _MAX_HEADER or first != b"{":
            raise CheckpointError(f"{path}: not a safetensors file ({_what_is(head)})")
        if 8 + n > size:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, its header alone "
                                  f"needs {8 + n})")
        text = first + f.read(n - 1)
    try:
        header = json.loads(text.decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({str(e).splitlines()[0]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: corrupt safetensors header (metadata values must be strings)")
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f"{path}: corrupt safetensors header (a tensor entry without data_offsets)") from None
    if 8 + n + end != size:
        problem = "truncated" if 8 + n + end > size else "corrupt"
        raise CheckpointError(f"{path}: {problem} safetensors file ({size} bytes, its header describes "
                              f"{8 + n + end})")
    return metadata, header


def _what_is(head: bytes) -> str:
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "it looks like a PyTorch .pt/.pth pickle; effnet files are safetensors"
    if len(head) < 8:
        return f"only {len(head)} bytes"
    return "unrecognised file header"


def read_metadata(path: PathLike) -> Metadata:
    """The checked :class:`Metadata` of an effnet file (any layout this version reads)."""
    raw, _ = read_header(path)
    return Metadata.from_strings(raw, path)


def read_arrays(path: PathLike) -> tuple[dict[str, np.ndarray], Metadata]:
    """The tensors of an effnet file as numpy arrays, and its metadata (for readers without torch)."""
    from safetensors.numpy import load_file

    metadata = read_metadata(path)
    try:
        return load_file(str(path)), metadata
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own types; the header already passed
        raise CheckpointError(f"{path}: unreadable tensors ({str(e).splitlines()[0] if str(e) else e!r})") from None


def write_arrays(path: PathLike, arrays: Mapping[str, np.ndarray], metadata: Metadata) -> Path:
    """Write numpy ``arrays`` with ``metadata`` as an effnet file, atomically (the torch side: ``save``)."""
    from safetensors.numpy import save_file

    if not isinstance(metadata, Metadata):
        raise TypeError(f"metadata must be a effnet.weights.format.Metadata, got {type(metadata).__name__}")
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_output(path) as tmp:
        save_file(arrays, str(tmp), metadata=metadata.to_strings())
    return Path(path)
