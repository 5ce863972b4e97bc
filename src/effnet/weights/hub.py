"""Published torchvision and timm checkpoints: names, URLs, the PyTorch hub cache, ``create_pretrained``.

Checkpoints are fetched with ``torch.hub.download_url_to_file`` into ``torch.hub.get_dir()/checkpoints``
(``$TORCH_HOME/hub/checkpoints``), the cache torchvision uses, so a file already there is reused and a
machine without internet can be given the file by hand.  torchvision files carry the start of their
sha256 in the name, which the download checks.  timm files come from the Hugging Face hub repos that
``timm.models.get_pretrained_cfg(...).hf_hub_id`` names, as ``model.safetensors``.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from effnet import zoo
from effnet.errors import CheckpointError
from effnet.model import EfficientConvNet
from effnet.suggest import did_you_mean
from effnet.weights.adapt import adapt_stem_weight
from effnet.weights.checkpoints import check_and_load, read_checkpoint
from effnet.weights.convert import PEERS, SOURCES, PeerArch, convert_state_dict, peer_arch
from effnet.weights.format import Metadata, is_effnet
from effnet.zoo import get_recipe

_TORCHVISION_URL = "https://download.pytorch.org/models/"
_HF_URL = "https://huggingface.co/{repo}/resolve/main/model.safetensors"

# torchvision weight enums (torchvision.models.<Arch>_Weights): (model, enum member, file, is DEFAULT).
_TORCHVISION_FILES = (
    ("mobilenet_v2", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", False),
    ("mobilenet_v2", "IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth", True),
    ("efficientnet_b0", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", True),
    ("efficientnet_b1", "IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", False),
    ("efficientnet_b1", "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", True),
    ("efficientnet_b2", "IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth", True),
    ("efficientnet_b3", "IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth", True),
    ("efficientnet_b4", "IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth", True),
    ("efficientnet_b5", "IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth", True),
    ("efficientnet_b6", "IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth", True),
    ("efficientnet_b7", "IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth", True),
    ("efficientnet_v2_s", "IMAGENET1K_V1", "efficientnet_v2_s-dd5fe13b.pth", True),
    ("efficientnet_v2_m", "IMAGENET1K_V1", "efficientnet_v2_m-dc08266a.pth", True),
    ("efficientnet_v2_l", "IMAGENET1K_V1", "efficientnet_v2_l-59c71312.pth", True),
)

# timm pretrained tags with Hugging Face weights, default first: model -> ((tag, num_classes), ...).
_TIMM_TAGS: dict[str, tuple[tuple[str, int], ...]] = {
    "mobilenetv1_100": (("ra4_e3600_r224_in1k", 1000),),
    "mobilenetv2_050": (("lamb_in1k", 1000),),
    "mobilenetv2_100": (("ra_in1k", 1000),),
    "mobilenetv2_140": (("ra_in1k", 1000),),
    "efficientnet_b0": (("ra_in1k", 1000), ("ra4_e3600_r224_in1k", 1000),),
    "efficientnet_b1": (("ra4_e3600_r240_in1k", 1000), ("ft_in1k", 1000),),
    "efficientnet_b2": (("ra_in1k", 1000),),
    "efficientnet_b3": (("ra2_in1k", 1000),),
    "efficientnet_b4": (("ra2_in1k", 1000),),
    "efficientnet_b5": (("sw_in12k_ft_in1k", 1000), ("sw_in12k", 11821),),
    "efficientnet_lite0": (("ra_in1k", 1000),),
    "tf_efficientnet_b0": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("aa_in1k", 1000), ("in1k", 1000),),
    "tf_efficientnet_b1": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("aa_in1k", 1000), ("in1k", 1000),),
    "tf_efficientnet_b2": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("aa_in1k", 1000), ("in1k", 1000),),
    "tf_efficientnet_b3": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("aa_in1k", 1000), ("in1k", 1000),),
    "tf_efficientnet_b4": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("aa_in1k", 1000), ("in1k", 1000),),
    "tf_efficientnet_b5": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("ra_in1k", 1000), ("aa_in1k", 1000),
                           ("in1k", 1000),),
    "tf_efficientnet_b6": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("aa_in1k", 1000),),
    "tf_efficientnet_b7": (("ns_jft_in1k", 1000), ("ap_in1k", 1000), ("ra_in1k", 1000), ("aa_in1k", 1000),),
    "tf_efficientnet_b8": (("ap_in1k", 1000), ("ra_in1k", 1000),),
    "tf_efficientnet_l2": (("ns_jft_in1k_475", 1000), ("ns_jft_in1k", 1000),),
    "tf_efficientnet_lite0": (("in1k", 1000),),
    "tf_efficientnet_lite1": (("in1k", 1000),),
    "tf_efficientnet_lite2": (("in1k", 1000),),
    "tf_efficientnet_lite3": (("in1k", 1000),),
    "tf_efficientnet_lite4": (("in1k", 1000),),
    "tf_efficientnetv2_b0": (("in1k", 1000),),
    "tf_efficientnetv2_b1": (("in1k", 1000),),
    "tf_efficientnetv2_b2": (("in1k", 1000),),
    "tf_efficientnetv2_b3": (("in21k_ft_in1k", 1000), ("in1k", 1000), ("in21k", 21843),),
    "tf_efficientnetv2_s": (("in21k_ft_in1k", 1000), ("in1k", 1000), ("in21k", 21843),),
    "tf_efficientnetv2_m": (("in21k_ft_in1k", 1000), ("in1k", 1000), ("in21k", 21843),),
    "tf_efficientnetv2_l": (("in21k_ft_in1k", 1000), ("in1k", 1000), ("in21k", 21843),),
    "tf_efficientnetv2_xl": (("in21k_ft_in1k", 1000), ("in21k", 21843),),
}


@dataclass(frozen=True)
class Published:
    """One published checkpoint: where it is, which peer architecture it fits, where it is cached."""

    source: str  # "torchvision" or "timm"
    arch: str  # the peer's model name
    tag: str  # torchvision enum member (IMAGENET1K_V1) or timm pretrained tag (ra_in1k)
    url: str
    file_name: str  # name in the hub cache
    num_classes: int
    default: bool  # the peer library's default weights for ``arch``
    hash_prefix: str | None = None  # start of the file's sha256, checked on download

    @property
    def name(self) -> str:
        return f"{self.source}/{self.arch}.{self.tag}"

    @property
    def peer(self) -> PeerArch:
        return PEERS[(self.source, self.arch)]

    def cache_path(self) -> Path:
        """Where the file is (or will be) in the PyTorch hub cache."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name


