"""The zoo: one plain dict from model name to recipe, and ``create_model``.

A :class:`Family` says how a base table scales (rounding rule, what stays fixed, activation);
a :class:`Recipe` says how far one member is scaled and how it is regularised.  Every name is
generated from the coefficient tables, not written out as a builder function of its own.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from effnet import tables
from effnet.config import ModelConfig
from effnet.model import EfficientConvNet
from effnet.scaling import (
    EFFICIENTNET_COEFFICIENTS,
    EFFICIENTNET_LITE_COEFFICIENTS,
    EFFICIENTNET_V2_B_COEFFICIENTS,
    Coefficients,
    ScalingRule,
    compound_coefficients,
    per_stage_multipliers,
    scale_spec,
)
from effnet.suggest import did_you_mean
from effnet.tables import NetSpec


@dataclass(frozen=True)
class Family:
    """How one family's base table is scaled and which activation its released models use."""

    base: NetSpec
    activation: str
    round_limit: float = 0.9  # the 10% round-up rule of make_divisible; 0 switches it off
    rule: ScalingRule = field(default_factory=ScalingRule)  # which parts follow the global width and depth


# EfficientNet-Lite (official lite builder): stem and head keep their width, the first and last
# stage their depth.  MobileNetV2 (paper Sec. 4): the 1280 head widens for width > 1, never narrows.
_LITE = ScalingRule(stage_depth=(0, 1, 1, 1, 1, 1, 0), stem_width=0, head_width=0)
_MOBILENET_V2 = ScalingRule(head_min_width=1.0)

FAMILIES: dict[str, Family] = {
    # ReLU6 as in the released TF-slim/Keras models; the paper writes ReLU (override activation="relu").
    "mobilenet_v1": Family(tables.MOBILENET_V1, "relu6"),
    "mobilenet_v2": Family(tables.MOBILENET_V2, "relu6", rule=_MOBILENET_V2),
    "efficientnet": Family(tables.EFFICIENTNET_B0, "silu"),
    "efficientnet_lite": Family(tables.EFFICIENTNET_LITE0, "relu6", rule=_LITE),
    # Official V2 round_filters has no 10% round-up rule.
    **{f"efficientnet_v2_{k}": Family(spec, "silu", round_limit=0.0) for k, spec in tables.EFFICIENTNET_V2.items()},
}


@dataclass(frozen=True)
class Recipe:
    """One zoo entry: a family scaled by (width, depth), its default resolution and regularisation."""

    family: str
    width: float
    depth: float
    resolution: int
    drop_rate: float  # dropout before the classifier
    drop_path_rate: float  # stochastic depth of the last block
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def spec(self, stage_width: Sequence[float] | None = None,
             stage_depth: Sequence[float] | None = None) -> NetSpec:
        """The scaled architecture table; per-stage multipliers act on top of the family's rule."""
        f = FAMILIES[self.family]
        n = len(f.base.stages)
        rule = f.rule.multipliers(self.width, self.depth, n)
        if stage_depth is not None:
            user = per_stage_multipliers("stage_depth", stage_depth, n)
            rule["stage_depth"] = tuple(r * u for r, u in zip(rule["stage_depth"], user))
        return scale_spec(f.base, self.width, self.depth, round_limit=f.round_limit, stage_width=stage_width,
                          **rule)


def _from_coefficients(family: str, c: Coefficients, drop_path_rate: float, bn_eps: float) -> Recipe:
    return Recipe(family, width=c.width, depth=c.depth, resolution=c.resolution, drop_rate=c.dropout,
                  drop_path_rate=drop_path_rate, bn_eps=bn_eps)


