"""``effnet zoo``: every zoo model's params, MACs and activation memory next to the papers' figures.

Each model is built on the ``meta`` device and profiled analytically, so the whole zoo (L2 at
800 px included) takes seconds.  Deviations from the published figures are shown, never hidden:
a published figure the source rounds is marked ``≈``; a deviation beyond the tolerance is marked
``!`` and explained in :data:`KNOWN_DEVIATIONS`.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from dataclasses import dataclass

import torch
from torch import nn

from effnet.analysis.models import DTYPES
from effnet.analysis.profile import Profile, profile
from effnet.analysis.table import FORMATS, Column, human, percent, render
from effnet.io import write_atomic
from effnet.reference import PAPER_FIGURES, PaperFigures
from effnet.zoo import MODELS, create_model, list_models

REGENERATE = "effnet zoo --format markdown --output docs/zoo.md"

# Largest MAC deviation from the published figure (percent) before a row is flagged.
MACS_TOLERANCE = {"mobilenet_v1_100": 1.0, "mobilenet_v2_100": 1.0, "efficientnet_b0": 2.0}
DEFAULT_MACS_TOLERANCE = 5.0
PARAMS_TOLERANCE = 5.0

# Published figures that our count misses by more than the tolerance, and why the figure (not the
# architecture) is taken to be off.  The tests assert each still deviates, so the list cannot rot.
KNOWN_DEVIATIONS: dict[str, str] = {
    "efficientnet_lite0": (
        "the README's 407M is 5.7% above the conv+FC count of the architecture it describes "
        "(B0 without SE: 385.2M, which timm's efficientnet_lite0 counts too); Lite1-4 are 3-5% below theirs"
    ),
}



def macs_tolerance(name: str) -> float:
    """Percent deviation from the published MACs that ``name`` is held to."""
    return MACS_TOLERANCE.get(name, DEFAULT_MACS_TOLERANCE)


def deviation(ours: float, published: float | None) -> float | None:
    """Our figure against the published one, in percent (None when nothing is published)."""
    return None if published is None else 100.0 * (ours / published - 1.0)


@dataclass(frozen=True)
class ZooRow:
    """One zoo model: our analytic counts and the published figures."""

    name: str
    resolution: int
    params: int
    macs: int
    activations: int  # output elements of every layer, batch 1
    activation_bytes: int  # at the profiled dtype
    published: PaperFigures | None

    @property
    def params_dev(self) -> float | None:
        return deviation(self.params, self.published and self.published.params)

    @property
    def macs_dev(self) -> float | None:
        return deviation(self.macs, self.published and self.published.macs)

    def flag(self, which: str) -> str:
        """'≈' for a figure the source rounds, '!' beyond the tolerance, both when both hold."""
        dev = self.macs_dev if which == "macs" else self.params_dev
        if dev is None:
            return ""
        limit = macs_tolerance(self.name) if which == "macs" else PARAMS_TOLERANCE
        return ("≈" if self.published.rounded else "") + ("!" if abs(dev) > limit else "")

    def note(self) -> str:
        parts = [self.published.note] if self.published and self.published.note else []
        if self.name in KNOWN_DEVIATIONS:
            parts.append(KNOWN_DEVIATIONS[self.name])
        return "; ".join(parts)


# (name, dtype) -> row: recipes are fixed, so one count serves the whole process.
_ROWS: dict[tuple[str, torch.dtype], ZooRow] = {}


def zoo_profile(name: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Profile]:
    """Zoo model ``name`` built on the meta device, and its profile at its default resolution."""
    with torch.device("meta"):  # no weights are allocated, whatever the model's size
        model = create_model(name)
    prof = profile(model, MODELS[name].resolution, dtype)
    t = prof.totals()
    _ROWS[name, dtype] = ZooRow(name, MODELS[name].resolution, t["params"], t["macs"], t["activations"],
                                t["activations"] * dtype.itemsize,
                                PAPER_FIGURES.get(name))
    return model, prof


def zoo_row(name: str, dtype: torch.dtype = torch.float32) -> ZooRow:
    """Analytic counts of zoo model ``name`` at its default resolution."""
    if (name, dtype) not in _ROWS:
        zoo_profile(name, dtype)
    return _ROWS[name, dtype]


def zoo_rows(pattern: str = "*", dtype: torch.dtype = torch.float32) -> list[ZooRow]:
    """One row per zoo model matching ``pattern``, in the zoo's order."""
    names = set(list_models(pattern))
    if not names:
        raise ValueError(f"no zoo model matches {pattern!r} (effnet models lists them)")
    return [zoo_row(n, dtype) for n in MODELS if n in names]


def _pub(attr: str):
    return lambda r: getattr(r.published, attr) if r.published else None


