"""Searched network vs the compound-scaled base at (about) equal proxy accuracy: measured latency.

    python scripts/compare_searched.py runs/search-blocks-cpu runs/search-compound-cpu --device cpu

Takes the best spec of an `effnet search blocks` run and, from an `effnet search compound` run, the
candidate closest to it in validation accuracy; times both (and the base) with effnet's timer,
alternating, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from effnet.analysis.timing import time_fn
from effnet.config import ModelConfig
from effnet.model import EfficientConvNet


def config_of(run: Path, cid: str) -> ModelConfig:
    return ModelConfig.from_dict(json.loads((run / "runs" / cid / "config.json").read_text())["model"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("blocks")
    p.add_argument("compound")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    blocks, compound = Path(a.blocks), Path(a.compound)
    best = json.loads((blocks / "summary.json").read_text())["best"]
    cands = [json.loads(f.read_text()) for f in sorted((compound / "candidates").glob("*.json"))]
    match = min(cands, key=lambda c: abs(c["val_acc"] - best["val_acc"]))
    base = json.loads((compound / "summary.json").read_text())["base"]
    nets = {"searched (blocks best)": (config_of(blocks, best["id"]), best),
            f"compound search, closest accuracy ({match['id']})": (config_of(compound, match["id"]), match),
            f"base ({base['id']})": (config_of(compound, base["id"]), base)}
    times: dict[str, list[float]] = {k: [] for k in nets}
    models = {k: EfficientConvNet(c).to(a.device).eval() for k, (c, _) in nets.items()}
    with torch.inference_mode():
        for _ in range(a.rounds):  # alternate, so a burst of load hits every network alike
            for k, m in models.items():
                r = nets[k][0].resolution
                x = torch.randn(a.batch, 3, r, r, device=a.device)
                times[k].append(time_fn(lambda m=m, x=x: m(x), warmup=5, runs=a.runs, device=a.device).min)
    ref = min(times[f"base ({base['id']})"])
    print(f"| network | resolution | params | MACs | val acc | latency (ms, fastest, batch {a.batch}, {a.device}) "
          f"| vs base |")
    print("|---|---|---|---|---|---|---|")
    for k, (c, res) in nets.items():
        t = min(times[k])
        print(f"| {k} | {c.resolution} | {res['params'] / 1e3:.0f} k | {res['macs'] / 1e6:.2f} M | "
              f"{100 * res['val_acc']:.2f}% | {t * 1e3:.3f} | {t / ref:.2f}x |")


if __name__ == "__main__":
    main()