MODELS: dict[str, Recipe] = {
    # Keras/TF-slim MobileNetV1 keep 99.9% of the pooled features: dropout 1e-3.
    **{f"mobilenet_v1_{round(w * 100):03d}": Recipe("mobilenet_v1", width=w, depth=1.0, resolution=224,
                                                     drop_rate=1e-3, drop_path_rate=0.0)
       for w in (0.25, 0.5, 0.75, 1.0)},
    **{f"mobilenet_v2_{round(w * 100):03d}": Recipe("mobilenet_v2", width=w, depth=1.0, resolution=224,
                                                     drop_rate=0.2, drop_path_rate=0.0)
       for w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)},
    # BN eps: torchvision's PyTorch-trained B0-B4 use PyTorch's 1e-5; B5 and up were trained in TF (1e-3).
    **{f"efficientnet_{k}": _from_coefficients("efficientnet", c, 0.2, 1e-5 if k in ("b0", "b1", "b2", "b3", "b4") else 1e-3)
       for k, c in EFFICIENTNET_COEFFICIENTS.items()},
    **{f"efficientnet_{k}": _from_coefficients("efficientnet_lite", c, 0.2, 1e-3)
       for k, c in EFFICIENTNET_LITE_COEFFICIENTS.items()},
    **{f"efficientnet_v2_{k}": _from_coefficients("efficientnet_v2_b0", c, 0.2, 1e-3)
       for k, c in EFFICIENTNET_V2_B_COEFFICIENTS.items()},
    # EfficientNetV2 S-XL: evaluation resolution and dropout from the official configs (paper Table 7).
    **{f"efficientnet_v2_{k}": Recipe(f"efficientnet_v2_{k}", width=1.0, depth=1.0, resolution=res, drop_rate=drop,
                                      drop_path_rate=0.2, bn_eps=1e-3)
       for k, res, drop in (("s", 384, 0.2), ("m", 480, 0.3), ("l", 480, 0.4), ("xl", 512, 0.4))},
}

SPEC_FORMAT = "effnet-spec"  # a searched architecture saved as JSON (effnet search blocks)

# The base of each compound-scaled family: phi scales these, never an already scaled member.
COMPOUND_BASES = ("efficientnet_b0", "efficientnet_lite0")


