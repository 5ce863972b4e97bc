"""``effnet search compound`` and ``effnet search blocks`` (docs/search.md).

    effnet search compound --output runs/search-compound                  # photos proxy, this machine
    effnet search compound --step 0.1 --limit 6 --phi-max 2 --device cpu  # a smaller grid
    effnet search compound --executor ray --ray-address auto               # one Ray task per candidate
    effnet search blocks --output runs/search-blocks --budget 30 --device cpu
"""

from __future__ import annotations

import argparse

from effnet.search.blocks_cli import add_block_parser
from effnet.search.compound import Settings, search
from effnet.search.options import add_common, base_from, devices, executor_from, recipe_from
from effnet.zoo import get_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="search_command", metavar="SEARCH", required=True)
    c = sub.add_parser("compound", help="EfficientNet's alpha/beta/gamma grid search, then phi = 1..N",
                       description="Step 1: train every (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ target at "
                                   "phi=1; step 2: scale the winner for phi=1..N; plus width/depth/resolution-only "
                                   "scaling at equal MACs.")
    add_common(c)
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
    add_block_parser(sub)


def _run_compound(args: argparse.Namespace) -> int:
    base = base_from(args)
    get_recipe(base.model)  # an unknown name fails now, not in the first candidate
    settings = Settings(args.output, base, recipe_from(args), args.target, args.tolerance, args.step,
                        tuple(args.alpha), tuple(args.beta), tuple(args.gamma), args.limit, args.phi_max,
                        tuple(args.multiples), devices(args.device, args.gpus)[0] if args.remeasure else None)
    search(settings, executor_from(args))
    return 0


def run(args: argparse.Namespace) -> int:
    return args._run(args)
