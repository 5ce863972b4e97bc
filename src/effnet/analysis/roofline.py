"""The roofline chart: each layer at (arithmetic intensity, achieved FLOP/s) under the two measured ceilings."""

from __future__ import annotations

from pathlib import Path

from effnet.analysis.figures import pyplot, write_png
from effnet.analysis.measure import Measurement
from effnet.analysis.table import human

# One colour per layer kind of the analytic profile, so charts of different models read alike.
KIND_COLOURS = {
    "conv": "tab:blue", "depthwise": "tab:red", "pointwise": "tab:green", "fused-conv": "tab:purple",
    "se": "tab:orange", "linear": "tab:brown", "norm-act": "tab:gray", "add": "tab:pink", "pool": "tab:olive",
}


def plot_roofline(m: Measurement, path: str | Path) -> Path:
    """Draw the layers of ``m`` on a log-log roofline and save it as a PNG at ``path``."""
    plt = pyplot()
    c = m.ceilings
    measured = [t for t in m.layers if t.measured_s and t.record.flops > 0 and t.record.bytes > 0]
    # Layers without FLOPs (norm, activation, add, pool) have intensity 0, which a log axis cannot
    # show; when measured they get a panel of their own: achieved bandwidth against the copy roof.
    no_flops = [t for t in m.layers if t.record.flops == 0 and t.record.bytes > 0 and t.measured_s]
    pts = measured or [t for t in m.layers if t.record.flops > 0 and t.record.bytes > 0]
    xs = [t.record.intensity for t in pts]
    lo = min(xs + [c.ridge_intensity]) / 4 if xs else c.ridge_intensity / 100
    hi = max(xs + [c.ridge_intensity]) * 4 if xs else c.ridge_intensity * 100

    if no_flops:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]})
        _plot_flop_free(ax2, no_flops, c)
    else:
        fig, ax = plt.subplots(figsize=(8, 5.5))
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(c.peak_flops, c.bandwidth * x) for x in grid], color="black", lw=1.5)
    ax.axhline(c.peak_flops, color="black", ls=":", lw=0.8)
    ax.text(hi, c.peak_flops * 1.08, f"matmul {human(c.peak_flops, 'FLOP/s')}", ha="right", fontsize=8)
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
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    return write_png(fig, path)


def _plot_flop_free(ax, layers: list, c) -> None:
    """Norm, activation, add and pool layers: bytes moved against achieved bandwidth, under the copy roof."""
    for kind in sorted({t.record.kind for t in layers}):
        sel = [t for t in layers if t.record.kind == kind]
        ax.scatter([t.record.bytes for t in sel], [t.achieved_bandwidth for t in sel], s=14, alpha=0.7,
                   color=KIND_COLOURS.get(kind, "tab:cyan"), label=f"{kind} ({len(sel)})")
    ax.axhline(c.bandwidth, color="black", lw=1.5)
    ax.text(min(t.record.bytes for t in layers), c.bandwidth * 1.1, f"copy {c.bandwidth / 1e9:.4g} GB/s",
            fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes moved by the layer")
    ax.set_ylabel("achieved bytes/s")
    ax.set_title("layers without FLOPs (memory-bound by definition)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
