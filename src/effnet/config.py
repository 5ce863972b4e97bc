"""The model configuration: everything needed to rebuild a network, as plain data (no torch)."""

from __future__ import annotations

import dataclasses
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
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATION_NAMES)}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.num_classes < 0 or self.in_chans < 1:
            raise ValueError(f"need num_classes >= 0 and in_chans >= 1, got {self.num_classes}, {self.in_chans}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "spec": self.spec.to_dict()}

    @staticmethod
    def from_dict(d: dict) -> ModelConfig:
        return ModelConfig(**{**d, "spec": NetSpec.from_dict(d["spec"])})
