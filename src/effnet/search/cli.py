"""``effnet search compound`` and ``effnet search blocks`` (docs/search.md).

    effnet search compound --output runs/search-compound                  # photos proxy, this machine
    effnet search compound --step 0.1 --limit 6 --phi-max 2 --device cpu  # a smaller grid
    effnet search compound --executor ray --ray-address auto               # one Ray task per candidate
    effnet search blocks --output runs/search-blocks --budget 30 --device cpu
"""

from __future__ import annotations

import argparse

import torch

from effnet.analysis.ceilings import resolve_device
from effnet.search.candidate import Recipe
from effnet.search.compound import Base, Settings
from effnet.search.executors import make_executor
from effnet.zoo import get_recipe


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


def _common(p: argparse.ArgumentParser) -> None:
    r, b = Recipe(), Base()
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="search_command", metavar="SEARCH", required=True)
    c = sub.add_parser("compound", help="EfficientNet's alpha/beta/gamma grid search, then phi = 1..N",
                       description="Step 1: train every (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ target at "
                                   "phi=1; step 2: scale the winner for phi=1..N; plus width/depth/resolution-only "
                                   "scaling at equal MACs.")
    _common(c)
    c.add_argument("--target", type=float, default=2.0, help="MACs growth per unit of phi")
    c.add_argument("--tolerance", type=float, default=0.1, help="keep |alpha*beta^2*gamma^2 - target| <= this")
    c.add_argument("--step", type=float, default=0.05, help="grid step of alpha, beta, gamma")
    for name, (lo, hi) in (("alpha", (1.0, 2.1)), ("beta", (1.0, 1.45)), ("gamma", (1.0, 1.45))):
        c.add_argument(f"--{name}", type=float, nargs=2, default=(lo, hi), metavar=("LOW", "HIGH"),
                       help=f"range of {name} (default {lo} {hi}, the paper's: >= 1 and within the target)")
    c.add_argument("--limit", type=int, default=None, help="train only the N grid points closest to the target")
    c.add_argument("--phi-max", type=int, default=3, help="step 2 scales phi = 1..this")
    c.add_argument("--multiples", type=float, nargs="+", default=(2.0, 4.0),
                   help="MACs multiples of the single-dimension experiment")
    c.add_argument("--remeasure", action="store_true",
                   help="time every finished candidate again on --device (e.g. on a quiet machine), no training")
    c.set_defaults(_run=_run_compound)
    from effnet.search.blocks_cli import add_block_parser

    add_block_parser(sub, _common)


def recipe_from(args: argparse.Namespace) -> Recipe:
    return Recipe(data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  latency_batch=args.latency_batch)


def base_from(args: argparse.Namespace) -> Base:
    return Base(args.base, args.base_width, args.base_depth, args.base_resolution)


def executor_from(args: argparse.Namespace):
    return make_executor(args.executor, devices(args.device, args.gpus), args.ray_address)


def _run_compound(args: argparse.Namespace) -> int:
    from effnet.search.compound import search

    base = base_from(args)
    get_recipe(base.model)  # an unknown name fails now, not in the first candidate
    settings = Settings(args.output, base, recipe_from(args), args.target, args.tolerance, args.step,
                        tuple(args.alpha), tuple(args.beta), tuple(args.gamma), args.limit, args.phi_max,
                        tuple(args.multiples), devices(args.device, args.gpus)[0] if args.remeasure else None)
    search(settings, executor_from(args))
    return 0


def run(args: argparse.Namespace) -> int:
    return args._run(args)
