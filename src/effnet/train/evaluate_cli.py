"""``effnet evaluate``: top-1/top-5, per-class accuracy and a confusion-matrix PNG for a checkpoint.

    effnet evaluate --weights runs/train-1/best.safetensors              # the data it was trained on
    effnet evaluate --weights best.safetensors --data path/to/folder
    effnet evaluate --weights saved_with_effnet_save.safetensors --data path/to/folder

Any effnet file works: its metadata gives the eval size, normalisation and class names (and, for
files written by ``effnet train``, the data and validation split it was trained on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from effnet.devices import resolve_device, set_threads
from effnet.errors import UserError
from effnet.io import check_writable
from effnet.train.config import TrainConfig, TrainError
from effnet.train.data import file_transform, load_dataset
from effnet.weights import load_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="an effnet .safetensors file (effnet train or effnet.save)")
    parser.add_argument("--data", default=None, help="digits, photos, cifar10, cifar100 or an image folder "
                        "(default: the data an effnet train checkpoint was trained on); its validation split is used")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: one per core)")
    parser.add_argument("--confusion", default=None,
                        help="where to write the confusion matrix PNG (default: beside the checkpoint)")


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset, transform, batch_size: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) over a whole data set."""
    from torch.utils.data import DataLoader

    from effnet.train.data import Transformed

    logits, targets = [], []
    for x, y in DataLoader(Transformed(dataset, transform), batch_size=batch_size):
        logits.append(model(x.to(device)).float().cpu())
        targets.append(y)
    return torch.cat(logits), torch.cat(targets)


def summarize(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """Top-1, top-5, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    k = min(5, num_classes)
    topk = logits.topk(k, dim=1).indices
    pred = topk[:, 0]
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((targets, pred), torch.ones_like(targets), accumulate=True)
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    return {"top1": (pred == targets).double().mean().item(),
            "top5": (topk == targets[:, None]).any(1).double().mean().item(),
            "per_class": per_class.tolist(), "counts": confusion.sum(1).tolist(), "confusion": confusion}


def run(args: argparse.Namespace) -> int:
    from effnet.train.plots import plot_confusion

    if args.batch_size < 1:
        raise TrainError(f"--batch-size must be a positive integer, got {args.batch_size}")
    set_threads(args.threads)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.weights)
    out = Path(args.confusion) if args.confusion else Path(args.weights).with_name(
        Path(args.weights).stem + "-confusion.png")
    check_writable(out, "--confusion")  # now, not after the whole validation set has run
    training = meta.training or {}
    if args.data is None and meta.training is None:
        raise UserError(f"{args.weights} does not say which data it was trained on (not written by effnet "
                        "train): pass --data")
    split = training.get("split", {})
    data_name = args.data if args.data is not None else training.get("data_source")
    data = load_dataset(TrainConfig(data=data_name, val_fraction=split.get("val_fraction", 0.2),
                                    split_seed=split.get("split_seed", 0), classes=training.get("classes_kept"),
                                    progress=False))
    if meta.class_names is not None and data.classes != list(meta.class_names):
        raise TrainError(f"{args.weights} was trained on classes {list(meta.class_names)[:10]}, "
                         f"but {data.name} has {data.classes[:10]}")
    if len(data.classes) != meta.config.num_classes:
        raise TrainError(f"{args.weights} has {meta.config.num_classes} outputs, but {data.name} has "
                         f"{len(data.classes)} classes")
    transform = file_transform(meta)
    logits, targets = predict_dataset(model.eval().to(device), data.val, transform, args.batch_size, device)
    s = summarize(logits, targets, len(data.classes))
    size = "x".join(map(str, meta.eval_size or (meta.config.resolution,) * 2))
    print(f"{args.weights}: {data.name} validation, {len(targets)} images at {size} px")
    print(f"top-1 {100 * s['top1']:.2f}%   top-5 {100 * s['top5']:.2f}%")
    width = max(len(c) for c in data.classes)
    for name, acc, n in zip(data.classes, s["per_class"], s["counts"]):
        print(f"  {name:<{width}}  {100 * acc:6.2f}%  ({n} images)")
    plot_confusion(out, s["confusion"].tolist(), data.classes)
    print(f"confusion matrix: {out}")
    return 0
