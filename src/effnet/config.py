"""The model configuration: everything needed to rebuild a network, as plain data (no torch)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from effnet.tables import NetSpec

# Activation names every layer understands; effnet.layers maps them to modules, the runtime to kernels.
ACTIVATION_NAMES = ("relu", "relu6", "silu", "hardswish")
PADDINGS = ("symmetric", "same")  # "same": TensorFlow's asymmetric padding at stride 2


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; JSON-serialisable through :meth:`to_dict`."""

    spec: NetSpec  # the (already scaled) architecture table
    num_classes: int = 1000  # classifier outputs; 0 gives a feature extractor with no classifier
    in_chans: int = 3  # channels of the input image
    activation: str = "silu"  # one of ACTIVATION_NAMES, used in every block and in SE
    drop_rate: float = 0.2  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth of the last block; earlier blocks get a linear share
    bn_eps: float = 1e-5  # BatchNorm epsilon: 1e-3 for TensorFlow-trained weights
    bn_momentum: float = 0.1  # PyTorch convention: TF's decay 0.99 is momentum 0.01 here
    padding: str = "symmetric"  # "same" reproduces TensorFlow's asymmetric padding at stride 2
    resolution: int = 224  # default (evaluation) input size; other sizes work too
    name: str | None = field(default=None, compare=False)  # zoo name, when built from the zoo

    def __post_init__(self) -> None:
        # The public edge: every field a user can pass is checked for type and range here, so a bad
        # value fails with one line naming it, not inside torch (num_classes=2.5, in_chans="3", ...).
        if not isinstance(self.spec, NetSpec):
            raise TypeError(f"spec must be a NetSpec, got {type(self.spec).__name__}")
        self._set("num_classes", _integer("num_classes", self.num_classes, 0))
        self._set("in_chans", _integer("in_chans", self.in_chans, 1))
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATION_NAMES)}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        self._set("drop_rate", _real("drop_rate", self.drop_rate, 0.0, 1.0, "[0, 1)", upper_open=True))
        self._set("drop_path_rate", _real("drop_path_rate", self.drop_path_rate, 0.0, 1.0, "[0, 1)", upper_open=True))
        self._set("bn_eps", _real("bn_eps", self.bn_eps, 0.0, 1.0, "(0, 1]", lower_open=True))
        self._set("bn_momentum", _real("bn_momentum", self.bn_momentum, 0.0, 1.0, "[0, 1]"))
        stride = self.spec.output_stride
        self._set("resolution", _integer("resolution", self.resolution, stride,
                                         " (the total stride of this network; smaller inputs see only padding)"))
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a string or None, got {type(self.name).__name__}")

    def _set(self, field_name: str, value) -> None:
        object.__setattr__(self, field_name, value)  # frozen: store the checked, plain-Python value

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "spec": self.spec.to_dict()}

    @staticmethod
    def from_dict(d: dict) -> ModelConfig:
        return ModelConfig(**{**d, "spec": NetSpec.from_dict(d["spec"])})


def _integer(name: str, value, minimum: int, why: str = "") -> int:
    """``value`` as a plain int (numpy integers accepted) at least ``minimum``; else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, got {value}")
    return int(value)


def _real(name: str, value, low: float, high: float, shown: str, *, lower_open: bool = False,
          upper_open: bool = False) -> float:
    """``value`` as a float inside ``shown`` (the interval as the message writes it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {shown}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not (math.isfinite(v) and (v > low if lower_open else v >= low) and (v < high if upper_open else v <= high)):
        raise ValueError(f"{name} must be in {shown}, got {value}")
    return v