def _torchvision(arch: str, tag: str, file_name: str, default: bool) -> Published:
    digest = re.search(r"-([a-f0-9]+)\.", file_name)  # torch.hub's naming: <name>-<sha256 prefix>.pth
    return Published("torchvision", arch, tag, _TORCHVISION_URL + file_name, file_name, 1000, default,
                     digest.group(1) if digest else None)


def _timm(arch: str, tag: str, num_classes: int, default: bool) -> Published:
    repo = f"timm/{arch}.{tag}"
    return Published("timm", arch, tag, _HF_URL.format(repo=repo), f"timm--{arch}.{tag}.safetensors",
                     num_classes, default)


PUBLISHED: dict[str, Published] = {
    p.name: p
    for p in (
        *(_torchvision(*row) for row in _TORCHVISION_FILES),
        *(_timm(arch, tag, n, i == 0)
          for arch, tags in _TIMM_TAGS.items() for i, (tag, n) in enumerate(tags)),
    )
}


def list_published(model: str | None = None) -> list[str]:
    """Published checkpoint names (``"timm/tf_efficientnet_b0.ns_jft_in1k"``), all or for one zoo model."""
    return [n for n, p in PUBLISHED.items() if model is None or p.peer.model == model]


def resolve_published(weights: str, model: str) -> Published:
    """The published checkpoint that ``weights`` names for zoo model ``model``.

    ``weights``: ``"<source>/<arch>.<tag>"``, ``"<source>/<arch>"`` (that arch's default) or just
    ``"torchvision"`` / ``"timm"`` (the default checkpoint for ``model``, preferring a peer of the same
    padding as ours).
    """
    if weights in SOURCES:
        mine = [p for p in PUBLISHED.values() if p.source == weights and p.peer.model == model and p.default]
        if not mine:
            raise ValueError(f"{weights} publishes no weights for {model!r}; published: "
                             f"{', '.join(list_published(model)) or 'none'}")
        mine.sort(key=lambda p: p.peer.padding != "symmetric")  # PyTorch-trained first, then TF ports
        return mine[0]
    pub = PUBLISHED.get(weights)
    if pub is None:
        defaults = {f"{p.source}/{p.arch}": p for p in PUBLISHED.values() if p.default}
        pub = defaults.get(weights)
    if pub is None:
        raise ValueError(f"unknown published checkpoint {weights!r}{did_you_mean(weights, PUBLISHED)} "
                         f"(effnet.weights.list_published({model!r}) lists those for this model)")
    if pub.peer.model != model:
        raise ValueError(f"checkpoint {pub.name} is for effnet model {pub.peer.model!r}, not {model!r}")
    return pub


