"""From scratch vs fine-tuned at an equal budget, on the embedded digits (docs/training.md, "Fine-tuning").

Pretrains ``effnet train``'s default model on digits 0-4, then trains on digits 5-9 with 10, 30 or
all training images per class, from scratch and from the 0-4 checkpoint, with the same epochs,
batch size and images; prints each command and a Markdown table of validation accuracies.

    OMP_NUM_THREADS=1 python scripts/finetune_digits.py --out runs/finetune-digits
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from effnet.cli import main as effnet

BUDGET = ["--epochs", "15", "--batch-size", "10"]  # the same for every run on digits 5-9
COMMON = ["--no-progress", "--no-plots", "--workers", "0"]


def run(argv: list[str]) -> list[dict]:
    print("effnet " + shlex.join(argv), flush=True)
    out = Path(argv[argv.index("--output") + 1])
    if not (out / "metrics.jsonl").exists():
        assert effnet(argv) == 0, argv
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/finetune-digits")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per few-shot setting")
    args = parser.parse_args()
    out = Path(args.out)
    run(["train", "--classes", "0,1,2,3,4", "--output", str(out / "pretrain-0to4"), *COMMON])
    weights = str(out / "pretrain-0to4" / "best.safetensors")
    methods = {  # run folder tag: (table label, flags)
        "scratch": ("from scratch", []),
        "finetuned": ("fine-tuned (defaults)", ["--weights", weights]),
        "frozen": ("fine-tuned, `--freeze backbone`", ["--weights", weights, "--freeze", "backbone"]),
        "headfirst": ("fine-tuned, `--head-only-epochs 3`", ["--weights", weights, "--head-only-epochs", "3"]),
    }
    rows = []
    for shots in ("10", "30", "all"):
        subset = [] if shots == "all" else ["--train-per-class", shots]
        seeds = range(args.seeds) if shots == "10" else range(1)
        for tag, (name, extra) in methods.items():
            finals, bests = [], []
            for seed in seeds:
                hist = run(["train", "--classes", "5,6,7,8,9", *subset, *BUDGET, "--seed", str(seed), *extra,
                            "--output", str(out / f"{shots}-{tag}-s{seed}"), *COMMON])
                finals.append(hist[-1]["val_acc"])
                bests.append(max(max(h["val_acc"], h.get("ema_val_acc", 0.0)) for h in hist))
            rows.append((shots, name, len(finals), sum(finals) / len(finals), min(finals), max(finals),
                         sum(bests) / len(bests)))
    print("\n| train images per class | start | runs | final val acc (mean, min-max) | best epoch (mean) |")
    print("|---|---|---|---|---|")
    for shots, name, n, mean, lo, hi, best in rows:
        spread = f" ({100 * lo:.1f}-{100 * hi:.1f})" if n > 1 else ""
        print(f"| {shots} | {name} | {n} | {100 * mean:.1f}%{spread} | {100 * best:.1f}% |")


if __name__ == "__main__":
    main()
