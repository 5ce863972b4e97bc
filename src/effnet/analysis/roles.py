"""Where a layer sits (stage, block) and what it is (its role in the block, the kind of its conv).

For effnet's own models the block plan says it: ``model.plan`` (and a lone block's ``spec``) names
every block's type, so the role of a module follows from its path -- ``stages.2.1.expand.conv`` is
the expansion conv of the block that ``plan.stage_blocks(2)[1]`` describes, a 1x1 conv in an MBConv
and a kxk one in a Fused-MBConv.  Nothing is guessed from class names.

Any other ``nn.Module`` (torchvision, timm) takes the generic path: stages and blocks from the
module tree's shape, squeeze-excitation and fused blocks from class names, conv kinds from the
weight's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from effnet.blocks import BLOCKS
from effnet.model import EfficientConvNet
from effnet.plan import BlockSpec
from effnet.tables import BlockType

# Class names (lower case) that mark squeeze-excitation and fused blocks in other libraries' models.
_SE_NAMES = ("squeezeexcit", "squeezeexcite", "semodule", "selayer", "seblock")
_FUSED_NAMES = ("fused",)  # torchvision's FusedMBConv, timm's EdgeResidual is caught by shape
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Roles outside the blocks, by the model's top-level attribute.
_TOP_ROLES = {"stem": "stem", "head": "head", "pool": "pool", "dropout": "dropout", "classifier": "classifier"}


@dataclass(frozen=True)
class Place:
    """What the profile needs to know about the module a record comes from."""

    stage: str | None  # top-level grouping: "stem", "stages.1", "head", "classifier", ...
    block: str | None  # the enclosing block's path, e.g. "stages.1.0"
    role: str | None  # plan models: "stem", "expand", "depthwise", "se", "project", "pointwise", "shortcut", ...
    in_se: bool  # inside squeeze-excitation: every op of it is an "se" record
    conv_kind: str | None  # the kind of a conv run here, where the plan says it (else: by weight shape)
    fused: bool = False  # generic path: inside a fused block (a groups=1 kxk conv is "fused-conv")


def places(model: nn.Module) -> dict[str, Place]:
    """The place of every module of ``model``, by qualified name ("" is the model itself)."""
    if isinstance(model, EfficientConvNet):
        return _plan_places(model)
    if isinstance(model, tuple(BLOCKS.values())):
        return {path: _block_place(model.spec, path.split(".") if path else [], None, None)
                for path, _ in model.named_modules()}
    return _generic_places(model)


def _block_place(spec: BlockSpec, rest: list[str], stage: str | None, block: str | None) -> Place:
    """Inside one block: ``rest`` is the path below the block (``["expand", "conv"]``; ``[]`` is the block itself)."""
    role = rest[0] if rest else "shortcut"  # the block's own ops: the residual add
    conv = {"expand": "fused-conv" if spec.block is BlockType.FUSED_MBCONV else "pointwise",
            "depthwise": "depthwise", "pointwise": "pointwise", "project": "pointwise"}.get(role)
    return Place(stage, block, role, role == "se", conv)


def _plan_places(model: EfficientConvNet) -> dict[str, Place]:
    out: dict[str, Place] = {}
    for path, _ in model.named_modules():
        parts = path.split(".") if path else []
        if not parts:
            out[path] = Place(None, None, None, False, None)
        elif parts[0] == "stages" and len(parts) >= 3:
            s, j = int(parts[1]), int(parts[2])
            spec = model.plan.stage_blocks(s)[j]
            out[path] = _block_place(spec, parts[3:], f"stages.{s}", f"stages.{s}.{j}")
        elif parts[0] == "stages":
            out[path] = Place(".".join(parts[:2]), None, None, False, None)
        else:
            role = _TOP_ROLES.get(parts[0], parts[0])
            conv = {"stem": "conv", "head": "pointwise"}.get(role)
            out[path] = Place(parts[0], None, role, False, conv)
    return out


def _generic_places(model: nn.Module) -> dict[str, Place]:
    out: dict[str, Place] = {}
    for path, _ in model.named_modules():
        parts = path.split(".") if path else []
        names = [type(model.get_submodule(".".join(parts[:i]))).__name__.lower() for i in range(len(parts) + 1)]
        stage, block = _stage_block(model, parts)
        out[path] = Place(stage, block, None, any(n.startswith(_SE_NAMES) for n in names), None,
                          any(n.startswith(_FUSED_NAMES) for n in names))
    return out


def _stage_block(model: nn.Module, parts: list[str]) -> tuple[str | None, str | None]:
    """Stage: the top-level child, or its child when the top level is a list of lists (timm's ``blocks``).
    Block: the child of a stage that is a plain list of blocks, else the stage itself if it has children."""
    if not parts:
        return None, None
    top = model.get_submodule(parts[0])
    depth = 1
    if type(top) in _CONTAINERS and any(type(c) in _CONTAINERS for c in top.children()):
        depth = min(2, len(parts))
    stage = ".".join(parts[:depth])
    stage_module = model.get_submodule(stage)
    if type(stage_module) in _CONTAINERS:
        block = ".".join(parts[: depth + 1]) if len(parts) > depth else None
    else:
        block = stage if any(True for _ in stage_module.children()) else None
    return stage, block
