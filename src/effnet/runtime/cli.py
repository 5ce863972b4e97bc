"""``effnet runtime``: OpenCL devices, a graph's per-node summary, and export of a model as a graph file.

    effnet runtime devices
    effnet runtime summary efficientnet_b0 --input-size 224
    effnet runtime summary net.safetensors
    effnet runtime export mobilenet_v2_100 --weights torchvision -o mnv2.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.errors import CheckpointError
from effnet.runtime import opencl
from effnet.runtime.files import read_kind
from effnet.runtime.graph import Graph, load
from effnet.runtime.lower import from_model


class RuntimeCliError(ValueError):
    """A bad request to ``effnet runtime``; printed as one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("devices", help="list the OpenCL platforms and devices (index, platform, device, type)")
    s = sub.add_parser("summary", help="per-node table of a zoo model or a graph/model file")
    s.add_argument("model", metavar="MODEL|FILE", help="zoo name, graph file, or effnet model checkpoint")
    _graph_options(s)
    e = sub.add_parser("export", help="lower a model to a graph file that runs without PyTorch")
    e.add_argument("model", metavar="MODEL", help="zoo name (effnet models lists them)")
    e.add_argument("--weights", help="checkpoint file or published weights name (default: random init)")
    e.add_argument("-o", "--output", required=True, help="graph file to write (.safetensors)")
    _graph_options(e)


def _graph_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=int, default=None, help="square input side (default: model's resolution)")
    p.add_argument("--no-optimize", action="store_true", help="keep one node per module (no BN folding, fusion)")


def _graph(args: argparse.Namespace, weights: str | None = None) -> Graph:
    path = Path(args.model)
    if path.suffix == ".safetensors" or path.is_file():
        if not path.is_file():
            raise RuntimeCliError(f"no such file: {path}")
        if read_kind(path) == "graph":
            if args.input_size or args.no_optimize:
                raise RuntimeCliError("--input-size and --no-optimize apply to models, not to a graph file")
            return load(path)
        import effnet  # a model checkpoint: rebuilding it needs torch, imported only on this path

        model = effnet.load(path)
    else:
        import effnet

        model = effnet.create_model(args.model, weights=weights)
    return from_model(model.eval(), optimize=not args.no_optimize, input_size=args.input_size)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "devices":
            found = opencl.devices()
            if not found:
                raise RuntimeCliError(f"no OpenCL platform found: {opencl.INSTALL_HINT}")
            for i, (platform, device, kind) in enumerate(found):
                print(f"{i}: {device} [{kind}] on {platform}")
        elif args.action == "summary":
            _graph(args).summary()
        else:
            g = _graph(args, args.weights)
            g.save(args.output)
            t = g.totals()
            print(f"wrote {args.output}: {t['nodes']} nodes, {t['params']:,} params, input {g.input_shape}")
    except (opencl.OpenCLUnavailable, CheckpointError) as e:
        raise RuntimeCliError(str(e)) from None
    return 0
