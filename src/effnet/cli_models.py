"""``effnet models``: list the zoo."""

from __future__ import annotations

import argparse

from effnet.suggest import did_you_mean
from effnet.zoo import MODELS, get_recipe, list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'efficientnet_b*'")


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:  # an empty listing would look like an empty zoo
        raise ValueError(f"no zoo model matches {args.pattern!r}{did_you_mean(args.pattern, MODELS)} "
                         "(effnet models lists all)")
    for name in names:
        r = get_recipe(name)
        print(f"{name:22s} {r.family:20s} width {r.width:<4g} depth {r.depth:<4g} resolution {r.resolution}")
    return 0
