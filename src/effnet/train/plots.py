"""What a run leaves for a person to read: metrics CSV/JSONL, curve and schedule PNGs, confusion matrix."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from effnet.analysis.figures import pyplot, write_png
from effnet.io import write_atomic


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv and metrics.jsonl, rewritten whole each epoch (a resumed run keeps one clean copy)."""
    if not history:
        return
    fields = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomic(run_dir / "metrics.csv", buf.getvalue().encode())
    write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history).encode())


def plot_curves(run_dir: Path, history: list[dict]) -> Path:
    """curves.png: train/val loss and accuracy per epoch (EMA too, when it was kept)."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], label="train")
    ax_acc.plot(epochs, [100 * r["val_acc"] for r in history], label="val")
    if "ema_val_acc" in history[0]:
        ax_loss.plot(epochs, [r["ema_val_loss"] for r in history], label="val (EMA)")
        ax_acc.plot(epochs, [100 * r["ema_val_acc"] for r in history], label="val (EMA)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    path = run_dir / "curves.png"
    write_png(fig, path, dpi=110)
    return path


def plot_schedule(run_dir: Path, history: list[dict]) -> Path:
    """schedule.png: image size, RandAugment magnitude, mixup alpha, dropout and lr per epoch."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    keys = [("image_size", "image size"), ("randaug", "RandAugment magnitude"), ("mixup", "mixup alpha"),
            ("dropout", "dropout"), ("lr", "learning rate (epoch end)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
    for ax, (key, title) in zip(axes, keys):
        ax.step(epochs, [r[key] for r in history], where="mid")
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    fig.suptitle("progressive learning schedule", y=1.06)
    path = run_dir / "schedule.png"
    write_png(fig, path, dpi=110)
    return path


def plot_confusion(path: Path, matrix, classes: list[str]) -> Path:
    """Confusion matrix PNG (rows: true class, columns: predicted), counts written in small matrices."""
    plt = pyplot()
    n = len(classes)
    size = min(14, 2 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if matrix[i][j]:
                    ax.text(j, i, int(matrix[i][j]), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    write_png(fig, path, dpi=110)
    return path
