"""Pretrained weights on real photographs: float32 PyTorch vs the fused engine (bf16), top-1 and top-5.

    PYTHONPATH=src python scripts/check_pretrained.py                       # on a GPU, rows -> $OUT/rows.jsonl
    PYTHONPATH=src python scripts/check_pretrained.py --images DIR --weights torchvision --models efficientnet_b0

Each model is built with ``effnet.create_model(name, weights=...)``: the published torchvision (or timm)
ImageNet checkpoint, converted on load, fetched into the PyTorch hub cache or placed there by hand (a
machine without internet: see ``effnet.weights.hub.fetch``'s error). The images are the 15 photographs
effnet ships (``effnet/data/photos.npz``, grey, 256 px) or every image of ``--images``, each as ten crops
(corners, centre and their mirrors) at the model's resolution, ImageNet-normalised. A model whose weights
cannot be had is reported as a row with its one-line reason, not an exception.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from bench_fused import agreement, rel  # (scripts/ is on the path: this file's folder)
from torchvision.transforms import v2

import effnet

MODELS = ("efficientnet_b0", "mobilenet_v2_100", "efficientnet_v2_s")
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def photographs(folder: str | None) -> list[torch.Tensor]:
    """uint8 (3, H, W) images: the shipped photographs, or every image file of ``folder``."""
    if folder is None:
        from effnet.train.photos import load_photos

        grey, _ = load_photos()
        return [torch.from_numpy(g)[None].expand(3, -1, -1) for g in grey]
    from torchvision.io import ImageReadMode, decode_image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"check_pretrained: no images ({', '.join(SUFFIXES)}) in {folder}")
    return [decode_image(str(p), mode=ImageReadMode.RGB) for p in files]


def ten_crops(images: list[torch.Tensor], res: int) -> torch.Tensor:
    """(10 * len(images), 3, res, res) float32, ImageNet-normalised: each image resized so its short side is
    res / 0.875, then its ten crops."""
    resize = v2.Resize(round(res / 0.875), antialias=True)
    norm = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    crops = [c for im in images for c in v2.TenCrop(res)(resize(im))]
    return norm(torch.stack(crops).float() / 255)


@torch.no_grad()
def check(name: str, weights: str, images: list[torch.Tensor]) -> dict:
    from effnet.kernels import FusedNet

    try:
        model = effnet.create_model(name, weights=weights).cuda().eval()
    except (ConnectionError, OSError, ValueError) as e:
        return {"part": "check_pretrained", "model": name, "weights": weights, "skipped": str(e)}
    x = ten_crops(images, model.config.resolution).cuda()
    ref = model(x)
    y = FusedNet(model, dtype=torch.bfloat16)(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    per_image = ref.softmax(1).view(len(images), 10, -1).mean(1).argmax(1)  # the ten crops' mean, PyTorch
    return {"part": "check_pretrained", "model": name, "weights": weights, "images": len(images),
            "crops": len(x), "res": model.config.resolution, "rel_err": rel(y, ref),
            **agreement(y.float(), ref), "pytorch_top1_class_per_image": per_image.tolist()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--weights", default="torchvision", help="a published name or 'torchvision'/'timm'")
    ap.add_argument("--images", help="a folder of images (default: the photographs effnet ships)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("check_pretrained: the fused engine needs a CUDA GPU; none is visible")
    from effnet.kernels import tune

    tune.enabled = False  # correctness only: each shape's first tile candidate, nothing timed
    images = photographs(args.images)
    with open(os.path.join(os.environ.get("OUT", "."), "rows.jsonl"), "a") as f:
        for name in args.models:
            row = check(name, args.weights, images)
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
