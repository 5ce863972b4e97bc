"""Data sets (embedded digits, CIFAR, image folders), their transforms, and the per-epoch loaders.

Every data set yields ``(uint8 image tensor (3, H, W), class index)``; the transforms of the
current progressive stage (torchvision transforms v2) are applied on top, so a new stage only
needs a new loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import v2

from effnet.train.config import TrainConfig, TrainError
from effnet.train.photos import PhotoTask, make_split
from effnet.train.progressive import ProgressiveStage
from effnet.weights.format import Metadata, Normalization

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (N, 3, H, W) with integer targets."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


class FileImages(Dataset):
    """Image files read with PIL on access (RGB), with their class indices."""

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.files = files
        self.targets = torch.tensor([t for _, t in files])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.files[i]
        try:
            return read_image(path), target
        except OSError as e:  # a file that changed after the check (or with check_images off)
            raise TrainError(f"cannot read image {path}: {e}") from None


# PIL modes of one channel wider than 8 bits; convert("RGB") would clip them at 255, not scale them.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def read_image(path: str | Path) -> torch.Tensor:
    """One image file as a uint8 RGB tensor (3, H, W); 16-bit greyscale is scaled by its bit depth."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in _WIDE_MODES:
            grey = torch.from_numpy(_to_8bit(np.asarray(im), _full_scale(im)))
            return grey[None].expand(3, -1, -1).contiguous()
        return v2.functional.pil_to_tensor(im.convert("RGB"))


def _full_scale(im) -> float:
    """The value that means white: 2**bits - 1 for integer images (bits from the file), 1.0 for float."""
    if im.mode == "F":
        return 1.0
    if im.mode.startswith("I;16"):
        return 65535.0
    bits = getattr(im, "tag_v2", {}).get(258)  # TIFF BitsPerSample; a PNG in mode "I" is 16-bit
    bits = bits[0] if isinstance(bits, tuple) else bits
    return float(2 ** (bits if isinstance(bits, int) and 8 < bits <= 32 else 16) - 1)


def _to_8bit(values: np.ndarray, full_scale: float) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)


@dataclass
class DataSet:
    """A train/val pair with what the transforms need to know about it."""

    name: str
    train: Dataset
    val: Dataset
    classes: list[str]
    image_size: int | None  # natural training size (None: use the model's resolution)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    hflip: float = 0.5
    scale_min: float = 0.08
    crop_pct: float = 0.875
    in_memory: bool = False
    background: str | None = None  # "dark"/"light" when the images agree (the digits: white on black)
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (bad_images="skip")


