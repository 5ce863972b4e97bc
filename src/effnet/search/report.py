"""Search outputs: the CSV of every candidate and the two plots (accuracy vs MACs, vs measured latency)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from effnet.analysis.figures import pyplot, write_png
from effnet.io import write_atomic

COLUMNS = ("id", "roles", "alpha", "beta", "gamma", "phi", "width", "depth", "resolution", "params", "macs",
           "latency_ms", "val_acc", "reward", "train_s", "device", "latency_device")


def pareto_front(rows: list[dict], x: str = "latency_ms", y: str = "val_acc") -> list[dict]:
    """Rows no other row beats on both: lower ``x`` and higher ``y``; sorted by ``x``."""
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r[x], -r[y])):
        if r[y] > best:
            front.append(r)
            best = r[y]
    return front


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "roles": " ".join(r.get("roles", []))})
    write_atomic(path, buf.getvalue().encode())


def _label(r: dict) -> str:
    roles = r.get("roles", [])
    return roles[0] if roles else r["id"]


def plot(path: Path, rows: list[dict], x: str, xlabel: str, title: str, front: bool = False) -> None:
    """Validation accuracy against ``x`` (log scale), one series per group; the Pareto front dashed."""
    fig, ax = pyplot().subplots(figsize=(7.5, 5))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("group", "candidate"), []).append(r)
    for g, rs in groups.items():
        rs = sorted(rs, key=lambda r: r[x])
        style = "-o" if g not in ("grid", "candidate") else "o"
        ax.plot([r[x] for r in rs], [100 * r["val_acc"] for r in rs], style, label=g, alpha=0.8, ms=5)
    if front:
        f = pareto_front(rows, x)
        ax.step([r[x] for r in f], [100 * r["val_acc"] for r in f], "k--", where="post", lw=1, label="Pareto front")
        for r in f:
            ax.annotate(_label(r), (r[x], 100 * r["val_acc"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_png(fig, path, dpi=110)