def fetch(pub: Published, *, progress: bool = True) -> Path:
    """The cached file of ``pub``, downloading it first if needed (through the PyTorch hub cache)."""
    path = pub.cache_path()
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Writes to a temp file beside ``path`` and renames it only when complete and hash-checked.
        # The bar only on a terminal, as effnet train's: in a log file its redraws would fill the file.
        torch.hub.download_url_to_file(pub.url, str(path), hash_prefix=pub.hash_prefix,
                                       progress=progress and sys.stderr.isatty())
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ConnectionError(f"could not download {pub.url} ({str(reason).strip()}); without internet, "
                              f"fetch that file elsewhere and place it at {path}") from None
    except RuntimeError as e:  # torch.hub's hash check
        raise CheckpointError(f"download of {pub.url} failed its integrity check ({str(e).strip()}); "
                              f"nothing was written to {path}") from None
    return path


def _detect_source(tensors: dict, label: str) -> str:
    """Which library's naming a plain state dict uses, from its stem key."""
    for source, key in (("effnet", "stem.conv.weight"), ("timm", "conv_stem.weight"),
                        ("torchvision", "features.0.0.weight")):
        if key in tensors:
            return source
    raise CheckpointError(f"{label}: not an effnet, torchvision or timm state dict of this family "
                          f"(first keys: {', '.join(list(tensors)[:4])})")


def _local_peer(source: str, model: str, padding: str, label: str) -> PeerArch:
    """The peer architecture a local torchvision/timm file is taken to be: our model, our padding."""
    fits = [p for p in PEERS.values() if p.source == source and p.model == model and p.padding == padding]
    if not fits:
        raise ValueError(f"{label}: {source} has no {model} with padding={padding!r}")
    return min(fits, key=lambda p: p.name.startswith("tf_"))


def _settings(required: dict, padding: str, overrides: dict, *, strict_eps: bool) -> dict:
    """Merge what the checkpoint needs with the caller's choices; a contradiction is an error."""
    settings = dict(required)
    settings["padding"] = "same" if "same" in (padding, required.get("padding")) else padding
    if "bn_eps" in overrides:
        if strict_eps and "bn_eps" in required and overrides["bn_eps"] != required["bn_eps"]:
            raise ValueError(f"these weights were trained with bn_eps={required['bn_eps']}, "
                             f"got bn_eps={overrides['bn_eps']}")
        settings["bn_eps"] = overrides["bn_eps"]
    if "bn_momentum" in overrides:  # a training choice, not a property of the weights
        settings["bn_momentum"] = overrides["bn_momentum"]
    return settings


def create_model(name: str | None = None, *, weights: str | os.PathLike | None = None, **kwargs) -> EfficientConvNet:
    """``effnet.create_model``: :func:`effnet.zoo.create_model` (same arguments) plus ``weights``,
    a checkpoint file or a published torchvision/timm checkpoint name (:func:`create_pretrained`).

    It lives here, above the zoo, so that the zoo never imports the weights code.
    """
    if weights is None:
        return zoo.create_model(name, **kwargs)
    return create_pretrained(name, weights, **kwargs)


@dataclass(frozen=True)
class Pretrained:
    """What :func:`load_pretrained` read: where the weights came from and what was fitted."""

    label: str  # the published name or the file path
    source: str  # "effnet", "torchvision" or "timm": whose training run the tensors come from
    metadata: Metadata | None  # an effnet file's metadata: config, class names, eval size, normalisation
    num_classes: int  # outputs of the checkpoint's classifier (0: it has none)
    head_loaded: bool  # the classifier came from the checkpoint (else it keeps its fresh initialisation)
    stem_channels: int  # input channels of the checkpoint's stem (the model's may differ: adapted)


def create_pretrained(name: str, weights: str | os.PathLike, **kwargs) -> EfficientConvNet:
    """``create_model(name, ...)`` with weights from a local file or a published checkpoint.

    ``weights``: a path (effnet safetensors from :func:`effnet.save`, or a torchvision/timm/effnet
    state dict in safetensors or ``.pt``/``.pth``), a name from :func:`list_published`, or
    ``"torchvision"``/``"timm"``.  TF ports get ``padding="same"`` and their BN settings.  With a
    different ``num_classes`` than the checkpoint the classifier keeps its fresh initialisation (with
    a warning); with another ``in_chans`` the stem is adapted (:mod:`effnet.weights.adapt`).
    """
    model, info = load_pretrained(name, weights, **kwargs)
    if not info.head_loaded and info.num_classes and model.config.num_classes:
        warnings.warn(f"{info.label}: classifier not loaded (checkpoint has {info.num_classes} classes, model "
                      f"{model.config.num_classes}); it keeps its fresh initialisation", stacklevel=2)
    return model