def seeded_split(targets: torch.Tensor, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified split: the same share of every class goes to validation, chosen by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded digits: uint8 images (1797, 3, 8, 8) scaled to 0..255, and targets 0..9."""
    with resources.files("effnet.data").joinpath("digits.npz").open("rb") as f, np.load(f) as z:
        images, targets = z["images"], z["targets"]
    # 0..16 ink counts -> 0..255 grey, repeated to 3 channels so every model and image file share one path
    grey = torch.from_numpy((images.astype(np.int32) * 255 + 8) // 16).to(torch.uint8)
    return grey[:, None].expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(targets.astype(np.int64))


def digits_dataset(config: TrainConfig) -> DataSet:
    images, targets = load_digits()
    train_idx, val_idx = seeded_split(targets, config.val_fraction, config.split_seed)
    return DataSet("digits", TensorImages(images[train_idx], targets[train_idx]),
                   TensorImages(images[val_idx], targets[val_idx]), [str(d) for d in range(10)], 32,
                   mean=(0.5,) * 3, std=(0.5,) * 3, hflip=0.0, scale_min=0.6, crop_pct=1.0, in_memory=True,
                   background="dark")  # white ink on black: predict inverts a drawing in black on white


def cifar_dataset(config: TrainConfig, num: int) -> DataSet:
    from torchvision import datasets

    root = os.path.expanduser(config.data_dir)
    cls = datasets.CIFAR10 if num == 10 else datasets.CIFAR100
    try:
        parts = [cls(root, train=train, download=True) for train in (True, False)]
    except Exception as e:  # noqa: BLE001 -- no network, a proxy, a half-written archive: one line either way
        raise TrainError(f"could not get CIFAR-{num} into {root} ({type(e).__name__}: {e}); "
                         "download it there or train on an image folder") from None

    def to_tensors(ds):
        return TensorImages(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets))

    return DataSet(f"cifar{num}", to_tensors(parts[0]), to_tensors(parts[1]), list(parts[0].classes), 32,
                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_pct=1.0, in_memory=True,
                   scale_min=0.35)


def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise TrainError(f"data folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise TrainError(f"data folder {root} has no class folders (expected {root}/<class>/<image>)")
    out = {}
    for c in classes:
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise TrainError(f"class folder {root / c} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        out[c] = files
    return out


def find_unreadable(paths: list[Path]) -> list[Path]:
    """The files PIL cannot decode (header and data), in order."""
    from PIL import Image

    bad = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()  # decode fully: a truncated body passes Image.verify() on some formats
        except Exception:  # noqa: BLE001 -- PIL raises many types for corrupt files; all of them mean "unreadable"
            bad.append(p)
    return bad


def _checked(by_class: dict[str, list[Path]], config: TrainConfig, skipped: list[str]) -> dict[str, list[Path]]:
    if not config.check_images:
        return by_class
    bad = set(find_unreadable([p for files in by_class.values() for p in files]))
    if not bad:
        return by_class
    listed = ", ".join(str(p) for p in sorted(bad)[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    if config.bad_images == "stop":
        raise TrainError(f"{len(bad)} unreadable image(s): {listed} (pass --bad-images skip to leave them out)")
    skipped += [str(p) for p in sorted(bad)]
    out = {c: [p for p in files if p not in bad] for c, files in by_class.items()}
    for c, files in out.items():
        if not files:
            raise TrainError(f"class {c!r} has no readable images left after skipping unreadable ones")
    return out


def folder_dataset(config: TrainConfig) -> DataSet:
    """ImageFolder layout: root/train/<class> + root/val/<class>, or root/<class> split by seed."""
    root = Path(config.data).expanduser()
    if root.exists() and not root.is_dir():
        raise TrainError(f"--data {root} is a file; give a folder of class folders, or digits, cifar10, cifar100")
    if not root.is_dir():
        raise TrainError(f"data folder {root} does not exist (--data takes digits, cifar10, cifar100 or a folder)")
    skipped: list[str] = []
    if (root / "train").is_dir():
        train_files = _checked(_class_files(root / "train"), config, skipped)
        if not (root / "val").is_dir():
            raise TrainError(f"{root} has train/ but no val/ folder (or put the class folders directly in {root})")
        val_files = _checked(_class_files(root / "val"), config, skipped)
        if sorted(train_files) != sorted(val_files):
            raise TrainError(f"train/ and val/ of {root} have different class folders: "
                             f"{sorted(set(train_files) ^ set(val_files))}")
        classes = sorted(train_files)
        train = FileImages([(p, classes.index(c)) for c in classes for p in train_files[c]])
        val = FileImages([(p, classes.index(c)) for c in classes for p in val_files[c]])
    else:
        by_class = _checked(_class_files(root), config, skipped)
        classes = sorted(by_class)
        everything = FileImages([(p, classes.index(c)) for c in classes for p in by_class[c]])
        train_idx, val_idx = seeded_split(everything.targets, config.val_fraction, config.split_seed)
        if not val_idx:
            raise TrainError(f"{root} has too few images to hold out a validation split")
        train = FileImages([everything.files[i] for i in train_idx])
        val = FileImages([everything.files[i] for i in val_idx])
    if len(classes) < 2:
        raise TrainError(f"{root} has one class folder ({classes[0]}); classification needs at least two")
    return DataSet(root.name, train, val, classes, None, skipped=skipped)


def photos_dataset(config: TrainConfig) -> DataSet:
    """The photo-crops proxy (effnet.train.photos): seeded by ``split_seed``, rendered at 64 px."""
    (train_x, train_y), (val_x, val_y), names = make_split(PhotoTask(), config.split_seed)
    # The crops are already random in position, scale and rotation: no further crop, no flips.
    return DataSet("photos", TensorImages(train_x, train_y), TensorImages(val_x, val_y), names, 32,
                   mean=(0.5,) * 3, std=(0.25,) * 3, hflip=0.0, scale_min=1.0, crop_pct=1.0, in_memory=True)


def load_dataset(config: TrainConfig) -> DataSet:
    """The data set the config names (digits, photos, cifar10/cifar100, or an image folder), with its
    ``classes`` subset and ``train_per_class`` share applied, in ``in_chans`` channels."""
    if config.data in (None, "", "digits"):
        data = digits_dataset(config)
    elif config.data == "photos":
        data = photos_dataset(config)
    elif config.data in ("cifar10", "cifar100"):
        data = cifar_dataset(config, int(config.data[5:]))
    else:
        data = folder_dataset(config)
    if config.classes is not None:
        data = keep_classes(data, [c.strip() for c in config.classes.split(",") if c.strip()])
    if config.train_per_class is not None:
        data.train = _select(data.train, per_class(data.train.targets, config.train_per_class, config.split_seed))
    if config.in_chans == 1:
        data.mean, data.std = gray_normalization(data.mean, data.std)
    if data.background is None:
        data.background = dominant_background(data.train)
    return data


def dominant_background(dataset: Dataset, samples: int = 64) -> str | None:
    """The images' common background, "dark" or "light", when nine in ten of ``samples`` agree; else None."""
    n = len(dataset)
    picks = sorted({i * n // samples for i in range(min(n, samples))})
    light = sum(light_background(dataset[i][0]) for i in picks)
    if light >= 0.9 * len(picks):
        return "light"
    return "dark" if light <= 0.1 * len(picks) else None


def gray_normalization(mean, std) -> tuple[tuple[float], tuple[float]]:
    """One-channel mean/std for images converted to gray: the average of the RGB values."""
    return (sum(mean) / len(mean),), (sum(std) / len(std),)


def _select(dataset: Dataset, indices: list[int], relabel: dict[int, int] | None = None) -> Dataset:
    """The images at ``indices`` (targets renumbered by ``relabel``), of the same in-memory or file kind."""
    relabel = relabel or {}
    if isinstance(dataset, TensorImages):
        idx = torch.tensor(indices, dtype=torch.long)
        targets = torch.tensor([relabel.get(int(t), int(t)) for t in dataset.targets[idx]], dtype=torch.long)
        return TensorImages(dataset.images[idx], targets)
    assert isinstance(dataset, FileImages)
    return FileImages([(dataset.files[i][0], relabel.get(dataset.files[i][1], dataset.files[i][1]))
                       for i in indices])


def keep_classes(data: DataSet, names: list[str]) -> DataSet:
    """``data`` restricted to the classes ``names`` (in the data set's own order), renumbered from 0."""
    unknown = [n for n in names if n not in data.classes]
    if unknown:
        raise TrainError(f"classes {', '.join(unknown)} are not in {data.name} (it has {', '.join(data.classes[:20])}"
                         + (" ..." if len(data.classes) > 20 else "") + ")")
    kept = [i for i, c in enumerate(data.classes) if c in names]
    if len(kept) < 2:
        raise TrainError(f"--classes keeps {len(kept)} class; classification needs at least two")
    relabel = {old: new for new, old in enumerate(kept)}
    for part in ("train", "val"):
        targets = getattr(data, part).targets
        setattr(data, part, _select(getattr(data, part), [i for i, t in enumerate(targets.tolist()) if t in relabel],
                                    relabel))
    data.classes = [data.classes[i] for i in kept]
    return data


def per_class(targets: torch.Tensor, n: int, seed: int) -> list[int]:
    """Up to ``n`` indices of each class, drawn by ``seed`` (a class with fewer keeps all of its images)."""
    g = torch.Generator().manual_seed(seed + 1)  # + 1: not the same draw as the validation split
    out = []
    for c in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == c).flatten()
        out += idx[torch.randperm(len(idx), generator=g)][:n].tolist()
    return sorted(out)


def train_transform(stage: ProgressiveStage, config: TrainConfig, data: DataSet) -> v2.Compose:
    """Per-image training transform of one stage: crop+resize to the stage's size, flip, augment."""
    scale_min = data.scale_min if config.scale_min is None else config.scale_min
    hflip = data.hflip if config.hflip is None else config.hflip
    ops: list = [v2.RandomResizedCrop(stage.image_size, scale=(scale_min, 1.0), antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if config.augment == "randaugment" and stage.randaug > 0:
        # torchvision's 31 bins: magnitude m applies m/30 of each operation's range
        ops.append(v2.RandAugment(num_ops=config.randaug_ops, magnitude=stage.randaug, num_magnitude_bins=31))
    elif config.augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    return v2.Compose(ops + _to_model_input(data.mean, data.std))


def _to_model_input(mean, std) -> list:
    """Float conversion and normalisation; one mean/std value means a one-channel (gray) model."""
    gray = [v2.Grayscale(1)] if len(mean) == 1 else []  # after augmenting: RandAugment's colour ops need RGB
    return [*gray, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def eval_transform(size: int | tuple[int, int], crop_pct: float, mean, std, invert: bool = False) -> v2.Compose:
    """Resize to size/crop_pct (the short side, for a square size), center-crop ``size``, gray when ``mean``
    has one value, normalise (after ``1 - x`` when ``invert``)."""
    h, w = (size, size) if isinstance(size, int) else size
    resize = round(h / crop_pct) if h == w else (round(h / crop_pct), round(w / crop_pct))
    steps = [v2.Resize(resize, antialias=True), v2.CenterCrop((h, w))]
    if len(mean) == 1:  # a one-channel (gray) model
        steps.append(v2.Grayscale(1))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if invert:
        steps.append(v2.Lambda(_invert))
    return v2.Compose([*steps, v2.Normalize(list(mean), list(std))])


def _invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def file_transform(meta: Metadata) -> v2.Compose:
    """The evaluation transform an effnet file asks for: its eval size, crop and normalisation.

    A file that does not say (``effnet.save`` without them) gets the config's resolution, no crop
    (resize to the size) and ImageNet statistics, the convention of the published weights.
    """
    size = meta.eval_size or (meta.config.resolution, meta.config.resolution)
    crop_pct = (meta.training or {}).get("crop_pct") or 1.0
    norm = meta.normalization or Normalization(IMAGENET_MEAN, IMAGENET_STD)
    return eval_transform(size, crop_pct, norm.mean, norm.std, norm.invert)


def light_background(image: torch.Tensor) -> bool:
    """Whether a uint8 (C, H, W) image is dark on light: the median of its border is above mid-grey."""
    grey = image.float().mean(0)
    w = max(1, min(grey.shape) // 16)
    border = torch.cat([grey[:w].flatten(), grey[-w:].flatten(), grey[:, :w].flatten(), grey[:, -w:].flatten()])
    return border.median().item() > 127.5


class Transformed(Dataset):
    """A data set with a transform applied to its images."""

    def __init__(self, dataset: Dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        return self.transform(image), target


def train_loader(dataset: Dataset, transform, *, batch_size: int, rank: int, world: int, seed: int, epoch: int,
                 workers: int, pin_memory: bool = False) -> DataLoader:
    """This process's shard of one epoch: shuffled by (seed, epoch), disjoint from the other ranks'."""
    # DistributedSampler with world 1 is a seeded shuffle too, so one and many processes share one path.
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    if len(sampler) < batch_size:
        raise TrainError(f"each process gets {len(sampler)} training images per epoch, fewer than one batch "
                         f"({batch_size}); lower --batch-size")
    # The generator fixes the workers' base seed, so worker-side augmentation repeats on resume too.
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(Transformed(dataset, transform), batch_size=batch_size, sampler=sampler, drop_last=True,
                      num_workers=workers, generator=gen, pin_memory=pin_memory,
                      persistent_workers=False)


def val_loader(dataset: Dataset, transform, *, batch_size: int, rank: int, world: int, workers: int,
               pin_memory: bool = False) -> DataLoader:
    """Every rank takes every world-th image: no padding, so summed counts are exact."""
    shard = Subset(Transformed(dataset, transform), range(rank, len(dataset), world))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)
