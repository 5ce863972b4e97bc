"""``effnet`` command line: one subcommand per module, imported only when it runs.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``.  Errors a user
can cause (bad paths, names, sizes) surface as one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from effnet.errors import UserError
from effnet.suggest import did_you_mean

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("effnet.cli_models", "list the zoo's model names"),
    "zoo": ("effnet.analysis.zoo_cli", "every zoo model: params, MACs, activations against the papers"),
    "profile": ("effnet.analysis.profile_cli", "per-layer params, MACs, bytes, intensity (and timings) of a model"),
    "bench": ("effnet.bench_command", "throughput and latency of several models, eager/channels_last/compile/triton"),
    "train": ("effnet.train.cli", "train a model (default: the embedded digits data set)"),
    "evaluate": ("effnet.train.evaluate_cli", "top-1/top-5, per-class accuracy and confusion matrix of a checkpoint"),
    "predict": ("effnet.train.predict_cli", "top-k classes of images with a checkpoint"),
    "runtime": ("effnet.runtime.cli", "the layer-graph engine: OpenCL devices, graph summary, export to a graph file"),
    "search": ("effnet.search.cli", "compound-coefficient grid search and latency-aware block search"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage block, and "invalid choice" says which was probably meant."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{did_you_mean(str(value), choices)} "
                                                 f"(choose from {', '.join(choices)})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="effnet", description="Efficient CNNs: the zoo, counting and measuring, training, evaluation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name in _requested(sys.argv):  # import only the module that will run
            importlib.import_module(module).add_arguments(p)
    return parser


def _requested(argv: list[str]) -> set[str]:
    return {a for a in argv[1:] if a in COMMANDS}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.argv = [sys.argv[0], *argv]
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (UserError, ValueError, TypeError, OSError) as e:
        if os.environ.get("EFFNET_DEBUG"):  # EFFNET_DEBUG=1 shows the traceback
            raise
        print(f"effnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C: one line (train says where its last checkpoint is), exit 130
        if os.environ.get("EFFNET_DEBUG"):
            raise
        print(f"effnet {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
