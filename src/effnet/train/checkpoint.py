"""Crash-safe checkpoints: effnet weights files + a small state file, committed by an atomic pointer.

A run folder holds ``epoch-NNNN.safetensors`` (the model in the one effnet format,
:func:`effnet.weights.save`: config, class names, eval size, normalisation and the run's facts in
the metadata), ``epoch-NNNN.state.pt`` (optimiser, scheduler, EMA, RNG states, epoch, stage,
history; plain tensors/lists/dicts, read with ``weights_only=True``) and ``last.json``, which names
the newest *complete* pair.  Every file is written to a temporary name in the same folder and
renamed into place (:mod:`effnet.io`), and ``last.json`` is renamed last, so a run killed at any
instant leaves the previous pair and pointer intact; the temp file it may leave behind is removed
when the next run starts in the folder.  ``best.safetensors`` is a self-contained copy of the best
weights by validation accuracy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from effnet.errors import CheckpointError
from effnet.io import atomic_output, write_atomic
from effnet.model import EfficientConvNet
from effnet.train.config import TrainError
from effnet.weights.checkpoints import load_pickled, save

POINTER = "last.json"
BEST = "best.safetensors"
# What a state file must hold to resume from it.
STATE_KEYS = ("config", "epoch", "global_step", "optimizer", "scheduler", "scaler", "ema", "rng", "history", "best")


def save_state(path: str | Path, state: dict) -> None:
    """Atomic ``torch.save`` of plain tensors, lists and dicts."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict:
    """A state file written by :func:`save_state`; any damage is a one-line CheckpointError naming it."""
    state = load_pickled(path)  # weights_only: a state file is data, never code to unpickle
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, Mapping) else list(STATE_KEYS)
    if missing:
        raise CheckpointError(f"{path}: not an effnet train state file (no {', '.join(missing[:4])})")
    return dict(state)


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


def save_checkpoint(run_dir: Path, epoch: int, model: EfficientConvNet, metadata: dict, state: dict) -> Path:
    """Write the pair for ``epoch`` (1-based), commit it in the pointer, drop older pairs.

    ``metadata``: the keyword arguments of :func:`effnet.weights.save` (class names, eval size, ...).
    """
    name = f"epoch-{epoch:04d}"
    save(model, run_dir / f"{name}.safetensors", **metadata)
    save_state(run_dir / f"{name}.state.pt", state)
    pointer = {"epoch": epoch, "weights": f"{name}.safetensors", "state": f"{name}.state.pt"}
    write_atomic(run_dir / POINTER, json.dumps(pointer, indent=1).encode())
    for old in run_dir.glob("epoch-*"):  # only now are the older pairs no longer needed
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)
    return run_dir / pointer["weights"]


def last_checkpoint(run_dir: str | Path) -> tuple[Path, Path] | None:
    """(weights, state) of the newest complete checkpoint in ``run_dir``, or None."""
    run_dir = Path(run_dir)
    try:
        pointer = json.loads((run_dir / POINTER).read_text())
        weights, state = run_dir / pointer["weights"], run_dir / pointer["state"]
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise TrainError(f"{run_dir / POINTER} is damaged ({type(e).__name__}: {e})") from None
    if not (weights.is_file() and state.is_file()):
        raise TrainError(f"{run_dir / POINTER} names files that are missing: {weights.name}, {state.name}")
    return weights, state
