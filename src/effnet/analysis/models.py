"""What the analysis commands run: a model by name (the zoo, torchvision or timm) and a dtype by name.

One resolver serves ``effnet profile``, ``effnet bench`` and anyone else: a zoo name
(``efficientnet_b0``), ``torchvision:NAME`` or ``timm:NAME``, or a bare torchvision classification
name (``resnet50``, the benchmarks' dense baseline).  Peer models are built without weights.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from effnet.zoo import MODELS, create_model, get_recipe

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Libraries whose classification models ``LIB:NAME`` builds (weights are never downloaded).
PEER_LIBRARIES = ("torchvision", "timm")


@dataclass
class NamedModel:
    """A model built from a name, with the input it expects."""

    name: str
    model: nn.Module
    resolution: int  # default input height and width
    in_chans: int
    source: str  # "effnet", "torchvision" or "timm"


def parse_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; a clear error for anything else."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def _torchvision_names(tv) -> list[str]:
    return tv.models.list_models(module=tv.models)


def peer_library(lib: str):
    """The module of a peer library (``torchvision``, ``timm``), or None where it is not installed."""
    try:
        return importlib.import_module(lib)
    except ImportError:
        return None


def check_model_name(name: str) -> None:
    """Raise ValueError for a name :func:`build_model` would not build; builds nothing."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    lib, _, peer = name.rpartition(":")
    if not lib and name in MODELS:
        return
    if lib and lib not in PEER_LIBRARIES:
        raise ValueError(f"unknown model source {lib!r} in {name!r}; allowed: a zoo name, or "
                         f"{', '.join(p + ':NAME' for p in PEER_LIBRARIES)}")
    module = peer_library(lib or "torchvision")
    if module is None:
        if lib:
            raise ValueError(f"{lib} is not installed; pip install {lib}, or use a zoo model")
        try:
            get_recipe(name)
        except ValueError as e:  # the zoo's own error, with its close matches
            raise ValueError(f"{e}; torchvision is not installed, so only zoo names work") from None
    if lib == "timm":
        if not module.is_model(peer):
            raise ValueError(f"timm has no model {peer!r}")
        return
    if (peer or name) not in _torchvision_names(module):
        if lib:
            raise ValueError(f"torchvision has no model {peer!r} (its classification models only)")
        try:
            get_recipe(name)
        except ValueError as e:  # the zoo's error names its close matches
            raise ValueError(f"{e}; or a torchvision classification model such as resnet50, "
                             "or torchvision:NAME / timm:NAME") from None


def build_model(name: str, device: str | torch.device = "cpu") -> NamedModel:
    """The model called ``name``, built on ``device`` (``"meta"`` allocates no weights: for counting)."""
    check_model_name(name)
    lib, _, peer = name.rpartition(":")
    with torch.device(device):
        if not lib and name in MODELS:
            model = create_model(name)
            return NamedModel(name, model, get_recipe(name).resolution, model.config.in_chans, "effnet")
        lib = lib or "torchvision"
        module = importlib.import_module(lib)
        if lib == "torchvision":
            model = module.models.get_model(peer, weights=None)
            return NamedModel(name, model, 224, 3, lib)
        model = module.create_model(peer, pretrained=False)
    cfg = getattr(model, "pretrained_cfg", None) or {}  # timm records its default input size
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    return NamedModel(name, model, int(size[-1]), int(size[0]), lib)
