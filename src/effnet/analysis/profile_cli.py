"""``effnet profile``: the per-layer table of one model with per-stage and per-kind roll-ups.

``effnet profile efficientnet_b0`` profiles a zoo model at its default resolution;
``effnet profile torchvision:resnet50`` (or ``timm:NAME``) any model those libraries build
(:func:`effnet.analysis.models.build_model`).
``effnet profile --conv-cost 3 32 64 112 112`` prints the notes' standard vs depthwise-separable
cost for one set of dimensions.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from effnet.analysis.formulas import conv_cost_report
from effnet.analysis.measure import PER_LAYER_METHODS, measure
from effnet.analysis.models import DTYPES, build_model
from effnet.analysis.profile import Profile, profile
from effnet.analysis.roofline import plot_roofline
from effnet.analysis.table import FORMATS, Column, human, render, render_layers, render_rollup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="zoo name (effnet models), torchvision:NAME or timm:NAME")
    parser.add_argument("--resolution", type=int, help="input height and width (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="dtype the bytes are counted at (default: float32)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table); csv holds the layer rows only, json everything")
    parser.add_argument("--no-layers", action="store_true", help="only the roll-ups and totals")
    parser.add_argument("--by-block", action="store_true", help="add the per-block roll-up")
    parser.add_argument("--conv-cost", nargs=5, type=int, metavar=("K", "C_IN", "C_OUT", "H", "W"),
                        help="print standard vs depthwise-separable conv cost for these dimensions and exit")
    parser.add_argument("--measure", action="store_true", help="time every layer and add roofline columns")
    parser.add_argument("--device", default="cpu", help="device to measure on, cpu or cuda (default: cpu)")
    parser.add_argument("--channels-last", action="store_true", help="measure in channels_last layout")
    parser.add_argument("--compile", action="store_true", help="measure the torch.compile'd model")
    parser.add_argument("--per-layer", choices=PER_LAYER_METHODS,
                        help="how layers are timed: torch.profiler records or forward hooks "
                        "(default: profiler on a GPU, hooks on a CPU)")
    parser.add_argument("--roofline", metavar="PNG", help="with --measure: write the roofline chart here")


def run(args: argparse.Namespace) -> int:
    if args.conv_cost:
        print(_render_conv_cost(conv_cost_report(*args.conv_cost), args.format))
        return 0
    if not args.model:
        raise ValueError("give a MODEL to profile (effnet models lists them), or --conv-cost K C_IN C_OUT H W")
    if args.resolution is not None and args.resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {args.resolution}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    measuring = args.measure
    if args.roofline and not measuring:
        raise ValueError("--roofline needs --measure (the chart plots measured layers)")
    # Counting needs shapes only (meta); measuring needs real weights on the CPU first.
    named = build_model(args.model, "cpu" if measuring else "meta")
    model, resolution, dtype = named.model, args.resolution or named.resolution, DTYPES[args.dtype]
    prof = profile(model, resolution, dtype, batch_size=args.batch_size)
    extra, preamble, measured = _measure_hook(args, model, resolution, dtype, prof) if measuring else ([], [], None)
    print(render_profile(prof, args.format, name=args.model, layers=not args.no_layers,
                         by_block=args.by_block, extra_columns=extra, preamble=preamble, measurement=measured))
    return 0


def _measure_hook(args: argparse.Namespace, model: nn.Module, resolution: int, dtype: torch.dtype,
                  prof: Profile) -> tuple[list[Column], list[str], dict]:
    """``--measure``: time each layer (effnet.analysis.measure) and join the times to the rows by record name."""
    m = measure(model, resolution, args.device, dtype, args.batch_size, args.channels_last, args.compile,
                analytic=prof, name=args.model, per_layer=args.per_layer)
    if args.roofline:
        plot_roofline(m, args.roofline)
    timed = {t.record.name: t for t in m.layers}
    ms = lambda v: "-" if v is None else f"{v:.3f}"
    columns = [
        Column("predicted_ms", lambda r: 1e3 * timed[r.name].predicted_s, "roof ms", ms),
        Column("bound", lambda r: timed[r.name].bound, align="<"),
        Column("measured_ms", lambda r: None if timed[r.name].measured_s is None else 1e3 * timed[r.name].measured_s,
               "ms", ms),
        Column("fraction", lambda r: timed[r.name].fraction, "of roof", lambda v: "-" if v is None else f"{v:.0%}"),
    ]
    if m.per_layer == "profiler":  # the kernels' own time beside the layer's share of the timeline
        columns.insert(3, Column("busy_ms", lambda r: None if timed[r.name].busy_s is None
                                 else 1e3 * timed[r.name].busy_s, "busy ms", ms))
    summary = {k: v for k, v in m.to_dict().items() if k != "layers"}  # the layers are the table's rows
    return columns, m.summary() + ([f"roofline chart: {args.roofline}"] if args.roofline else []), summary


def render_profile(prof: Profile, fmt: str = "table", *, name: str = "", layers: bool = True,
                   by_block: bool = False, extra_columns: list[Column] | tuple = (),
                   preamble: list[str] | tuple = (), measurement: dict | None = None) -> str:
    """Per-layer table, roll-ups by stage (and block) and kind, and totals, in one of the formats."""
    totals = prof.totals()
    head = (f"{name or 'model'}: input {'x'.join(map(str, prof.input_size))}, "
            f"{str(prof.dtype).removeprefix('torch.')}; {totals['layers']} layers, {human(totals['params'])} params, "
            f"{human(totals['macs'])} MACs, {human(totals['bytes'], 'B')} moved, {totals['intensity']:.2f} FLOP/B")
    if fmt == "json":
        return json.dumps({
            "model": name, "input_size": list(prof.input_size), "dtype": str(prof.dtype).removeprefix("torch."),
            "totals": totals, "by_stage": prof.by_stage(), "by_block": prof.by_block(), "by_kind": prof.by_kind(),
            "layers": json.loads(render_layers(prof.layers, "json", extra_columns)), "notes": list(preamble),
            **({"measurement": measurement} if measurement else {}),
        }, indent=2)
    if fmt == "csv":  # one table only: the layers (roll-ups are sums a spreadsheet makes)
        return render_layers(prof.layers, "csv", extra_columns)
    title = (lambda t: f"\n## {t}\n") if fmt == "markdown" else (lambda t: f"\n{t}")
    parts = [("# " if fmt == "markdown" else "") + head, *preamble]
    if layers:
        parts += [title("layers"), render_layers(prof.layers, fmt, extra_columns)]
    parts += [title("by stage"), render_rollup(prof.by_stage(), "stage", fmt, totals)]
    if by_block:
        parts += [title("by block"), render_rollup(prof.by_block(), "block", fmt, totals)]
    parts += [title("by kind"), render_rollup(prof.by_kind(), "kind", fmt, totals)]
    return "\n".join(parts)


def _render_conv_cost(c: dict, fmt: str) -> str:
    rows = [
        ("standard KxK conv", "K*K*C_in*C_out*H*W", c["standard_macs"], c["standard_params"]),
        ("depthwise KxK", "K*K*C_in*H*W", c["depthwise_macs"], None),
        ("pointwise 1x1", "C_in*C_out*H*W", c["pointwise_macs"], None),
        ("depthwise-separable", "K*K*C_in*H*W + C_in*C_out*H*W", c["separable_macs"], c["separable_params"]),
    ]
    columns = [Column("layer", lambda r: r[0], align="<"), Column("formula", lambda r: r[1], align="<"),
               Column("macs", lambda r: r[2], "MACs", lambda v: f"{v:,}"),
               Column("params", lambda r: r[3], "weights", lambda v: "-" if v is None else f"{v:,}")]
    table = render(rows, columns, fmt)
    if fmt in ("json", "csv"):
        return json.dumps(c, indent=2) if fmt == "json" else table
    dims = f"K={c['k']}, C_in={c['c_in']}, C_out={c['c_out']}, H={c['h']}, W={c['w']} (output size)"
    return "\n".join([dims, "", table, "",
                      (f"separable / standard = {c['ratio']:.6f}; formula 1/C_out + 1/K^2 = {c['ratio_formula']:.6f}"
                      f" ({c['speedup']:.2f}x fewer MACs)")])
