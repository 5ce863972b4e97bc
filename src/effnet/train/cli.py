"""``effnet train``: every TrainConfig field is a flag; its help is the field's reason (field metadata).

    effnet train                                   # embedded digits, a few minutes on 2 CPU cores
    effnet train --data path/to/folder --model efficientnet_v2_b0 --progressive v2-s --epochs 50
    torchrun --nproc_per_node 2 -m effnet train --data path/to/folder
"""

from __future__ import annotations

import argparse
import dataclasses

from effnet.train.config import RECIPES, TrainConfig

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_DEFAULT_DATA = "digits"  # what `effnet train` trains on without --data


def help_text(f: dataclasses.Field) -> str:
    """A flag's help: the field's reason and its real default (the digits recipe's value first)."""
    default = f.metadata.get("default_text")
    if default is None:
        default = ("on" if f.default else "off") if isinstance(f.default, bool) else str(f.default)
    if f.name in RECIPES[_DEFAULT_DATA] and RECIPES[_DEFAULT_DATA][f.name] != f.default:
        default = f"{RECIPES[_DEFAULT_DATA][f.name]} for {_DEFAULT_DATA}, else {default}"
    return f"{f.metadata['help']} (default: {default})".replace("%", "%%")  # argparse formats help with %


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        own = f.metadata.get("flag", {})  # argparse settings of the field's own (metavar, nargs)
        if "nargs" in own:  # a list of strings: --weights-from SOURCE MODEL FILE
            parser.add_argument(flag, default=argparse.SUPPRESS, help=help_text(f), **own)
            continue
        base = _TYPES[f.type.split("|")[0].strip()]
        if base is bool:
            action = "store_true" if f.name == "resume" else argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=argparse.SUPPRESS, help=help_text(f))
        else:
            # SUPPRESS: an unset flag stays absent, so the data set's recipe can fill it
            metavar = own.get("metavar", f.name.upper() if f.name != "data" else "DIGITS|CIFAR10|CIFAR100|FOLDER")
            parser.add_argument(flag, type=base, default=argparse.SUPPRESS, help=help_text(f), metavar=metavar)


def given_flags(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the user set with a flag (unset flags are absent from ``args``)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if given.get("progressive") in ("none", ""):
        given["progressive"] = None
    return given


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags the user gave, over the data set's recipe, over TrainConfig's defaults."""
    given = given_flags(args)
    return TrainConfig.for_data(given.pop("data", None), **given)


def run(args: argparse.Namespace) -> int:
    from effnet.train.run import train

    # With --resume the run's saved settings apply; the flags given are checked against them.
    train(config_from_args(args), requested=set(given_flags(args)))
    return 0
