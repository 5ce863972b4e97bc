"""State-dict conversion between effnet and torchvision / timm, by walking our module tree.

Each peer library names the same layers differently.  A *naming scheme* walks an effnet model in
order (stem, every block of every stage, head, classifier) and says, for each of our modules, which
module of the peer holds the same weights.  The key map is then exact, not a guess from tensor
order: a family mismatch, a missing or extra key or a shape difference is reported in one error.

The table :data:`PEERS` lists every peer architecture we can load, with the effnet settings it
needs (TensorFlow ports need ``padding="same"`` and BN eps 1e-3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from effnet.config import ModelConfig
from effnet.errors import CheckpointError
from effnet.layers import ConvNormAct
from effnet.model import EfficientConvNet
from effnet.plan import BlockSpec, Plan
from effnet.suggest import did_you_mean
from effnet.tables import BlockType
from effnet.zoo import model_config

SOURCES = ("torchvision", "timm")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_MAX_LISTED = 8  # keys named in one error line before "... and N more"


@dataclass(frozen=True)
class PeerArch:
    """One torchvision or timm architecture and the effnet model that holds the same weights."""

    source: str  # "torchvision" or "timm"
    name: str  # the peer's model name, e.g. "tf_efficientnet_b0"
    model: str  # the effnet zoo name, e.g. "efficientnet_b0"
    scheme: str  # key naming scheme, a key of SCHEMES
    padding: str = "symmetric"  # "same" for TensorFlow-trained ports
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # what the peer trains with (TF's decay 0.99 would be 0.01)

    def model_kwargs(self) -> dict:
        """The ``create_model`` keyword arguments that make our model compute what the peer computes."""
        return {"padding": self.padding, "bn_eps": self.bn_eps, "bn_momentum": self.bn_momentum}


def _tv(name: str, model: str, scheme: str = "torchvision_efficientnet", bn_eps: float = 1e-5) -> PeerArch:
    return PeerArch("torchvision", name, model, scheme, bn_eps=bn_eps)


def _timm(name: str, model: str, tf_port: bool = False) -> PeerArch:
    if tf_port:
        # timm keeps PyTorch's BN momentum for its TF ports; only eps and padding follow TF.
        return PeerArch("timm", name, model, "timm", padding="same", bn_eps=1e-3)
    return PeerArch("timm", name, model, "timm")


_EFFNET_V1 = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "l2")
_LITE = ("lite0", "lite1", "lite2", "lite3", "lite4")
_PEER_LIST = (
    # torchvision: B0-B4 were trained in PyTorch (eps 1e-5); B5-B7 and V2 are TF-style (eps 1e-3),
    # but torchvision pads symmetrically, so our default padding matches it.
    _tv("mobilenet_v2", "mobilenet_v2_100", "torchvision_mobilenet_v2"),
    *(_tv(f"efficientnet_{k}", f"efficientnet_{k}") for k in _EFFNET_V1[:5]),
    *(_tv(f"efficientnet_{k}", f"efficientnet_{k}", bn_eps=1e-3) for k in _EFFNET_V1[5:8]),
    *(_tv(f"efficientnet_v2_{k}", f"efficientnet_v2_{k}", bn_eps=1e-3) for k in ("s", "m", "l")),
    # timm: models trained in PyTorch use PyTorch BN defaults; tf_* are ports of the TF releases.
    _timm("mobilenetv1_100", "mobilenet_v1_100"),
    *(_timm(f"mobilenetv2_{w}", f"mobilenet_v2_{w}") for w in ("035", "050", "075", "100", "140")),
    *(_timm(f"efficientnet_{k}", f"efficientnet_{k}") for k in _EFFNET_V1 + _LITE),
    *(_timm(f"efficientnetv2_{k}", f"efficientnet_v2_{k}") for k in ("s", "m", "l", "xl")),
    *(_timm(f"tf_efficientnet_{k}", f"efficientnet_{k}", tf_port=True) for k in _EFFNET_V1 + _LITE),
    *(_timm(f"tf_efficientnetv2_{k}", f"efficientnet_v2_{k}", tf_port=True)
      for k in ("b0", "b1", "b2", "b3", "s", "m", "l", "xl")),
)
PEERS: dict[tuple[str, str], PeerArch] = {(p.source, p.name): p for p in _PEER_LIST}


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")


def peer_arch(source: str, name: str) -> PeerArch:
    """The :class:`PeerArch` for a peer model name (``"tf_efficientnet_b0"``) or an effnet zoo name.

    An effnet name resolves to the peer model with the same architecture and padding, preferring the
    one with the same name (``"efficientnet_b0"`` -> timm ``efficientnet_b0``, not the TF port).
    """
    _check_source(source)
    if (source, name) in PEERS:
        return PEERS[(source, name)]
    same_model = [p for p in _PEER_LIST
                  if p.source == source and p.model == name and p.padding == "symmetric"]
    if same_model:
        return same_model[0]
    known = [n for (s, n) in PEERS if s == source]
    raise ValueError(f"no effnet model holds {source} {name!r}{did_you_mean(name, known)} "
                     f"(supported: {', '.join(known)})")


# --- naming schemes ------------------------------------------------------------------------------
# A scheme yields (our module path, peer path for a conv-norm-act or plain module).  For a ConvNormAct
# the peer path is a pair (conv path, norm path), because peers keep conv and BN as siblings.

Pair = tuple[str, str]
SchemeItems = Iterator[tuple[str, "str | Pair"]]


def _se(ours: str, b: BlockSpec, reduce: str, expand: str) -> SchemeItems:
    if b.has_se:
        yield f"{ours}.se.reduce", reduce
        yield f"{ours}.se.expand", expand


def _unsupported(scheme: str, what: str) -> CheckpointError:
    return CheckpointError(f"the {scheme} naming scheme has no {what}; this model cannot be mapped to it")


def _ours(b: BlockSpec) -> str:
    return f"stages.{b.stage}.{b.position}"


def _head_and_classifier(plan: Plan, head: Pair, classifier: str) -> SchemeItems:
    if plan.head.conv_channels is not None:
        yield "head", head
    if plan.head.num_classes:
        yield "classifier", classifier


def _timm_scheme(plan: Plan) -> SchemeItems:
    yield "stem", ("conv_stem", "bn1")
    for b in plan.blocks:
        ours, p = _ours(b), f"blocks.{b.stage}.{b.position}"
        if b.block is BlockType.DEPTHWISE_SEPARABLE:  # timm DepthwiseSeparableConv with pw activation
            yield f"{ours}.depthwise", (f"{p}.conv_dw", f"{p}.bn1")
            yield f"{ours}.pointwise", (f"{p}.conv_pw", f"{p}.bn2")
        elif b.block is BlockType.MBCONV and not b.has_expand:
            # timm builds an expansion-1 MBConv as DepthwiseSeparableConv (dw -> se -> pw, linear).
            yield f"{ours}.depthwise", (f"{p}.conv_dw", f"{p}.bn1")
            yield from _se(ours, b, f"{p}.se.conv_reduce", f"{p}.se.conv_expand")
            yield f"{ours}.project", (f"{p}.conv_pw", f"{p}.bn2")
        elif b.block is BlockType.MBCONV:  # timm InvertedResidual
            yield f"{ours}.expand", (f"{p}.conv_pw", f"{p}.bn1")
            yield f"{ours}.depthwise", (f"{p}.conv_dw", f"{p}.bn2")
            yield from _se(ours, b, f"{p}.se.conv_reduce", f"{p}.se.conv_expand")
            yield f"{ours}.project", (f"{p}.conv_pwl", f"{p}.bn3")
        elif not b.has_project:  # Fused-MBConv with expansion 1: timm ConvBnAct
            if b.has_se:
                raise _unsupported("timm", "squeeze-excitation in an expansion-1 Fused-MBConv")
            yield f"{ours}.expand", (f"{p}.conv", f"{p}.bn1")
        else:  # Fused-MBConv: timm EdgeResidual
            yield f"{ours}.expand", (f"{p}.conv_exp", f"{p}.bn1")
            yield from _se(ours, b, f"{p}.se.conv_reduce", f"{p}.se.conv_expand")
            yield f"{ours}.project", (f"{p}.conv_pwl", f"{p}.bn2")
    yield from _head_and_classifier(plan, ("conv_head", "bn2"), "classifier")


def _torchvision_efficientnet_scheme(plan: Plan) -> SchemeItems:
    yield "stem", ("features.0.0", "features.0.1")
    for b in plan.blocks:
        ours, p = _ours(b), f"features.{b.stage + 1}.{b.position}.block"
        if b.block is BlockType.MBCONV:  # block = [expand], depthwise, [se], project
            parts = (["expand"] if b.has_expand else []) + ["depthwise"] + (["se"] if b.has_se else [])
            for k, part in enumerate(parts + ["project"]):
                if part == "se":
                    yield from _se(ours, b, f"{p}.{k}.fc1", f"{p}.{k}.fc2")
                else:
                    yield f"{ours}.{part}", (f"{p}.{k}.0", f"{p}.{k}.1")
        elif b.block is BlockType.FUSED_MBCONV:  # block = expand kxk, [project]
            if b.has_se:
                raise _unsupported("torchvision", "squeeze-excitation in Fused-MBConv")
            yield f"{ours}.expand", (f"{p}.0.0", f"{p}.0.1")
            if b.has_project:
                yield f"{ours}.project", (f"{p}.1.0", f"{p}.1.1")
        else:
            raise _unsupported("torchvision", f"block type {b.block.value} in EfficientNet")
    head = f"features.{plan.num_stages + 1}"
    yield from _head_and_classifier(plan, (f"{head}.0", f"{head}.1"), "classifier.1")


def _torchvision_mobilenet_v2_scheme(plan: Plan) -> SchemeItems:
    yield "stem", ("features.0.0", "features.0.1")
    for b in plan.blocks:  # torchvision keeps all blocks in one flat Sequential after the stem
        ours, p = _ours(b), f"features.{b.index + 1}.conv"
        if b.block is not BlockType.MBCONV or b.has_se:
            raise _unsupported("torchvision MobileNetV2", f"{b.block.value} or squeeze-excitation")
        k = 0
        if b.has_expand:
            yield f"{ours}.expand", (f"{p}.0.0", f"{p}.0.1")
            k = 1
        yield f"{ours}.depthwise", (f"{p}.{k}.0", f"{p}.{k}.1")
        yield f"{ours}.project", (f"{p}.{k + 1}", f"{p}.{k + 2}")  # bare conv and BN, no wrapper
    head = f"features.{len(plan.blocks) + 1}"
    yield from _head_and_classifier(plan, (f"{head}.0", f"{head}.1"), "classifier.1")


SCHEMES: dict[str, Callable[[Plan], SchemeItems]] = {
    "timm": _timm_scheme,
    "torchvision_efficientnet": _torchvision_efficientnet_scheme,
    "torchvision_mobilenet_v2": _torchvision_mobilenet_v2_scheme,
}


def key_map(model: EfficientConvNet, scheme: str) -> dict[str, str]:
    """Our state-dict key -> the peer's key, for every tensor of ``model``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown naming scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    modules = dict(model.named_modules())
    mapping: dict[str, str] = {}
    for ours, peer in SCHEMES[scheme](model.plan):
        module = modules[ours]
        if isinstance(peer, tuple):
            assert isinstance(module, ConvNormAct), ours
            conv, norm = peer
            mapping[f"{ours}.conv.weight"] = f"{conv}.weight"
            mapping.update({f"{ours}.norm.{k}": f"{norm}.{k}" for k in _BN_KEYS})
        else:
            mapping.update({f"{ours}.{k}": f"{peer}.{k}" for k in module.state_dict()})
    missed = set(model.state_dict()) - set(mapping)
    assert not missed, f"scheme {scheme} left keys unmapped: {sorted(missed)[:5]}"  # our invariant
    return mapping


