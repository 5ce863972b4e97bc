"""Render rows as a terminal table, CSV, JSON or Markdown; columns are plain data, so callers add their own.

A :class:`Column` pairs a machine key (CSV header, JSON key) with a display header and a function
from row to value.  Terminal and Markdown show the formatted value; CSV and JSON keep it raw, so a
script reading them gets exact integers.  ``render_layers`` is the per-layer table of
:mod:`effnet.analysis.profile`; measured timings join it through ``extra_columns`` keyed by layer name.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from effnet.analysis.records import LayerRecord

FORMATS = ("table", "csv", "json", "markdown")


def human(n: float, unit: str = "") -> str:
    """A count with an SI suffix and three significant figures: 1234567 -> '1.23M'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}" if isinstance(n, float) else f"{n}{unit}"


def shape(s: Sequence[int]) -> str:
    return "x".join(map(str, s)) if s else "-"


def percent(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}%"


@dataclass(frozen=True)
class Column:
    """One column: ``key`` for CSV/JSON, ``header`` for people, ``value(row)`` raw, ``fmt(value)`` shown.

    ``text(row)``, when given, replaces ``fmt`` for people (a value shown with a mark beside it).
    """

    key: str
    value: Callable[[Any], Any]
    header: str | None = None
    fmt: Callable[[Any], str] | None = None
    align: str = ">"  # ">" right (numbers), "<" left (names)
    text: Callable[[Any], str] | None = None
    machine_only: bool = False  # in CSV and JSON only (e.g. a flag that people see inside another cell)

    def shown(self, row: Any) -> str:
        if self.text is not None:
            return self.text(row)
        v = self.value(row)
        if self.fmt is not None:
            return self.fmt(v)
        return "-" if v is None else str(v)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def render(rows: Sequence[Any], columns: Sequence[Column], fmt: str = "table") -> str:
    """``rows`` under ``columns`` in one of :data:`FORMATS` (no trailing newline)."""
    _check_format(fmt)
    if fmt == "json":
        return json.dumps([{c.key: _jsonable(c.value(r)) for c in columns} for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([c.key for c in columns])
        w.writerows([[_csv_value(c.value(r)) for c in columns] for r in rows])
        return buf.getvalue().rstrip("\n")
    columns = [c for c in columns if not c.machine_only]
    headers = [c.header or c.key for c in columns]
    cells = [[c.shown(r) for c in columns] for r in rows]
    if fmt == "markdown":
        esc = [[h.replace("|", "\\|") for h in headers]] + [[v.replace("|", "\\|") for v in row] for row in cells]
        rule = ["---:" if c.align == ">" else ":---" for c in columns]
        return "\n".join("| " + " | ".join(line) + " |" for line in [esc[0], rule, *esc[1:]])
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(f"{h:{c.align}{w}}" for h, c, w in zip(headers, columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{v:{c.align}{w}}" for v, c, w in zip(row, columns, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return v


def layer_columns() -> list[Column]:
    """The per-layer table's columns, in order."""
    return [
        Column("name", lambda r: r.name, align="<"),
        Column("kind", lambda r: r.kind, align="<"),
        Column("input_shape", lambda r: r.input_shape, "input", shape),
        Column("output_shape", lambda r: r.output_shape, "output", shape),
        Column("params", lambda r: r.params, fmt=human),
        Column("macs", lambda r: r.macs, "MACs", human),
        Column("activations", lambda r: r.activations, "acts", human),
        Column("bytes_read", lambda r: r.bytes_read, "read", lambda v: human(v, "B")),
        Column("bytes_written", lambda r: r.bytes_written, "written", lambda v: human(v, "B")),
        Column("intensity", lambda r: r.intensity, "FLOP/B", lambda v: f"{v:.2f}"),
    ]


def render_layers(records: Sequence[LayerRecord], fmt: str = "table", extra_columns: Sequence[Column] = ()) -> str:
    """The per-layer table; ``extra_columns`` (e.g. measured times looked up by ``record.name``) go last."""
    return render(records, [*layer_columns(), *extra_columns], fmt)


def rollup_columns(group_header: str) -> list[Column]:
    """Columns for a roll-up: rows are ``(group name, summary dict)`` pairs from ``Profile.by_*``."""
    return [
        Column(group_header, lambda r: r[0], align="<"),
        Column("layers", lambda r: r[1]["layers"]),
        Column("params", lambda r: r[1]["params"], fmt=human),
        Column("macs", lambda r: r[1]["macs"], "MACs", human),
        Column("macs_share", lambda r: r[1].get("macs_share"), "MACs %", lambda v: f"{100 * v:.1f}"),
        Column("activations", lambda r: r[1]["activations"], "acts", human),
        Column("bytes", lambda r: r[1]["bytes"], "bytes", lambda v: human(v, "B")),
        Column("bytes_share", lambda r: r[1].get("bytes_share"), "bytes %", lambda v: f"{100 * v:.1f}"),
        Column("intensity", lambda r: r[1]["intensity"], "FLOP/B", lambda v: f"{v:.2f}"),
    ]


def render_rollup(groups: Mapping[str, dict], group_header: str, fmt: str = "table",
                  totals: dict | None = None) -> str:
    """A roll-up (``Profile.by_kind()`` etc.) with each group's share of the total MACs and bytes."""
    total_macs = sum(g["macs"] for g in groups.values()) if totals is None else totals["macs"]
    total_bytes = sum(g["bytes"] for g in groups.values()) if totals is None else totals["bytes"]
    rows = [(k, {**g, "macs_share": g["macs"] / total_macs if total_macs else 0.0,
                 "bytes_share": g["bytes"] / total_bytes if total_bytes else 0.0}) for k, g in groups.items()]
    return render(rows, rollup_columns(group_header), fmt)
