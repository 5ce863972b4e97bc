"""``effnet predict``: the top-k classes of image files, with probabilities, from a checkpoint.

    effnet predict --weights runs/train-1/best.safetensors cat.jpg dog.png --top-k 3

Any effnet file works (effnet train or effnet.save): its metadata gives the eval size, normalisation
and class names; a file without class names prints class indices.
"""

from __future__ import annotations

import argparse
import sys

import torch

from effnet import runtime
from effnet.devices import resolve_device, set_threads
from effnet.train.config import TrainError
from effnet.train.data import file_transform, light_background, read_image
from effnet.weights import load_checkpoint
from effnet.weights.format import Metadata


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="an effnet .safetensors file (effnet train or effnet.save)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...)")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to list per image")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: one per core)")
    parser.add_argument("--engine", choices=("torch", "opencl"), default="torch",
                        help="run the model with PyTorch, or as an effnet.runtime graph on OpenCL "
                             "(--device then picks the OpenCL device by index or name; auto: the first GPU)")


@torch.no_grad()
def predict(model, meta: Metadata, paths: list[str], top_k: int,
            device: torch.device) -> list[list[tuple[str, float]]]:
    """Per image: the top-k (class name, probability) pairs.

    A model trained on images with a dark background (the digits: white ink on black, the
    checkpoint's ``training["background"]``) gets an image with a light background inverted first,
    so a digit drawn black on white scores as the model learnt; a note on stderr says so.
    """
    transform = file_transform(meta)
    dark_background = (meta.training or {}).get("background") == "dark"
    images = []
    for p in paths:
        try:
            image = read_image(p)
        except OSError as e:  # missing, not an image, truncated: one line naming the file
            raise TrainError(f"cannot read image {p}: {e}") from None
        if dark_background and light_background(image):
            print(f"note: {p} is dark on light; inverted to match the training images (light on dark)",
                  file=sys.stderr)
            image = 255 - image
        images.append(transform(image))
    if isinstance(model, torch.nn.Module):  # else an effnet.runtime engine, which takes CPU tensors
        model = model.eval().to(device)
    probs = model(torch.stack(images).to(device)).float().softmax(1).cpu()
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    names = meta.class_names or [f"class {i}" for i in range(probs.shape[1])]
    return [[(names[i], v) for v, i in zip(vs.tolist(), ix.tolist())] for vs, ix in zip(values, indices)]


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise TrainError(f"--top-k must be a positive integer, got {args.top_k}")
    set_threads(args.threads)
    device = resolve_device("cpu" if args.engine == "opencl" else args.device)  # before loading anything
    model, meta = load_checkpoint(args.weights)
    if args.engine == "opencl":  # the same network as a layer graph, on our OpenCL kernels
        size = meta.eval_size or (model.config.resolution, model.config.resolution)
        cl_device = None if args.device == "auto" else int(args.device) if args.device.isdigit() else args.device
        model = runtime.compile(runtime.from_model(model, input_size=size), "opencl", device=cl_device)
    for path, top in zip(args.images, predict(model, meta, args.images, args.top_k, device)):
        print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    return 0
