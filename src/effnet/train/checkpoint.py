"""Crash-safe checkpoints: safetensors weights + a small state file, committed by an atomic pointer.

A run folder holds ``epoch-NNNN.safetensors`` (the model, with its ModelConfig and class names in
the metadata), ``epoch-NNNN.state.pt`` (optimiser, scheduler, EMA, RNG states, epoch, stage,
history; plain tensors/lists/dicts, loadable with ``weights_only=True``) and ``last.json``, which
names the newest *complete* pair.  Every file is written to a temporary name in the same folder
and renamed into place, and ``last.json`` is renamed last, so a run killed at any instant leaves
the previous pair and pointer intact.  ``best.safetensors`` is a self-contained copy of the best
weights by validation accuracy.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from effnet.io import atomic_output, write_bytes_synced
from effnet.model import EfficientConvNet, ModelConfig
from effnet.train.config import TrainError

FORMAT = "effnet-train-1"
POINTER = "last.json"
BEST = "best.safetensors"
_writes_seen: dict[str, int] = {}


def _test_kill_hook(final: Path) -> None:
    """Test hook: EFFNET_TEST_KILL_BEFORE_RENAME="<text>:<n>" SIGKILLs this process just before the
    n-th rename of a file whose name contains <text>, i.e. with its temporary file fully written."""
    spec = os.environ.get("EFFNET_TEST_KILL_BEFORE_RENAME")
    if not spec:
        return
    text, _, n = spec.rpartition(":")
    if text in final.name:
        _writes_seen[text] = _writes_seen.get(text, 0) + 1
        if _writes_seen[text] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`effnet.io.atomic_output`), fsynced before the rename."""
    with atomic_output(path) as tmp:
        write_bytes_synced(tmp, data)
        _test_kill_hook(Path(path))


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """Atomic safetensors file; ``metadata`` values are JSON-encoded (safetensors keeps strings only)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    atomic_write(path, safetensors_bytes(tensors, metadata=meta))


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata of a weights file written by :func:`save_weights`."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types for a damaged header
        raise TrainError(f"{path} is not a readable safetensors file ({e})") from None
    if raw.get("format") != FORMAT:
        raise TrainError(f"{path} was not written by effnet train (no {FORMAT!r} metadata)")
    return {k: json.loads(v) for k, v in raw.items() if k != "format"}


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) of a weights file."""
    meta = read_metadata(path)
    return load_file(str(path)), meta


def load_model(path: str | Path) -> tuple[EfficientConvNet, dict]:
    """Rebuild the model a weights file describes and load its weights; returns (model, metadata)."""
    state, meta = load_weights(path)
    model = EfficientConvNet(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict(state)
    return model.eval(), meta


def save_state(path: str | Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load_state(path: str | Path) -> dict:
    # weights_only: a state file is data, never code to unpickle
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """torch, CUDA, numpy and python RNG states as tensors and lists (no pickled objects)."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(run_dir: Path, epoch: int, weights: dict[str, torch.Tensor], metadata: dict,
                    state: dict) -> Path:
    """Write the pair for ``epoch`` (1-based), commit it in the pointer, drop older pairs."""
    name = f"epoch-{epoch:04d}"
    save_weights(run_dir / f"{name}.safetensors", weights, metadata)
    save_state(run_dir / f"{name}.state.pt", state)
    pointer = {"epoch": epoch, "weights": f"{name}.safetensors", "state": f"{name}.state.pt"}
    atomic_write(run_dir / POINTER, json.dumps(pointer, indent=1).encode())
    for old in run_dir.glob("epoch-*"):  # only now are the older pairs no longer needed
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)
    return run_dir / pointer["weights"]


def last_checkpoint(run_dir: str | Path) -> tuple[Path, Path] | None:
    """(weights, state) of the newest complete checkpoint in ``run_dir``, or None."""
    run_dir = Path(run_dir)
    try:
        pointer = json.loads((run_dir / POINTER).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise TrainError(f"{run_dir / POINTER} is damaged ({e})") from None
    weights, state = run_dir / pointer["weights"], run_dir / pointer["state"]
    if not (weights.is_file() and state.is_file()):
        raise TrainError(f"{run_dir / POINTER} names files that are missing: {weights.name}, {state.name}")
    return weights, state
