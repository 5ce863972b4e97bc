"""The roofline chart: each layer at (arithmetic intensity, achieved FLOP/s) under the two measured ceilings."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from effnet.analysis.ceilings import write_atomic
from effnet.analysis.table import Column, human, render

if TYPE_CHECKING:
    from effnet.analysis.measure import Measurement

# One colour per layer kind of the analytic profile, so charts of different models read alike.
KIND_COLOURS = {
    "conv": "tab:blue", "depthwise": "tab:red", "pointwise": "tab:green", "fused-conv": "tab:purple",
    "se": "tab:orange", "linear": "tab:brown", "norm-act": "tab:gray", "add": "tab:pink", "pool": "tab:olive",
}


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e6:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def roofline_columns(m: Measurement) -> list[Column]:
    """Per-layer columns keyed by record name, to append to the profile's per-layer table."""
    by_name = {t.record.name: t for t in m.layers}
    return [
        Column("predicted_s", lambda r: by_name[r.name].predicted_s, "roof us", _us),
        Column("bound", lambda r: by_name[r.name].bound, "bound", align="<"),
        Column("measured_s", lambda r: by_name[r.name].measured_s, "meas us", _us),
        Column("achieved_flops", lambda r: by_name[r.name].achieved_flops, "FLOP/s", human),
        Column("fraction", lambda r: by_name[r.name].fraction, "of roof", _pct),
    ]


def render_kinds(m: Measurement, fmt: str = "table") -> str:
    """Per-kind roll-up of a measurement: where the time goes and how close each kind gets to its roof."""
    cols = [
        Column("kind", lambda r: r[0], align="<"),
        Column("layers", lambda r: r[1]["layers"]),
        Column("memory_bound", lambda r: r[1]["memory_bound"], "mem-bound"),
        Column("flops", lambda r: r[1]["flops"], "FLOPs", human),
        Column("bytes", lambda r: r[1]["bytes"], "bytes", lambda v: human(v, "B")),
        Column("predicted_s", lambda r: r[1]["predicted_s"], "roof us", _us),
        Column("measured_s", lambda r: r[1]["measured_s"] if not m.compiled else None, "meas us", _us),
        Column("share", lambda r: r[1]["share"], "time %", _pct),
        Column("achieved_flops", lambda r: r[1]["achieved_flops"], "FLOP/s", human),
        Column("fraction", lambda r: r[1]["fraction"], "of roof", _pct),
    ]
    return render(list(m.by_kind().items()), cols, fmt)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file in the same folder, then rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    return write_atomic(path, buf.getvalue())


def plot_roofline(m: Measurement, path: str | Path) -> Path:
    """Draw the layers of ``m`` on a log-log roofline and save it as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    c = m.ceilings
    measured = [t for t in m.layers if t.measured_s and t.record.flops > 0 and t.record.bytes > 0]
    # Layers without FLOPs (adds, pools) have intensity 0, which a log axis cannot show.
    no_flops = sum(1 for t in m.layers if t.record.flops == 0)
    pts = measured or [t for t in m.layers if t.record.flops > 0 and t.record.bytes > 0]
    xs = [t.record.intensity for t in pts]
    lo = min(xs + [c.ridge_intensity]) / 4 if xs else c.ridge_intensity / 100
    hi = max(xs + [c.ridge_intensity]) * 4 if xs else c.ridge_intensity * 100

    fig, ax = plt.subplots(figsize=(8, 5.5))
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(c.peak_flops, c.bandwidth * x) for x in grid], color="black", lw=1.5)
    ax.axhline(c.peak_flops, color="black", ls=":", lw=0.8)
    ax.text(hi, c.peak_flops * 1.08, f"matmul {c.peak_flops / 1e12:.3g} TFLOP/s", ha="right", fontsize=8)
    ax.text(lo * 1.2, c.bandwidth * lo * 1.3, f"copy {c.bandwidth / 1e9:.4g} GB/s", rotation=0, fontsize=8)
    ax.axvline(c.ridge_intensity, color="black", ls=":", lw=0.8)

    for kind in sorted({t.record.kind for t in pts}):
        sel = [t for t in pts if t.record.kind == kind]
        ys = [t.achieved_flops if measured else min(c.peak_flops, c.bandwidth * t.record.intensity) for t in sel]
        ax.scatter([t.record.intensity for t in sel], ys, s=18, label=f"{kind} ({len(sel)})",
                   color=KIND_COLOURS.get(kind, "tab:cyan"), alpha=0.8,
                   facecolors=None if measured else "none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("achieved FLOP/s" if measured else "roofline bound FLOP/s (no per-layer times)")
    mode = ", channels_last" if m.channels_last else ""
    mode += ", compiled: predictions only" if not measured else ""
    ax.set_title(f"{m.model}: {m.dtype}, batch {m.batch_size}{mode}\n{c.device_name}", fontsize=10)
    if no_flops:
        ax.plot([], [], " ", label=f"{no_flops} FLOP-free layers not drawn")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
