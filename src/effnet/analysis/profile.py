"""Analytic per-layer complexity of any ``nn.Module``: params, MACs, activations, bytes and intensity.

One forward pass runs on the ``meta`` device (shapes only, no arithmetic, milliseconds even for
EfficientNet-L2 at 800 px) under a ``TorchDispatchMode`` that sees every aten op, while module
hooks keep the path of the module being run.  Ops inside a leaf module (a module with no children:
Conv2d, BatchNorm2d, ReLU, Linear, ...) add up to one record named by the module's qualified name;
ops run directly in a container's ``forward`` (the residual add, SE's mean and gating multiply)
become records of their own, named ``<module path>.<op>`` (e.g. ``stages.1.1.add``).

Conventions (those of the papers' "mult-adds" and of pycls/fvcore):
- MACs count convolutions and matrix products only (bias and elementwise ops are free), so the
  total is exactly half of ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs.
- Bytes model a layer that reads each input, weight and buffer once and writes its output once,
  every tensor at the profiled dtype: no cache reuse, no fusion.
- Activations are the output elements of each record (summed: what training keeps for backward,
  as an upper bound, since in-place activations share storage).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Layer kinds, in the order roll-ups list them.
KINDS = ("conv", "depthwise", "pointwise", "fused-conv", "se", "linear", "norm-act", "add", "pool", "other")

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
# Class names (lower case) that mark squeeze-excitation and fused blocks, ours and other libraries'.
_SE_NAMES = ("squeezeexcit", "squeezeexcite", "semodule", "selayer", "seblock")
_FUSED_NAMES = ("fused",)  # FusedMBConv here and in torchvision
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class LayerRecord:
    """One layer (a leaf module's call, or one functional op of a container) and its costs."""

    name: str  # qualified module name ("stages.1.0.depthwise.conv"), or "<module>.<op>" for functional ops
    kind: str  # one of KINDS
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int  # parameters first used here (shared ones are counted once)
    macs: int  # multiply-accumulates of convolutions and matrix products
    activations: int  # output elements
    bytes_read: int  # inputs + weights + buffers, each once, at the profiled dtype
    bytes_written: int  # outputs at the profiled dtype
    block: str | None  # enclosing block's qualified name, e.g. "stages.1.0"
    stage: str | None  # top-level grouping: "stem", "stages.1", "head", "classifier", ...

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    def as_dict(self) -> dict:
        """Fields plus the derived flops, bytes and intensity (JSON-ready)."""
        return {**asdict(self), "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "flops": self.flops, "bytes": self.bytes, "intensity": self.intensity}


def summarize(records: Iterable[LayerRecord]) -> dict:
    """Sums over ``records``: layers, params, macs, flops, activations, bytes and overall intensity."""
    s = {"layers": 0, "params": 0, "macs": 0, "activations": 0, "bytes_read": 0, "bytes_written": 0}
    for r in records:
        s["layers"] += 1
        for k in ("params", "macs", "activations", "bytes_read", "bytes_written"):
            s[k] += getattr(r, k)
    s["flops"] = 2 * s["macs"]
    s["bytes"] = s["bytes_read"] + s["bytes_written"]
    s["intensity"] = s["flops"] / s["bytes"] if s["bytes"] else 0.0
    return s


@dataclass
class Profile:
    """Per-layer records of one forward pass, with totals and roll-ups."""

    layers: list[LayerRecord]
    input_size: tuple[int, ...]  # full input shape, batch first
    dtype: torch.dtype

    def totals(self) -> dict:
        return summarize(self.layers)

    def _group(self, key) -> dict[str, dict]:
        groups: dict[str, list[LayerRecord]] = {}
        for r in self.layers:
            groups.setdefault(key(r), []).append(r)
        return {k: summarize(v) for k, v in groups.items()}

    def by_kind(self) -> dict[str, dict]:
        """Roll-up per layer kind, in :data:`KINDS` order."""
        groups = self._group(lambda r: r.kind)
        return {k: groups[k] for k in KINDS if k in groups}

    def by_block(self) -> dict[str, dict]:
        """Roll-up per block in execution order; layers outside any block are grouped by their stage."""
        return self._group(lambda r: r.block or r.stage or "(model)")

    def by_stage(self) -> dict[str, dict]:
        """Roll-up per top-level stage in execution order."""
        return self._group(lambda r: r.stage or "(model)")

    def get(self, name: str) -> LayerRecord:
        """The record called ``name``."""
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r} in this profile")


def profile(
    model: nn.Module,
    input_size: int | Sequence[int],
    dtype: torch.dtype = torch.float32,
    *,
    batch_size: int = 1,
    device: str = "meta",
) -> Profile:
    """Profile one forward pass of ``model`` in eval mode; the model is left as it was.

    ``input_size``: an int N (a square N x N image), ``(H, W)`` (channels taken from the model), or
    the full per-sample shape such as ``(C, H, W)``.  ``device="meta"`` counts analytically; another
    device runs the copy there for real, with random input.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (torch.float32, torch.bfloat16, ...), got {dtype!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    shape = (batch_size, *_sample_shape(model, input_size))
    device = torch.device(device)
    # A model already on meta in the right dtype runs as it is (put in eval mode for the pass, then
    # back); anything else runs as a copy, so the caller's weights and mode are never touched.
    work = model if _is_meta(model, dtype) and device.type == "meta" else _copy_to(model, device, dtype)
    modes = {m: m.training for m in work.modules()}
    work.eval()
    if device.type == "meta":
        x = torch.empty(shape, device=device, dtype=dtype)
    else:
        x = torch.randn(shape, device=device, dtype=dtype)
    counter = _Counter(work, dtype)
    try:
        with torch.no_grad(), counter:
            work(x)
    except (RuntimeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = " (an op with no meta kernel? try device='cpu')" if isinstance(e, NotImplementedError) else ""
        raise ValueError(f"forward pass failed for input shape {shape}: {first}{hint}") from e
    finally:
        counter.remove_hooks()
        for m, training in modes.items():
            m.training = training
    return Profile(counter.finish(), shape, dtype)


def _is_meta(model: nn.Module, dtype: torch.dtype) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.is_meta and (t.dtype == dtype or not t.is_floating_point()) for t in tensors)


def _sample_shape(model: nn.Module, input_size: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_size, bool):
        raise TypeError("input_size must be an int or a sequence of ints, got a bool")
    size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
    if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"input_size must be a positive int or a sequence of positive ints, got {input_size!r}")
    if len(size) == 1 and isinstance(input_size, int):
        size = (size[0], size[0])
    if len(size) == 2:  # (H, W): the channel count comes from the model
        size = (_in_channels(model), *size)
    return size


def _in_channels(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if isinstance(getattr(config, "in_chans", None), int):
        return config.in_chans
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    raise ValueError("cannot tell the model's input channels; pass input_size as (C, H, W)")


def _copy_to(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A deep copy on ``device``; for meta, tensors are replaced up front so no weight is ever copied."""
    if device.type != "meta":
        return copy.deepcopy(model).to(device=device, dtype=dtype)
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(_meta_like(p, dtype), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = _meta_like(b, dtype)
    return copy.deepcopy(model, memo)


def _meta_like(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty_like(t, device="meta", dtype=dtype if t.is_floating_point() else t.dtype)


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
        self.in_se = self.in_fused = False


class _Counter(TorchDispatchMode):
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

    def _flags(self, b: _Builder, extra: Iterable[nn.Module] = ()) -> None:
        names = [type(m).__name__.lower() for _, m, _ in self.stack] + [type(m).__name__.lower() for m in extra]
        b.in_se = any(n.startswith(_SE_NAMES) for n in names)
        b.in_fused = any(n.startswith(_FUSED_NAMES) for n in names)

    def _pre_hook(self, path: str):
        def hook(module: nn.Module, args, kwargs):
            builder = None
            if id(module) in self.leaves:  # a leaf: everything inside is one record
                builder = _Builder(self._unique(path), path, _tensors((args, kwargs)))
                self._flags(builder, (module,))
                for p in module.parameters():
                    builder.weights.append(p)
                    if id(p) not in self.seen_params:
                        self.seen_params.add(id(p))
                        builder.params += p.numel()
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
            self._flags(b)
            for p in inputs:
                if isinstance(p, nn.Parameter):
                    b.weights.append(p)
                    if id(p) not in self.seen_params:
                        self.seen_params.add(id(p))
                        b.params += p.numel()
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
            b.conv_kind = _conv_kind(w.shape, groups, transposed, b.in_fused)
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
        if b.in_se:
            kind = "se"
        elif "conv" in b.roles:
            kind = b.conv_kind or "conv"
        else:
            kind = next((k for k in ("linear", "pool", "add", "norm-act") if k in b.roles), "other")
        stage, block = self._stage_block(b.module_path)
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
            block=block,
            stage=stage,
        )

    def _unused_params(self) -> list[LayerRecord]:
        """Modules whose parameters no op read (a head the forward skips): listed so params still add up."""
        records = []
        for path, m in self.model.named_modules():
            unseen = [p for p in m.parameters(recurse=False) if id(p) not in self.seen_params]
            if unseen:
                self.seen_params.update(id(p) for p in unseen)
                stage, block = self._stage_block(path)
                records.append(LayerRecord(self._unique(path), "other", (), (), sum(p.numel() for p in unseen),
                                           0, 0, 0, 0, block, stage))
        return records

    def _stage_block(self, module_path: str) -> tuple[str | None, str | None]:
        """Stage: the top-level child, or its child when the top level is a list of lists (our ``stages``).
        Block: the child of a stage that is a plain list of blocks, else the stage itself if it has children."""
        if not module_path:
            return None, None
        parts = module_path.split(".")
        top = self.model.get_submodule(parts[0])
        depth = 1
        if type(top) in _CONTAINERS and any(type(c) in _CONTAINERS for c in top.children()):
            depth = min(2, len(parts))
        stage = ".".join(parts[:depth])
        stage_module = self.model.get_submodule(stage)
        if type(stage_module) in _CONTAINERS:
            block = ".".join(parts[: depth + 1]) if len(parts) > depth else None
        else:
            block = stage if any(True for _ in stage_module.children()) else None
        return stage, block
