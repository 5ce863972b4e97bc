"""Counting one forward pass: a dispatch mode sees every aten op, module hooks say which module runs it.

Ops inside a leaf module add up to one record named by the module's path; ops run directly in a
container's ``forward`` become records of their own, ``<module path>.<op>``.  Where each record
sits and what it is comes from :mod:`effnet.analysis.roles` (the block plan for effnet's models).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from effnet.analysis.records import LayerRecord
from effnet.analysis.roles import Place, places

# aten op names (overload packet, leading/trailing underscores stripped) by the role they play.
_CONV_OPS = {"convolution", "cudnn_convolution", "convolution_overrideable", "slow_conv2d_forward",
             "mkldnn_convolution"}
_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm"}
_POOL_OPS = {"mean", "adaptive_avg_pool2d", "adaptive_avg_pool1d", "adaptive_max_pool2d", "avg_pool2d",
             "avg_pool1d", "max_pool2d_with_indices", "max_pool2d", "max_pool1d", "amax"}
_ADD_OPS = {"add", "sub"}
_NORM_ACT_OPS = {
    "native_batch_norm", "native_batch_norm_legit_no_training", "native_batch_norm_legit", "batch_norm",
    "cudnn_batch_norm", "native_layer_norm", "native_group_norm", "relu", "relu6", "hardtanh", "silu",
    "sigmoid", "hardswish", "hardsigmoid", "gelu", "tanh", "leaky_relu", "elu", "mish", "softmax",
    "log_softmax", "clamp", "clamp_min", "clamp_max",
}
# Ops that allocate or re-describe memory without touching data.
_FREE_OPS = {"empty", "empty_like", "empty_strided", "detach", "lift_fresh", "alias", "zeros", "ones",
             "new_empty", "new_empty_strided", "full", "resize"}
def _op_name(func) -> str:
    return func.overloadpacket.__name__.strip("_")


def _tensors(tree) -> list[torch.Tensor]:
    """Distinct tensors (by identity) in a nested structure of args."""
    seen, out = set(), []
    for t in tree_flatten(tree)[0]:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _matmul_macs(name: str, args: tuple, out: torch.Tensor) -> int:
    a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
    # (…, m, k) @ (…, k, n): out has (…, m, n) elements, each k multiply-accumulates.
    return out.numel() * a.shape[-1] if b.shape[-2] == a.shape[-1] else 0


def _conv_kind(weight_shape: torch.Size, groups: int, transposed: bool, in_fused: bool) -> str:
    c_out, c_in_per_group, *kernel = weight_shape
    if transposed:
        return "conv"
    c_in = c_in_per_group * groups
    if groups > 1 and groups == c_in == c_out:
        return "depthwise"
    if groups == 1 and all(k == 1 for k in kernel):
        return "pointwise"
    if groups == 1 and in_fused:
        return "fused-conv"
    return "conv"


class _Builder:
    """A record being filled in while its module or op runs."""

    def __init__(self, path: str, module_path: str, inputs: list[torch.Tensor]) -> None:
        self.path, self.module_path = path, module_path
        self.inputs = inputs
        self.outputs: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []
        self.params = 0
        self.macs = 0
        self.roles: set[str] = set()  # which kinds of op ran inside
        self.ops = 0  # aten ops that touched data; a module with none (nn.Identity, eval Dropout) is no layer
        self.conv_kind: str | None = None
        self.place: Place | None = None  # where it sits and what it is: set by the counter


class Counter(TorchDispatchMode):
    """Dispatch mode plus module hooks that turn one forward pass into builders."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.itemsize = dtype.itemsize
        self.stack: list[tuple[str, nn.Module, _Builder | None]] = []
        self.builders: list[_Builder] = []
        self.seen_params: set[int] = set()
        self.name_count: dict[str, int] = {}
        self.handles = []
        self.leaves = {id(m) for m in model.modules() if next(m.children(), None) is None}
        self.places = places(model)
        for path, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post_hook(), with_kwargs=True, always_call=True))

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()

    def _unique(self, name: str) -> str:
        """``name`` the first time, then ``name#1``, ``name#2``: a module called again gets a new record."""
        n = self.name_count.get(name, 0)
        self.name_count[name] = n + 1
        return name if n == 0 else f"{name}#{n}"

    def _take(self, b: _Builder, params: Iterable[nn.Parameter]) -> None:
        """Parameters read by ``b``: weights it moves, and params it counts unless counted before (tied)."""
        for p in params:
            b.weights.append(p)
            if id(p) not in self.seen_params:
                self.seen_params.add(id(p))
                b.params += p.numel()

    def _pre_hook(self, path: str):
        def hook(module: nn.Module, args, kwargs):
            builder = None
            if id(module) in self.leaves:  # a leaf: everything inside is one record
                builder = _Builder(self._unique(path), path, _tensors((args, kwargs)))
                builder.place = self.places[path]
                self._take(builder, module.parameters())
                builder.weights += [b for b in module.buffers() if b.is_floating_point()]
                self.builders.append(builder)
            self.stack.append((path, module, builder))
        return hook

    def _post_hook(self):
        def hook(module: nn.Module, args, kwargs, output):
            _path, m, builder = self.stack.pop()
            assert m is module, "module hooks out of order"
            if builder is not None:
                builder.outputs = _tensors(output)
        return hook

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _op_name(func)
        if func.is_view or name in _FREE_OPS:
            return out
        b = self.stack[-1][2] if self.stack else None
        if b is None:  # a functional op in a container's forward: a record of its own
            inputs = _tensors((args, kwargs))
            if not inputs:
                return out
            module_path = self.stack[-1][0] if self.stack else ""
            b = _Builder(self._unique(f"{module_path}.{name}" if module_path else name), module_path,
                            [t for t in inputs if not isinstance(t, nn.Parameter)])
            b.place = self.places[module_path]
            self._take(b, (p for p in inputs if isinstance(p, nn.Parameter)))
            b.outputs = _tensors(out)
            self.builders.append(b)
        self._count(b, name, args, kwargs, out)
        return out

    def _count(self, b: _Builder, name: str, args: tuple, kwargs: dict, out) -> None:
        b.ops += 1
        if name in _CONV_OPS:
            x, w = args[0], args[1]
            transposed, groups = bool(args[6]), int(args[8])
            # Same rule as FlopCounterMode: per output (input, if transposed) point, a filter's worth.
            b.macs += (x if transposed else out).numel() * math.prod(w.shape[1:])
            b.roles.add("conv")
            b.conv_kind = b.place.conv_kind or _conv_kind(w.shape, groups, transposed, b.place.fused)
        elif name in _MATMUL_OPS:
            b.macs += _matmul_macs(name, args, out)
            b.roles.add("linear")
        elif name in _POOL_OPS:
            b.roles.add("pool")
        elif name in _ADD_OPS and sum(isinstance(a, torch.Tensor) and a.dim() > 0 for a in args) >= 2:
            b.roles.add("add")
        elif name in _NORM_ACT_OPS:
            b.roles.add("norm-act")

    def finish(self) -> list[LayerRecord]:
        records = [self._record(b) for b in self.builders if b.ops or b.params]
        records += self._unused_params()
        return records

    def _record(self, b: _Builder) -> LayerRecord:
        if b.place.in_se:
            kind = "se"
        elif "conv" in b.roles:
            kind = b.conv_kind or "conv"
        else:
            kind = next((k for k in ("linear", "pool", "add", "norm-act") if k in b.roles), "other")
        place = b.place
        return LayerRecord(
            name=b.path,
            kind=kind,
            input_shape=tuple(b.inputs[0].shape) if b.inputs else (),
            output_shape=tuple(b.outputs[0].shape) if b.outputs else (),
            params=b.params,
            macs=b.macs,
            activations=sum(t.numel() for t in b.outputs),
            bytes_read=self.itemsize * (sum(t.numel() for t in b.inputs) + sum(t.numel() for t in b.weights)),
            bytes_written=self.itemsize * sum(t.numel() for t in b.outputs),
            block=place.block,
            stage=place.stage,
            role=place.role,
        )

    def _unused_params(self) -> list[LayerRecord]:
        """Modules whose parameters no op read (a head the forward skips): listed so params still add up."""
        records = []
        for path, m in self.model.named_modules():
            unseen = [p for p in m.parameters(recurse=False) if id(p) not in self.seen_params]
            if unseen:
                self.seen_params.update(id(p) for p in unseen)
                place = self.places[path]
                records.append(LayerRecord(self._unique(path), "other", (), (), sum(p.numel() for p in unseen),
                                           0, 0, 0, 0, place.block, place.stage, place.role))
        return records
