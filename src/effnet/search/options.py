"""Flags and helpers both search sub-commands share: data, recipe, base network, devices, executor."""

from __future__ import annotations

import argparse

import torch

from effnet.devices import resolve_device
from effnet.search.candidate import SearchRecipe
from effnet.search.compound import Base
from effnet.search.executors import Executor, make_executor


def devices(device: str, gpus: int | None) -> list[str]:
    """The devices candidates run on: every visible GPU for "cuda"/"auto" (or the first ``gpus``), else one."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    d = resolve_device(device)
    if d.type == "cpu":
        return ["cpu"]
    if device != "cuda":  # one named GPU
        return [str(d)]
    n = torch.cuda.device_count() if gpus is None else gpus
    if not 1 <= n <= torch.cuda.device_count():
        raise ValueError(f"--gpus must be between 1 and {torch.cuda.device_count()}, got {n}")
    return [f"cuda:{i}" for i in range(n)]


def add_common(p: argparse.ArgumentParser) -> None:
    r, b = SearchRecipe(), Base()
    p.add_argument("--output", required=True, help="results folder; an existing one is resumed")
    p.add_argument("--data", default=r.data, help="photos (the shipped proxy), digits, or an image folder "
                                                  "(class sub-folders, as effnet train)")
    p.add_argument("--epochs", type=int, default=r.epochs, help="training budget of every candidate")
    p.add_argument("--batch-size", type=int, default=r.batch_size)
    p.add_argument("--lr", type=float, default=r.lr, help="AdamW peak learning rate")
    p.add_argument("--seed", type=int, default=r.seed, help="the same seed for every candidate")
    p.add_argument("--base", default=b.model, help="zoo model the search scales")
    p.add_argument("--base-width", type=float, default=b.width)
    p.add_argument("--base-depth", type=float, default=b.depth)
    p.add_argument("--base-resolution", type=int, default=b.resolution)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (every GPU, one candidate each) or cuda:N")
    p.add_argument("--gpus", type=int, default=None, help="use only the first N GPUs")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="local process pool (default) or Ray tasks (pip install 'effnet[search]')")
    p.add_argument("--ray-address", default=None, help="ray.init address (default: start a local Ray)")
    p.add_argument("--latency-batch", type=int, default=r.latency_batch, help="batch of the measured latency")


def recipe_from(args: argparse.Namespace) -> SearchRecipe:
    return SearchRecipe(data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  latency_batch=args.latency_batch)


def base_from(args: argparse.Namespace) -> Base:
    return Base(args.base, args.base_width, args.base_depth, args.base_resolution)


def executor_from(args: argparse.Namespace) -> Executor:
    return make_executor(args.executor, devices(args.device, args.gpus), args.ray_address)
