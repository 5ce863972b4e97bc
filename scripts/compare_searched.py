"""Searched network vs the compound-scaled base and EfficientNet-B0 at (about) equal proxy accuracy: measured latency.

    python scripts/compare_searched.py runs/search-blocks-cpu runs/search-compound-cpu --device cpu
    python scripts/compare_searched.py runs/blocks runs/compound --device cuda --b0 --batches 1 32 \\
        --modes inference train-step --json runs/compare.json

Takes the best spec of an `effnet search blocks` run and, from an `effnet search compound` run, the
candidate closest to it in validation accuracy and the base.  With ``--b0`` it also trains effnet's
EfficientNet-B0 (width 1, depth 1) at the proxy resolution with the compound run's recipe, as one more
candidate of that run (resumable like the others), so B0's proxy accuracy stands beside its latency.
Every network is timed with effnet's timer in alternating rounds (the fastest of each kept), per
batch and per mode (``inference``: forward in eval mode; ``train-step``: forward + backward in train
mode, as the latency table's timer), and printed as markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from effnet.config import ModelConfig
from effnet.io import write_atomic
from effnet.model import EfficientConvNet
from effnet.search.candidate import SearchRecipe, device_name, job, run_candidate
from effnet.search.latency import torch_timer


def config_of(run: Path, cid: str) -> ModelConfig:
    return ModelConfig.from_dict(json.loads((run / "runs" / cid / "config.json").read_text())["model"])


def networks(blocks: Path, compound: Path | None, b0: bool, device: str) -> dict[str, tuple[ModelConfig, dict]]:
    """name -> (config, candidate result) of the networks compared, the base last.

    Without a compound run, the block search's own base and recipe stand in (B0 is trained into it).
    """
    found = json.loads((blocks / "summary.json").read_text())
    best = found["best"]
    nets = {"searched (blocks best)": (config_of(blocks, best["id"]), best)}
    home, settings, base = blocks, found["settings"], found["base"]
    if compound is not None:
        summary = json.loads((compound / "summary.json").read_text())
        cands = [json.loads(f.read_text()) for f in sorted((compound / "candidates").glob("*.json"))]
        cands = [c for c in cands
                 if c["base"] == summary["settings"]["base"]["model"] and (c["width"], c["depth"]) != (1, 1)]
        match = min(cands, key=lambda c: abs(c["val_acc"] - best["val_acc"]))
        nets[f"compound search, closest accuracy ({match['id']})"] = (config_of(compound, match["id"]), match)
        home, base = compound, summary["base"]
        settings = {**summary["settings"], "resolution": summary["settings"]["base"]["resolution"]}
    if b0:
        recipe = SearchRecipe(**settings["recipe"])
        j = job(output=str(home), base="efficientnet_b0", width=1.0, depth=1.0, resolution=settings["resolution"],
                recipe=recipe)
        start = time.perf_counter()
        r = run_candidate(j, device)
        print(f"EfficientNet-B0 at {j['resolution']} px on {recipe.data}: val acc {100 * r['val_acc']:.2f}% "
              f"({time.perf_counter() - start:.0f} s, trained or read from {home}/candidates)")
        nets[f"EfficientNet-B0 ({j['id']})"] = (config_of(home, j["id"]), r)
    nets[f"base ({base['id']})"] = (config_of(home, base["id"]), base)
    return nets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("blocks")
    p.add_argument("compound", nargs="?", default=None, help="an effnet search compound run (optional)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--modes", nargs="+", default=["inference"], choices=("inference", "train-step"))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--b0", action="store_true", help="also train and time EfficientNet-B0 at the proxy resolution")
    p.add_argument("--json", default=None, help="write every timing here")
    p.add_argument("--markdown", default=None, help="write the tables here too")
    a = p.parse_args()
    nets = networks(Path(a.blocks), Path(a.compound) if a.compound else None, a.b0, a.device)
    base_name = list(nets)[-1]
    b0_name = next((k for k in nets if k.startswith("EfficientNet-B0")), None)
    lines: list[str] = []
    doc = {"device": device_name(a.device), "torch": torch.__version__, "runs": a.runs, "rounds": a.rounds,
           "networks": {k: {"id": r["id"], "resolution": c.resolution, "params": r["params"], "macs": r["macs"],
                            "val_acc": r["val_acc"]} for k, (c, r) in nets.items()}, "latency_ms": {}}
    for mode in a.modes:
        timer = torch_timer(a.device, mode, runs=a.runs, clock="wall")
        for batch in a.batches:
            if mode == "train-step" and batch < 2:  # batch norm cannot train on one image's 1x1 map
                continue
            models = {k: EfficientConvNet(c) for k, (c, _) in nets.items()}
            inputs = {k: torch.randn(batch, c.in_chans, c.resolution, c.resolution) for k, (c, _) in nets.items()}
            best = dict.fromkeys(nets, float("inf"))
            for _ in range(a.rounds):  # alternate, so a burst of load hits every network alike
                for k in nets:
                    best[k] = min(best[k], timer(models[k], inputs[k]))
            doc["latency_ms"][f"{mode} b{batch}"] = {k: t * 1e3 for k, t in best.items()}
            vs = [base_name] + ([b0_name] if b0_name else [])
            lines += [f"\n{mode}, batch {batch}, {doc['device']}, float32 (fastest of {a.runs} runs x {a.rounds} rounds):\n",
                      f"| network | resolution | params | MACs | val acc | {mode} latency (ms) | "
                      + " | ".join("vs " + v.split(" (")[0] for v in vs) + " |",
                      "|---|---|---|---|---|---|" + "---|" * len(vs)]
            for k, (c, r) in nets.items():
                lines.append(f"| {k} | {c.resolution} | {r['params'] / 1e3:.0f} k | {r['macs'] / 1e6:.2f} M | "
                             f"{100 * r['val_acc']:.2f}% | {best[k] * 1e3:.3f} | "
                             + " | ".join(f"{best[k] / best[v]:.2f}x" for v in vs) + " |")
    print("\n".join(lines))
    if a.markdown:
        write_atomic(Path(a.markdown), "\n".join(lines).encode())
    if a.json:
        write_atomic(Path(a.json), json.dumps(doc, indent=1).encode())


if __name__ == "__main__":
    main()