def list_models(pattern: str = "*") -> list[str]:
    """Names in the zoo, optionally filtered by a shell-style pattern (``"efficientnet_b*"``)."""
    import fnmatch

    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def get_recipe(name: str) -> Recipe:
    """The recipe for ``name``; unknown names get a ValueError that suggests close matches."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in MODELS:
        hint = did_you_mean(name, MODELS)
        raise ValueError(f"unknown model {name!r}{hint} (effnet.list_models() lists all {len(MODELS)})")
    return MODELS[name]


def model_config(
    name: str | None = None,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    padding: str = "symmetric",
    width: float | None = None,
    depth: float | None = None,
    resolution: int | None = None,
    phi: float | None = None,
    stage_width: Sequence[float] | None = None,
    stage_depth: Sequence[float] | None = None,
    activation: str | None = None,
    bn_eps: float | None = None,
    bn_momentum: float | None = None,
    spec: NetSpec | dict | str | os.PathLike | None = None,
) -> ModelConfig:
    """The :class:`ModelConfig` of a zoo model, e.g. ``model_config("efficientnet_b1")``.

    ``drop_rate``/``drop_path_rate`` default to the recipe's; ``padding="same"`` gives TensorFlow's
    SAME padding for TF-trained weights.  ``width``/``depth`` replace the recipe's global
    multipliers; ``stage_width``/``stage_depth`` (one value per stage) multiply them per stage;
    ``resolution`` the default input size.  ``phi`` is compound scaling of a base network
    (``efficientnet_b0``, ``efficientnet_lite0``): the released B1-B7 have coefficients of their own,
    so ``phi`` on them is an error.  ``activation``, ``bn_eps``, ``bn_momentum`` override the recipe.
    ``spec``: a whole architecture table (a :class:`NetSpec`, its dict, or a spec JSON file as
    ``effnet search blocks`` saves it) that replaces the recipe's scaled table; ``name`` may then
    be left out when the file names its base model.
    """
    table = None
    if spec is not None:
        table, name = load_spec(spec, name)
        if any(v is not None for v in (width, depth, phi, stage_width, stage_depth)):
            raise ValueError("spec is a whole (already scaled) table: pass it without width, depth, phi or "
                             "stage multipliers")
    if name is None:
        raise TypeError("model_config needs a model name (or a spec file that names its base model)")
    recipe = get_recipe(name)
    family = FAMILIES[recipe.family]
    if phi is not None:
        if recipe.family not in ("efficientnet", "efficientnet_lite"):
            raise ValueError(f"phi (compound scaling) applies to EfficientNet and EfficientNet-Lite, not {name!r}")
        if name not in COMPOUND_BASES:
            raise ValueError(f"phi scales a base network ({' or '.join(COMPOUND_BASES)}); {name!r} already has its "
                             f"own width {recipe.width}, depth {recipe.depth}, {recipe.resolution} px, which phi "
                             f"would replace: use {COMPOUND_BASES[recipe.family == 'efficientnet_lite']} with phi")
        if width is not None or depth is not None:
            raise ValueError("phi sets width and depth; pass either phi or width/depth, not both")
        c = compound_coefficients(phi)
        recipe = replace(recipe, width=c.width, depth=c.depth, resolution=c.resolution)
    given = {"width": width, "depth": depth, "resolution": resolution, "bn_eps": bn_eps, "bn_momentum": bn_momentum}
    recipe = replace(recipe, **{k: v for k, v in given.items() if v is not None})
    if isinstance(recipe.resolution, bool) or not (isinstance(recipe.resolution, int) and recipe.resolution >= 1):
        raise ValueError(f"resolution must be a positive integer, got {recipe.resolution!r}")
    return ModelConfig(
        spec=table if table is not None else recipe.spec(stage_width, stage_depth),
        num_classes=num_classes,
        in_chans=in_chans,
        activation=family.activation if activation is None else activation,
        drop_rate=recipe.drop_rate if drop_rate is None else drop_rate,
        drop_path_rate=recipe.drop_path_rate if drop_path_rate is None else drop_path_rate,
        bn_eps=recipe.bn_eps,
        bn_momentum=recipe.bn_momentum,
        padding=padding,
        resolution=recipe.resolution,
        name=name,
    )


def load_spec(spec: NetSpec | dict | str | os.PathLike, name: str | None = None) -> tuple[NetSpec, str | None]:
    """A table from a :class:`NetSpec`, its dict, or a spec JSON file; and the base model name it carries.

    A spec file is ``{"format": "effnet-spec", "base": <zoo name>, "resolution": <px>, "spec": <NetSpec dict>}``;
    an explicit ``name`` wins over the file's ``base``.
    """
    if isinstance(spec, NetSpec):
        return spec, name
    if isinstance(spec, (str, os.PathLike)):
        try:
            doc = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read spec file {spec}: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != SPEC_FORMAT or "spec" not in doc:
            raise ValueError(f"{spec} is not an effnet spec file (expected format {SPEC_FORMAT!r} with a 'spec' table)")
        return load_spec(doc["spec"], name or doc.get("base"))[0], name or doc.get("base")
    if isinstance(spec, dict):
        try:
            return NetSpec.from_dict(spec), name
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed spec table ({type(e).__name__}: {e})") from None
    raise TypeError(f"spec must be a NetSpec, a dict or a spec file path, got {type(spec).__name__}")


def create_model(name: str | None = None, **kwargs) -> EfficientConvNet:
    """Build a zoo model by name, e.g. ``create_model("efficientnet_b1")``: ``EfficientConvNet(model_config(...))``.

    Takes exactly :func:`model_config`'s arguments.  (``effnet.create_model`` adds ``weights=``.)
    """
    allowed = list(inspect.signature(model_config).parameters)[1:]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"unknown argument(s) {', '.join(unknown)} for {name!r}; allowed: {', '.join(allowed)}")
    return EfficientConvNet(model_config(name, **kwargs))


create_model.__signature__ = inspect.signature(model_config).replace(  # type: ignore[attr-defined]
    return_annotation=EfficientConvNet)


def efficientnet_name(phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15,
                      lite: bool = False) -> str:
    """The config name of a formula-scaled EfficientNet: ``efficientnet_phi1.5`` (coefficients if not the paper's)."""
    name = f"efficientnet_{'lite_' if lite else ''}phi{phi:g}"
    if (alpha, beta, gamma) != (1.2, 1.1, 1.15):
        name += f"_a{alpha:g}_b{beta:g}_g{gamma:g}"
    return name


def efficientnet(
    phi: float = 0.0,
    *,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    lite: bool = False,
    **kwargs,
) -> EfficientConvNet:
    """An EfficientNet by the compound scaling formula: depth alpha**phi, width beta**phi,
    resolution gamma**phi times B0's (any real ``phi``; custom alpha, beta, gamma).

    This is the paper's *formula*; the released B1-B7 are a lookup table instead
    (``create_model("efficientnet_b1")``).  ``kwargs`` go to :func:`model_config`.  The config is
    named ``efficientnet_phi<phi>`` and carries the whole table, so a saved model rebuilds.
    """
    c = compound_coefficients(phi, alpha=alpha, beta=beta, gamma=gamma)
    base = COMPOUND_BASES[1] if lite else COMPOUND_BASES[0]
    config = model_config(base, width=c.width, depth=c.depth, resolution=c.resolution, **kwargs)
    return EfficientConvNet(replace(config, name=efficientnet_name(phi, alpha, beta, gamma, lite)))
