"""One model class for every family: stem -> stages -> head conv -> pool -> dropout -> classifier."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from effnet.blocks import DepthwiseSeparable, FusedMBConv, MBConv
from effnet.layers import ACTIVATIONS, PADDINGS, ConvNormAct, drop_path_schedule
from effnet.tables import BlockType, NetSpec

BLOCKS = {
    BlockType.DEPTHWISE_SEPARABLE: DepthwiseSeparable,
    BlockType.MBCONV: MBConv,
    BlockType.FUSED_MBCONV: FusedMBConv,
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; JSON-serialisable through :meth:`to_dict`."""

    spec: NetSpec  # the (already scaled) architecture table
    num_classes: int = 1000  # classifier outputs; 0 gives a feature extractor with no classifier
    in_chans: int = 3  # channels of the input image
    activation: str = "silu"  # one of effnet.layers.ACTIVATIONS, used in every block and in SE
    drop_rate: float = 0.2  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth of the last block; earlier blocks get a linear share
    bn_eps: float = 1e-5  # BatchNorm epsilon: 1e-3 for TensorFlow-trained weights
    bn_momentum: float = 0.1  # PyTorch convention: TF's decay 0.99 is momentum 0.01 here
    padding: str = "symmetric"  # "same" reproduces TensorFlow's asymmetric padding at stride 2
    resolution: int = 224  # default (evaluation) input size; other sizes work too
    name: str | None = field(default=None, compare=False)  # zoo name, when built from the zoo

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
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


class EfficientConvNet(nn.Module):
    """MobileNetV1/V2, EfficientNet (B0-L2, Lite) and EfficientNetV2, built from a :class:`NetSpec`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        spec, c = config.spec, config
        norm = {"bn_eps": c.bn_eps, "bn_momentum": c.bn_momentum}
        self.stem = ConvNormAct(c.in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride,
                                activation=c.activation, padding=c.padding, **norm)

        rates = iter(drop_path_schedule(c.drop_path_rate, sum(s.repeats for s in spec.stages)))
        stages, in_ch = [], spec.stem_channels
        stride = spec.stem_stride
        self.feature_info: list[dict] = []  # per stage: output stride and channels
        for i, stage in enumerate(spec.stages):
            blocks = []
            for j in range(stage.repeats):
                block_kwargs = dict(kernel=stage.kernel, stride=stage.stride if j == 0 else 1,
                                    activation=c.activation, padding=c.padding, **norm)
                rate = next(rates)
                if stage.block is not BlockType.DEPTHWISE_SEPARABLE:
                    block_kwargs.update(expand_ratio=stage.expand_ratio, se_ratio=stage.se_ratio,
                                        drop_path_rate=rate)
                blocks.append(BLOCKS[stage.block](in_ch, stage.out_channels, **block_kwargs))
                in_ch = stage.out_channels
            stages.append(nn.Sequential(*blocks))
            stride *= stage.stride
            self.feature_info.append({"stage": i, "stride": stride, "channels": in_ch})
        self.stages = nn.Sequential(*stages)

        self.head = (nn.Identity() if spec.head_channels is None
                     else ConvNormAct(in_ch, spec.head_channels, 1, activation=c.activation, **norm))
        self.num_features = spec.head_channels or in_ch
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.drop_rate)
        self.classifier = nn.Linear(self.num_features, c.num_classes) if c.num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # The official TF initialisers, as torchvision and timm use them.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected input of shape (N, {self.config.in_chans}, H, W), got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> feature map after the head conv (before pooling)."""
        self._check_input(x)
        return self.head(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (or the pooled features when ``pre_logits``)."""
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features for a detection/segmentation backbone: one map per output stride.

        The last stage output at each stride, in increasing stride order (2, 4, 8, 16, 32 for every
        zoo model); :meth:`feature_strides` and :meth:`feature_channels` describe them.
        """
        self._check_input(x)
        x = self.stem(x)
        by_stride: dict[int, torch.Tensor] = {}
        for stage, info in zip(self.stages, self.feature_info):
            x = stage(x)
            by_stride[info["stride"]] = x
        return [by_stride[s] for s in sorted(by_stride)]

    def _last_per_stride(self) -> list[dict]:
        last = {info["stride"]: info for info in self.feature_info}
        return [last[s] for s in sorted(last)]

    def feature_strides(self) -> list[int]:
        return [info["stride"] for info in self._last_per_stride()]

    def feature_channels(self) -> list[int]:
        return [info["channels"] for info in self._last_per_stride()]
