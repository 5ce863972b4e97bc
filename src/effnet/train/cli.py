"""``effnet train``: every TrainConfig field is a flag, its help is the field's one-line reason.

    effnet train                                   # embedded digits, a few minutes on 2 CPU cores
    effnet train --data path/to/folder --model efficientnet_v2_b0 --progressive v2-s --epochs 50
    torchrun --nproc_per_node 2 -m effnet train --data path/to/folder
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re

from effnet.train.config import TrainConfig

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
# What the `data` flag takes, beyond what the field comment says.
_EXTRA_HELP = {"data": " (default: digits)", "progressive": "; 'none' for constant values"}


def field_reasons() -> dict[str, str]:
    """Field name -> its comment in config.py (the single source of each flag's help)."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):  # no source shipped (zipped install): flags still work, without help
        return {}
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\w+): [^=]+=.*?  # (.*)$", source, re.MULTILINE)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    reasons = field_reasons()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", reasons.get(f.name, "")) + _EXTRA_HELP.get(f.name, "")
        if "nargs" in f.metadata:  # a list-valued field (--weights-from SOURCE MODEL FILE)
            parser.add_argument(flag, nargs=f.metadata["nargs"], metavar=f.metadata["metavar"],
                                default=argparse.SUPPRESS, help=text)
            continue
        base = _TYPES[f.type.split("|")[0].strip()]
        if base is bool:
            action = "store_true" if f.name == "resume" else argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=argparse.SUPPRESS, help=text)
        else:
            # SUPPRESS: an unset flag stays absent, so the data set's recipe can fill it
            metavar = f.metadata.get("metavar", f.name.upper() if f.name != "data" else "DIGITS|CIFAR10|CIFAR100|FOLDER")
            parser.add_argument(flag, type=base, default=argparse.SUPPRESS, help=text, metavar=metavar)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags the user gave, over the data set's recipe, over TrainConfig's defaults."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if given.get("progressive") in ("none", ""):
        given["progressive"] = None
    return TrainConfig.for_data(given.pop("data", None), **given)


def run(args: argparse.Namespace) -> int:
    from effnet.train.run import train

    train(config_from_args(args))
    return 0
