"""The zoo: one plain dict from model name to recipe, and ``create_model``.

A :class:`Family` says how a base table scales (rounding rule, what stays fixed, activation);
a :class:`Recipe` says how far one member is scaled and how it is regularised.  Every name is
generated from the coefficient tables, not written out as a builder function of its own.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from effnet import tables
from effnet.config import ModelConfig
from effnet.model import EfficientConvNet
from effnet.scaling import (
    EFFICIENTNET_COEFFICIENTS,
    EFFICIENTNET_LITE_COEFFICIENTS,
    EFFICIENTNET_V2_B_COEFFICIENTS,
    Coefficients,
    compound_coefficients,
    scale_spec,
)
from effnet.tables import NetSpec


@dataclass(frozen=True)
class Family:
    """How one family's base table is scaled and which activation its released models use."""

    base: NetSpec
    activation: str
    round_limit: float = 0.9  # the 10% round-up rule of make_divisible; 0 switches it off
    fixed_stem_head: bool = False  # EfficientNet-Lite: stem and head keep their width
    fixed_first_last_depth: bool = False  # EfficientNet-Lite: first and last stage keep their depth
    head_grows_only: bool = False  # MobileNetV2: the 1280 head widens for width > 1, never narrows


FAMILIES: dict[str, Family] = {
    # ReLU6 as in the released TF-slim/Keras models; the paper writes ReLU (override activation="relu").
    "mobilenet_v1": Family(tables.MOBILENET_V1, "relu6"),
    "mobilenet_v2": Family(tables.MOBILENET_V2, "relu6", head_grows_only=True),
    "efficientnet": Family(tables.EFFICIENTNET_B0, "silu"),
    "efficientnet_lite": Family(tables.EFFICIENTNET_LITE0, "relu6", fixed_stem_head=True,
                                fixed_first_last_depth=True),
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
    drop_rate: float
    drop_path_rate: float
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1

    def spec(self) -> NetSpec:
        """The scaled architecture table."""
        f = FAMILIES[self.family]
        return scale_spec(
            f.base,
            self.width,
            self.depth,
            round_limit=f.round_limit,
            stem_width=1.0 if f.fixed_stem_head else None,
            head_width=1.0 if f.fixed_stem_head else (max(1.0, self.width) if f.head_grows_only else None),
            fix_first_last_depth=f.fixed_first_last_depth,
        )


def _from_coefficients(family: str, c: Coefficients, drop_path_rate: float, bn_eps: float) -> Recipe:
    return Recipe(family, c.width, c.depth, c.resolution, c.dropout, drop_path_rate, bn_eps)


MODELS: dict[str, Recipe] = {
    **{f"mobilenet_v1_{round(w * 100):03d}": Recipe("mobilenet_v1", w, 1.0, 224, 1e-3, 0.0)
       for w in (0.25, 0.5, 0.75, 1.0)},
    **{f"mobilenet_v2_{round(w * 100):03d}": Recipe("mobilenet_v2", w, 1.0, 224, 0.2, 0.0)
       for w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)},
    # BN eps: torchvision's PyTorch-trained B0-B4 use PyTorch's 1e-5; B5 and up were trained in TF (1e-3).
    **{f"efficientnet_{k}": _from_coefficients("efficientnet", c, 0.2, 1e-5 if k in ("b0", "b1", "b2", "b3", "b4") else 1e-3)
       for k, c in EFFICIENTNET_COEFFICIENTS.items()},
    **{f"efficientnet_{k}": _from_coefficients("efficientnet_lite", c, 0.2, 1e-3)
       for k, c in EFFICIENTNET_LITE_COEFFICIENTS.items()},
    **{f"efficientnet_v2_{k}": _from_coefficients("efficientnet_v2_b0", c, 0.2, 1e-3)
       for k, c in EFFICIENTNET_V2_B_COEFFICIENTS.items()},
    # EfficientNetV2 S-XL: evaluation resolution and dropout from the official configs (paper Table 7).
    **{f"efficientnet_v2_{k}": Recipe(f"efficientnet_v2_{k}", 1.0, 1.0, res, drop, 0.2, 1e-3)
       for k, res, drop in (("s", 384, 0.2), ("m", 480, 0.3), ("l", 480, 0.4), ("xl", 512, 0.4))},
}

# Keyword overrides create_model accepts beyond its named arguments.
OVERRIDES = ("width", "depth", "resolution", "phi", "activation", "bn_eps", "bn_momentum")


def list_models(pattern: str = "*") -> list[str]:
    """Names in the zoo, optionally filtered by a shell-style pattern (``"efficientnet_b*"``)."""
    import fnmatch

    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def get_recipe(name: str) -> Recipe:
    """The recipe for ``name``; unknown names get a ValueError that suggests close matches."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (effnet.list_models() lists all {len(MODELS)})")
    return MODELS[name]


def model_config(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    padding: str = "symmetric",
    **overrides,
) -> ModelConfig:
    """The :class:`ModelConfig` that :func:`create_model` builds, without building it."""
    recipe = get_recipe(name)
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"unknown override(s) {', '.join(unknown)} for {name!r}; allowed: {', '.join(OVERRIDES)}")
    family = FAMILIES[recipe.family]
    if "phi" in overrides:
        if recipe.family not in ("efficientnet", "efficientnet_lite"):
            raise ValueError(f"phi (compound scaling) applies to EfficientNet and EfficientNet-Lite, not {name!r}")
        c = compound_coefficients(overrides.pop("phi"))
        recipe = replace(recipe, width=c.width, depth=c.depth, resolution=c.resolution)
    recipe = replace(recipe, **{k: overrides.pop(k) for k in ("width", "depth", "resolution", "bn_eps",
                                                              "bn_momentum") if k in overrides})
    if not (isinstance(recipe.resolution, int) and recipe.resolution >= 1):
        raise ValueError(f"resolution must be a positive integer, got {recipe.resolution!r}")
    return ModelConfig(
        spec=recipe.spec(),
        num_classes=num_classes,
        in_chans=in_chans,
        activation=overrides.pop("activation", family.activation),
        drop_rate=recipe.drop_rate if drop_rate is None else drop_rate,
        drop_path_rate=recipe.drop_path_rate if drop_path_rate is None else drop_path_rate,
        bn_eps=recipe.bn_eps,
        bn_momentum=recipe.bn_momentum,
        padding=padding,
        resolution=recipe.resolution,
        name=name,
    )


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    padding: str = "symmetric",
    **overrides,
) -> EfficientConvNet:
    """Build a zoo model by name, e.g. ``create_model("efficientnet_b1")``.

    ``drop_rate``/``drop_path_rate`` default to the recipe's; ``padding="same"`` gives TensorFlow's
    SAME padding for TF-trained weights.  Overrides: ``width``, ``depth`` (multipliers on the
    recipe's table), ``resolution``, ``phi`` (compound scaling, EfficientNet and Lite),
    ``activation``, ``bn_eps``, ``bn_momentum``.  (``effnet.create_model`` adds ``weights=``.)
    """
    config = model_config(name, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                          drop_path_rate=drop_path_rate, padding=padding, **overrides)
    return EfficientConvNet(config)


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
    (``create_model("efficientnet_b1")``).  ``kwargs`` go to :func:`create_model`.
    """
    c = compound_coefficients(phi, alpha=alpha, beta=beta, gamma=gamma)
    base = "efficientnet_lite0" if lite else "efficientnet_b0"
    return create_model(base, width=c.width, depth=c.depth, resolution=c.resolution, **kwargs)