def load_pretrained(
    name: str,
    weights: str | os.PathLike,
    *,
    peer: tuple[str, str] | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    class_names: list[str] | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    padding: str = "symmetric",
    progress: bool = True,
    **overrides,
) -> tuple[EfficientConvNet, Pretrained]:
    """:func:`create_pretrained` that also says what it loaded (for fine-tuning).

    ``peer=(source, arch)`` reads ``weights`` as that torchvision/timm architecture's state dict
    (``("timm", "tf_efficientnet_b0")``) instead of guessing the library from the key names.  The
    classifier is loaded when the class count matches and, where both sides name their classes,
    the names match too (``class_names``); otherwise it keeps its fresh initialisation.
    """
    get_recipe(name)  # an unknown name fails before any download
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a file path or a published checkpoint name, "
                        f"got {type(weights).__name__}")
    label = os.fspath(weights)
    published = peer is None and isinstance(weights, str) and not os.path.exists(weights) and (
        weights in SOURCES or weights.split("/", 1)[0] in SOURCES)
    strict_eps, metadata, source = True, None, "effnet"
    if published:
        pub = resolve_published(weights, name)
        path = fetch(pub, progress=progress)
        try:
            tensors, _ = read_checkpoint(path)
        except CheckpointError as e:  # a damaged cache file would fail the same way forever
            raise CheckpointError(f"{e}; delete it to download {pub.name} again") from None
        state_dict = convert_state_dict(tensors, pub.source, pub.arch)
        required, label, source = pub.peer.model_kwargs(), pub.name, pub.source
    elif peer is not None:
        arch = peer_arch(*peer)
        if arch.model != name:
            raise ValueError(f"{peer[0]} {arch.name} weights are for effnet model {arch.model!r}, not {name!r}")
        tensors, _ = read_checkpoint(weights)
        state_dict = convert_state_dict(tensors, arch.source, arch.name)
        required, source = arch.model_kwargs(), arch.source
    else:
        tensors, raw = read_checkpoint(weights)
        if is_effnet(raw):
            metadata = Metadata.from_strings(raw, weights)
            saved = metadata.config
            if saved is None:
                raise CheckpointError(f"{label}: an effnet graph file, not model weights")
            wanted = zoo.model_config(name, **{k: v for k, v in overrides.items() if k in _TABLE_OVERRIDES})
            if saved.name != name or saved.spec != wanted.spec:
                what = repr(saved.name) if saved.name != name else f"{name!r} with another stage table"
                raise ValueError(f"{label} holds a {what} checkpoint, not {name!r} as asked "
                                 "(effnet.load(path) rebuilds it)")
            state_dict = tensors
            required = {"padding": saved.padding, "bn_eps": saved.bn_eps, "bn_momentum": saved.bn_momentum}
        else:
            source = _detect_source(tensors, label)
            strict_eps, required, state_dict = False, {}, tensors
            if source != "effnet":
                arch = _local_peer(source, name, padding, label)
                state_dict = convert_state_dict(tensors, source, arch.name)
                required = arch.model_kwargs()
    settings = _settings(required, padding, overrides, strict_eps=strict_eps)
    rest = {k: v for k, v in overrides.items() if k not in settings}
    model = zoo.create_model(name, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                             drop_path_rate=drop_path_rate, **settings, **rest)
    state_dict = dict(state_dict)
    stem_channels = _fit_stem(model, state_dict)
    saved_names = metadata.class_names if metadata is not None else None
    fc = state_dict.get("classifier.weight")
    ckpt_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else 0
    keep_head = (ckpt_classes == model.config.num_classes > 0
                 and (saved_names is None or class_names is None or list(saved_names) == list(class_names)))
    if not keep_head:
        state_dict = _fresh_classifier(model, state_dict)
    check_and_load(model, state_dict, label)
    return model, Pretrained(label, source, metadata, ckpt_classes, keep_head, stem_channels)


# create_model overrides that change the stage table (and so which tensors a checkpoint must hold).
_TABLE_OVERRIDES = ("width", "depth", "phi")


def _fit_stem(model: EfficientConvNet, state_dict: dict) -> int:
    """Refit the checkpoint's stem to the model's input channels (in place); returns the checkpoint's."""
    w = state_dict.get("stem.conv.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        return model.config.in_chans  # check_and_load reports the missing key
    if w.shape[1] != model.config.in_chans:
        state_dict["stem.conv.weight"] = adapt_stem_weight(w, model.config.in_chans)
    return int(w.shape[1])


def _fresh_classifier(model: EfficientConvNet, state_dict: dict) -> dict:
    """The checkpoint with the model's own (freshly initialised) classifier in place of its own."""
    kept = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
    return {**kept, **{k: v for k, v in model.state_dict().items() if k.startswith("classifier.")}}