# --- conversion ----------------------------------------------------------------------------------


def _listing(what: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{what} ({len(keys)}): {shown}{more}"


@functools.lru_cache(maxsize=8)
def _meta_model(config: ModelConfig) -> EfficientConvNet:
    """A shape-only model (cached: callers only read names and shapes from it)."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return EfficientConvNet(config)


def source_config(state_dict: Mapping[str, torch.Tensor], source: str, name: str) -> ModelConfig:
    """The effnet :class:`ModelConfig` that a ``source`` checkpoint of model ``name`` loads into.

    Settings come from :data:`PEERS`; ``num_classes`` and ``in_chans`` are read from the tensors
    (a checkpoint without classifier gives ``num_classes=0``).
    """
    peer = peer_arch(source, name)
    base = model_config(peer.model, **peer.model_kwargs())
    probe = key_map(_meta_model(base), peer.scheme)
    stem = state_dict.get(probe["stem.conv.weight"])
    in_chans = stem.shape[1] if isinstance(stem, torch.Tensor) and stem.ndim == 4 else base.in_chans
    # The classifier's width from its weight, else from its bias: a checkpoint missing one of the two
    # must be reported as missing that key, not turned into a headless model with "unexpected" leftovers.
    num_classes = 0
    for key, ndim in (("classifier.weight", 2), ("classifier.bias", 1)):
        fc = state_dict.get(probe[key]) if key in probe else None
        if isinstance(fc, torch.Tensor) and fc.ndim == ndim:
            num_classes = fc.shape[0]
            break
    return model_config(peer.model, num_classes=num_classes, in_chans=in_chans, **peer.model_kwargs())


def checked_rename(source_sd: Mapping[str, object], mapping: dict[str, str],
                   expected: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Rename ``source_sd`` through ``mapping`` (expected key -> source key) and check it whole."""
    wanted = set(mapping.values())
    missing = [src for ours, src in mapping.items()
               if src not in source_sd and not ours.endswith("num_batches_tracked")]
    unexpected = [k for k in source_sd if k not in wanted]
    not_tensor = [k for k in wanted if k in source_sd and not isinstance(source_sd[k], torch.Tensor)]
    shape = [f"{src} {tuple(source_sd[src].shape)} vs {tuple(expected[ours].shape)}"
             for ours, src in mapping.items()
             if isinstance(source_sd.get(src), torch.Tensor) and source_sd[src].shape != expected[ours].shape]
    problems = [_listing(w, ks) for w, ks in (("missing keys", missing), ("unexpected keys", unexpected),
                                              ("not tensors", not_tensor), ("shape mismatches", shape)) if ks]
    if problems:
        raise CheckpointError(f"{what} does not fit: " + "; ".join(problems))
    out = {}
    for ours, src in mapping.items():
        if src in source_sd:
            out[ours] = source_sd[src]
        else:  # checkpoints ported from TF or saved by old PyTorch have no BN step counter
            out[ours] = torch.zeros((), dtype=torch.long)
    return out


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str, model_name: str) -> dict:
    """A torchvision/timm state dict renamed for effnet; loads into ``EfficientConvNet(source_config(...))``.

    ``model_name`` is the peer's name (``"tf_efficientnet_b0"``, ``"mobilenet_v2"``) or the effnet zoo
    name.  Use :func:`source_config` (or ``create_model(model, **peer_arch(...).model_kwargs())``)
    for the model: TF ports need ``padding="same"`` and BN eps 1e-3.  Any missing, extra or
    mis-shaped key raises :class:`CheckpointError` naming them; nothing is loaded partially.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    peer = peer_arch(source, model_name)
    config = source_config(state_dict, source, model_name)
    model = _meta_model(config)
    mapping = key_map(model, peer.scheme)
    return checked_rename(state_dict, mapping, model.state_dict(), f"{source} {peer.name} checkpoint")


def export_peer(model: EfficientConvNet, target: str) -> PeerArch:
    """The ``target`` architecture that computes what ``model`` computes (same table and padding)."""
    _check_source(target)
    if not isinstance(model, EfficientConvNet):
        raise TypeError(f"model must be an effnet EfficientConvNet, got {type(model).__name__}")
    c = model.config
    candidates = [p for p in _PEER_LIST if p.source == target and p.model == c.name]
    if not candidates or model_config(c.name).spec != c.spec:
        have = sorted({p.model for p in _PEER_LIST if p.source == target})
        raise ValueError(f"{target} has no architecture equal to this model ({c.name!r} with its spec); "
                         f"exportable zoo models: {', '.join(have)}")
    same_padding = [p for p in candidates if p.padding == c.padding]
    if not same_padding:
        raise ValueError(f"{target} has no {c.name} with padding={c.padding!r}; "
                         f"available: {', '.join(f'{p.name} (padding={p.padding!r})' for p in candidates)}")
    exact = [p for p in same_padding if (p.bn_eps, p.bn_momentum) == (c.bn_eps, c.bn_momentum)]
    return (exact or same_padding)[0]


def export_state_dict(model: EfficientConvNet, target: str) -> dict:
    """Our model's state dict under torchvision or timm names, for the model :func:`export_peer` names.

    The tensors are the model's own (as ``state_dict()`` returns them).  BN eps/momentum are not in a
    state dict: build the peer with ``export_peer(model, target)``'s settings to get equal outputs.
    """
    peer = export_peer(model, target)
    mapping = key_map(model, peer.scheme)
    sd = model.state_dict()
    return {mapping[k]: v for k, v in sd.items()}
