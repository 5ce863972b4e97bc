"""One model class for every family: stem -> stages -> head conv -> pool -> dropout -> classifier."""

from __future__ import annotations

import torch
from torch import nn

from effnet.blocks import build_block
from effnet.config import ModelConfig
from effnet.layers import ConvNormAct
from effnet.plan import expand

__all__ = ["EfficientConvNet", "ModelConfig"]


class EfficientConvNet(nn.Module):
    """MobileNetV1/V2, EfficientNet (B0-L2, Lite) and EfficientNetV2, built from a :class:`NetSpec`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.plan = plan = expand(config)  # every block's widths, stride, SE, shortcut and drop rate
        norm = {"bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}
        st = plan.stem
        self.stem = ConvNormAct(st.in_channels, st.out_channels, st.kernel, st.stride, activation=st.activation,
                                padding=st.padding, **norm)
        self.stages = nn.Sequential(*(
            nn.Sequential(*(build_block(b, bn_momentum=config.bn_momentum) for b in plan.stage_blocks(s)))
            for s in range(plan.num_stages)))
        hd = plan.head
        self.head = (nn.Identity() if hd.conv_channels is None
                     else ConvNormAct(hd.in_channels, hd.conv_channels, 1, activation=hd.activation, **norm))
        self.num_features = hd.num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(hd.drop_rate)
        self.classifier = nn.Linear(hd.num_features, hd.num_classes) if hd.num_classes else nn.Identity()
        self._init_weights()

    @property
    def feature_info(self) -> list[dict]:
        """Per stage: output stride and channels (from the plan)."""
        return self.plan.feature_info()

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

    @property
    def min_input_size(self) -> int:
        """The smallest input side: the total stride, below which the last stage would see only padding."""
        return self.plan.output_stride

    def _check_input(self, x: torch.Tensor) -> None:
        """One clear error for a wrong type, layout, dtype or size, instead of torch's from deep inside."""
        name = self.config.name or "this model"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} takes a torch.Tensor of shape (N, {self.config.in_chans}, H, W), "
                            f"got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected input of shape (N, {self.config.in_chans}, H, W), got {tuple(x.shape)}")
        weight = self.stem.conv.weight.dtype
        if not x.is_floating_point():
            raise TypeError(f"{name} takes floating-point images ({str(weight).removeprefix('torch.')}), got "
                            f"{str(x.dtype).removeprefix('torch.')}: convert with x.float() / 255, then normalise "
                            "with the training mean and std")
        if x.dtype != weight and not torch.is_autocast_enabled(x.device.type):
            w, got = str(weight).removeprefix("torch."), str(x.dtype).removeprefix("torch.")
            raise TypeError(f"{name} has {w} weights but the input is {got}: convert with x.to(torch.{w}) "
                            f"(or the model with model.to(torch.{got}), or run under torch.autocast)")
        minimum = self.min_input_size
        if x.shape[-2] < minimum or x.shape[-1] < minimum:
            raise ValueError(f"input {x.shape[-2]}x{x.shape[-1]} is smaller than {name}'s minimum "
                             f"{minimum}x{minimum} (its total stride); resize the images to at least {minimum} px")

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