def _marked(row: ZooRow, which: str) -> str:
    dev = row.macs_dev if which == "macs" else row.params_dev
    return f"{percent(dev)} {row.flag(which)}".rstrip()


def zoo_columns() -> list[Column]:
    return [
        Column("model", lambda r: r.name, align="<"),
        Column("resolution", lambda r: r.resolution, "res"),
        Column("params", lambda r: r.params, fmt=human),
        Column("published_params", _pub("params"), "paper params", human),
        Column("params_dev_pct", lambda r: r.params_dev, "Δ params", text=lambda r: _marked(r, "params")),
        Column("params_flag", lambda r: r.flag("params"), machine_only=True),
        Column("macs", lambda r: r.macs, "MACs", human),
        Column("published_macs", _pub("macs"), "paper MACs", human),
        Column("macs_dev_pct", lambda r: r.macs_dev, "Δ MACs", text=lambda r: _marked(r, "macs")),
        Column("macs_flag", lambda r: r.flag("macs"), machine_only=True),
        Column("activations", lambda r: r.activations, "acts", human),
        Column("activation_bytes", lambda r: r.activation_bytes, "act mem", lambda v: human(v, "B")),
        Column("published_top1", _pub("top1"), "paper top-1", lambda v: "-" if v is None else f"{v:.1f}"),
        Column("note", lambda r: r.note(), align="<"),
    ]


def flags_legend() -> str:
    """What the ``≈`` and ``!`` after a deviation mean (the Markdown page and the terminal table share it)."""
    return (f"`≈` the source rounds the figure or sources disagree; `!` the MACs deviate by more than the "
            f"tolerance ({DEFAULT_MACS_TOLERANCE:g}%; 1% for mobilenet_v1_100 and mobilenet_v2_100, 2% for "
            f"efficientnet_b0) or the params by more than {PARAMS_TOLERANCE:g}%, explained in the note.")


TERMINAL_WIDTH = 120  # the plain table fits this; the note column (up to ~200 characters) needs --wide


def render_zoo(rows: list[ZooRow], fmt: str = "table", dtype: torch.dtype = torch.float32,
               wide: bool = False) -> str:
    """The zoo table; Markdown comes with the heading, legend and sources that docs/zoo.md shows.

    The plain table leaves the note column out unless ``wide`` and ends with the flags' legend, so
    it fits :data:`TERMINAL_WIDTH` columns.
    """
    columns = zoo_columns()
    if fmt == "table" and not wide:
        columns = [c for c in columns if c.key != "note"]
        legend = textwrap.wrap("Flags: " + flags_legend().replace("`", "").replace(
            "explained in the note.", "explained in the note (--wide shows it)."), TERMINAL_WIDTH)
        return "\n".join([render(rows, columns, fmt), "", *legend])
    if fmt == "json":
        data = json.loads(render(rows, columns, "json"))
        for d, r in zip(data, rows):
            d["source"] = r.published.source if r.published else None
            d["published_rounded"] = bool(r.published and r.published.rounded)
            d["macs_tolerance_pct"] = macs_tolerance(r.name)
        return json.dumps(data, indent=2)
    table = render(rows, columns, fmt)
    if fmt != "markdown":
        return table
    sources = sorted({r.published.source for r in rows if r.published})
    return "\n".join([
        "# The zoo against the papers",
        "",
        f"Generated by `{REGENERATE}`; do not edit by hand.",
        "",
        "Our counts are analytic (`effnet.analysis.profile` on the meta device) at each model's default",
        "resolution, batch 1. MACs are multiply-accumulates of convolutions and the classifier (the",
        "papers' \"mult-adds\"; EfficientNet's \"FLOPs\"), equal to half of PyTorch's `FlopCounterMode`",
        f"FLOPs. Activations are the output elements of every layer, and their memory at {_dtype_name(dtype)}.",
        "",
        "Flags: " + flags_legend(),
        "",
        table,
        "",
        "Sources:",
        "",
        *[f"- {s}" for s in sources],
    ])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'efficientnet_b*'")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="dtype for activation memory (default: float32)")
    parser.add_argument("--output", metavar="PATH", help="write to PATH (atomically) instead of stdout")
    parser.add_argument("--wide", action="store_true",
                        help=f"add the note column to the table (default: fit {TERMINAL_WIDTH} columns)")


def run(args: argparse.Namespace) -> int:
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise ValueError(f"cannot write {args.output}: its folder does not exist")
    dtype = DTYPES[args.dtype]
    text = render_zoo(zoo_rows(args.pattern, dtype), args.format, dtype, wide=args.wide)
    if args.output:
        write_atomic(args.output, (text if text.endswith("\n") else text + "\n").encode())
    else:
        print(text)
    return 0
