"""``effnet models``: list the zoo."""

from __future__ import annotations

import argparse

from effnet.zoo import get_recipe, list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'efficientnet_b*'")


def run(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        r = get_recipe(name)
        print(f"{name:22s} {r.family:20s} width {r.width:<4g} depth {r.depth:<4g} resolution {r.resolution}")
    return 0
