"""Training throughput of ``effnet train`` on 1 and 2 (or more) GPUs with torchrun DDP.

Writes a synthetic image folder (JPEG files, a tint per class so the loss can fall), then runs
``torchrun --nproc_per_node N -m effnet train`` for each N and prints the images/s of the last epoch
(the first epoch carries cuDNN autotuning and worker start-up).  Used for docs/benchmarks/training-ddp.md:

    python scripts/bench_train_ddp.py --gpus 1 2 --model efficientnet_v2_s --image-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, classes: int, per_class: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        tint = rng.integers(0, 256, 3)
        for i in range(per_class):
            noise = rng.integers(0, 256, (size, size, 3))
            image = ((noise + tint) // 2).astype(np.uint8)
            Image.fromarray(image).save(root / f"class{c:02d}" / f"{i}.jpg", quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/effnet-bench")
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model", default="efficientnet_v2_s")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128, help="per GPU")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=7, help="DataLoader processes per GPU")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more effnet train flags")
    args = p.parse_args()

    out = Path(args.out)
    data = out / "data"
    if not data.exists():
        t = time.perf_counter()
        make_folder(data, 10, args.images // 10, 96)
        print(f"wrote {args.images} synthetic 96x96 JPEGs in {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for n in args.gpus:
        run = out / f"run-{n}gpu"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--standalone",
               "-m", "effnet", "train", "--data", str(data), "--model", args.model, "--image-size",
               str(args.image_size), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
               "--workers", str(args.workers), "--augment", "none", "--no-check-images", "--no-progress",
               "--no-plots", "--val-fraction", "0.05", "--output", str(run), *args.extra]
        print(" ".join(cmd), flush=True)
        t = time.perf_counter()
        done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True, capture_output=True, check=False)
        print(done.stdout[-3000:], done.stderr[-3000:], flush=True)
        if done.returncode:
            sys.exit(done.returncode)
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        rows.append((n, last["images_per_s"], last["epoch_s"], time.perf_counter() - t))
    base = rows[0][1]
    print("| GPUs | images/s (last epoch) | epoch time (s) | speed-up vs first row | whole run (s) |")
    print("|---|---|---|---|---|")
    for n, ips, sec, wall in rows:
        print(f"| {n} | {ips:,.0f} | {sec:.1f} | {ips / base:.2f}x | {wall:.0f} |")


if __name__ == "__main__":
    main()
