"""The fused inference engine: a model's plan, BN-folded, executed block by block with Triton kernels.

``FusedNet(model)`` is an eval-only ``nn.Module`` drop-in: image batch [N, C, H, W] (channels_last,
bf16/fp16, on the GPU) -> logits (float32).  Per block kind (read from its BlockSpec):

- MBConv: [1x1 expand] -> depthwise (+ SE squeeze in the same pass) -> SE FCs -> 1x1 project with the
  SE gate applied to its A operand as it is loaded and the residual added in its epilogue.  A stride-1
  MBConv can run expand + depthwise as one kernel (``expand_depthwise``), and any MBConv can run the
  library's depthwise conv (cuDNN, no bias) with its bias and activation applied in the project GEMM's
  prologue (and the SE squeeze as one extra read), or compute the depthwise inside the project GEMM's
  prologue (``triton_dwproject``: the depthwise output never goes to memory; with SE a squeeze-only
  depthwise pass first, so the whole block is two passes over the expanded tensor); which way is used
  is timed per block shape on first use (``fuse_expand=None``, ``library_convs=None``,
  ``dw_project=None``) or forced (``dw_project=True``: depthwise in the project GEMM, before the other
  two flags; ``fuse_expand=True``: the fused kernel where there is one; ``library_convs=True``: the
  library's depthwise; False: never).
- Fused-MBConv: kxk conv + act + 1x1 project (+ residual) in one kernel when the expanded width fits a
  tile (<= 256; any width in ``triton_conv``'s kernels, which project it in chunks), or the library's
  conv (cuDNN, no bias) with its bias and activation applied in the project GEMM's
  prologue, again timed per shape (``library_convs=None``) or forced; with SE, conv then project GEMM.
- Depthwise-separable: depthwise, then pointwise with activation.
- Stem: implicit-GEMM conv for few input channels; head: 1x1 conv + act + global pool in one kernel,
  classifier through torch on the pooled [N, C] vector.
Each input shape is captured once as one CUDA graph and replayed (a graph and its memory are kept per
shape; ``cuda_graph=False`` launches kernel by kernel).  Weights are plain tensors, not parameters.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from effnet.analysis.timing import capture_graph
from effnet.kernels import fold as folding
from effnet.kernels import tune
from effnet.kernels.tune import interpreting
from effnet.layers import same_padding
from effnet.plan import Plan
from effnet.tables import BlockType

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
TORCH_ACTS = {"relu": F.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish}


def _load_ops():
    """The Triton kernels module; Triton is an optional dependency, imported only when an engine is built."""
    try:
        from effnet.kernels import triton_depthwise, triton_dwproject, triton_fused, triton_ops
    except ImportError as e:
        raise RuntimeError(f"the fused (triton) engine needs Triton, which is not importable here ({e}); "
                           "install it with `pip install triton` on a machine with a CUDA GPU") from None
    return SimpleNamespace(**{k: getattr(triton_ops, k) for k in ("ACT_CODES", "pointwise", "se_excite", "conv",
                                                                  "bias_act")},
                           depthwise=triton_depthwise.depthwise, pad_dw_weights=triton_depthwise.pad_weights,
                           squeeze=triton_depthwise.squeeze,
                           expand_depthwise=triton_fused.expand_depthwise, dw_project=triton_dwproject.dw_project)


def _library_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int,
                  pads: tuple[int, int, int, int], groups: int = 1) -> torch.Tensor:
    """A conv through PyTorch (cuDNN on the GPU) on NHWC ``x``; NHWC out, bias added, no activation."""
    xv = x.permute(0, 3, 1, 2)  # channels_last view: no copy
    if len(set(pads)) > 1:
        xv, pad = F.pad(xv, (pads[2], pads[3], pads[0], pads[1])), 0
    else:
        pad = pads[0]
    return F.conv2d(xv, w, b, stride, pad, groups=groups).permute(0, 2, 3, 1).contiguous()


def _out_hw(size_hw: tuple[int, int], kernel: int, stride: int, pads: tuple[int, int, int, int]) -> tuple[int, int]:
    return tuple((n + a + b - kernel) // stride + 1 for n, a, b in zip(size_hw, pads[::2], pads[1::2]))


def _pads(size_hw: tuple[int, int], kernel: int, stride: int, padding: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) as effnet.layers.conv2d pads: symmetric, or TF SAME when strided."""
    if padding == "same" and stride > 1:
        return (*same_padding(size_hw[0], kernel, stride), *same_padding(size_hw[1], kernel, stride))
    p = (kernel - 1) // 2
    return (p, p, p, p)


class FusedNet(nn.Module):
    """Eval-mode fused execution of an ``EfficientConvNet`` (or a plan + its state dict)."""

    def __init__(self, model: nn.Module | Plan, state_dict: dict | None = None, *,
                 dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cuda",
                 cuda_graph: bool = True, fuse_expand: bool | None = None,
                 library_convs: bool | None = None, dw_project: bool | None = None) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of torch.bfloat16, torch.float16, torch.float32; got {dtype}")
        self.ops = _load_ops()  # first: without Triton nothing else matters
        device = torch.device(device)
        if device.type != "cuda" and not interpreting():
            raise ValueError(f"the fused (triton) engine runs on a CUDA device, got device {str(device)!r} "
                             "(TRITON_INTERPRET=1 runs its kernels on the CPU, slowly, for testing)")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("the fused (triton) engine needs a CUDA GPU, and torch sees none here")
        if isinstance(model, Plan):
            if state_dict is None:
                raise ValueError("FusedNet(plan, state_dict): a plan needs the model's state dict")
            plan, sd = model, state_dict
        else:
            plan, sd = model.plan, model.state_dict()
        self.plan, self.dtype, self.device = plan, dtype, device
        self.cuda_graph = cuda_graph and device.type == "cuda"
        # None: time both ways per block on first use (cached with the tile choices); True/False: force
        self.fuse_expand, self.library_convs, self.dw_project = fuse_expand, library_convs, dw_project
        self.net = folding.fold(plan, sd)
        self.layers = [self._prepare_block(b) for b in self.net.blocks]
        self.stem = self._dense(self.net.stem)
        self.stem_lib = self._library(self.net.stem)
        self.head = self._pointwise(self.net.head) if self.net.head is not None else None
        cls = self.net.classifier
        self.classifier = None if cls is None else (cls[0].to(device), cls[1].to(device))
        self._graphs: dict[tuple, tuple] = {}

    # --- weights in the kernels' layouts ---------------------------------------------------------------
    def _f32(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, torch.float32).contiguous()

    def _pointwise(self, c: folding.FoldedConv) -> tuple[torch.Tensor, torch.Tensor]:
        return c.weight[:, :, 0, 0].t().contiguous().to(self.device, self.dtype), self._f32(c.bias)

    def _dense(self, c: folding.FoldedConv) -> tuple[torch.Tensor, torch.Tensor]:
        co = c.weight.shape[0]  # [co, ci, kh, kw] -> [(kh, kw, ci), co]
        return c.weight.permute(2, 3, 1, 0).reshape(-1, co).contiguous().to(self.device, self.dtype), self._f32(c.bias)

    def _library(self, c: folding.FoldedConv) -> tuple[torch.Tensor, torch.Tensor]:
        return c.weight.to(self.device, self.dtype), c.bias.to(self.device, self.dtype)

    def _depthwise(self, c: folding.FoldedConv) -> tuple[torch.Tensor, torch.Tensor]:
        ch, k = c.weight.shape[0], c.kernel  # [C, 1, k, k] -> [k*k, C]
        return self._f32(c.weight.reshape(ch, k * k).t()), self._f32(c.bias)

    def _prepare_block(self, fb: folding.FoldedBlock) -> dict:
        s = fb.spec
        layer: dict = {"spec": s, "act": self.ops.ACT_CODES[s.activation]}
        if fb.depthwise is not None:  # weight rows padded to whole channel blocks (unmasked tap loads)
            w, b = self._depthwise(fb.depthwise)
            layer["dw"] = (self.ops.pad_dw_weights(w), b)
            layer["dw_lib"] = fb.depthwise.weight.to(self.device, self.dtype)  # [C, 1, k, k], for cuDNN
        if fb.se is not None:
            layer["se"] = tuple(self._f32(t) for t in (fb.se.w1, fb.se.b1, fb.se.w2, fb.se.b2))
        if fb.project is not None:
            layer["project"] = self._pointwise(fb.project)
        if fb.expand is not None:
            layer["expand"] = (self._pointwise(fb.expand) if s.block is BlockType.MBCONV
                               else self._dense(fb.expand))
            if s.block is BlockType.FUSED_MBCONV:
                layer["expand_lib"] = self._library(fb.expand)
        return layer

    # --- execution -----------------------------------------------------------------------------------
    def _mbconv(self, x: torch.Tensor, L: dict) -> torch.Tensor:
        s, ops, act = L["spec"], self.ops, L["act"]
        pads = _pads(x.shape[1:3], s.kernel, s.stride, s.padding)
        res = x if s.residual else None

        def expand():
            return ops.pointwise(x, *L["expand"], act) if s.has_expand else x

        def excite(pooled, hw):
            return ops.se_excite(pooled, hw, *L["se"], act) if s.has_se else None

        def project(d, pooled, **pre):
            return ops.pointwise(d, *L["project"], 0, gate=excite(pooled, d.shape[1] * d.shape[2]), residual=res, **pre)

        def separate():  # expand GEMM, our depthwise (+ bias, act, squeeze), project GEMM
            return project(*ops.depthwise(expand(), *L["dw"], s.kernel, s.stride, pads, act, s.has_se))

        def fused():  # expand + depthwise in one kernel, project GEMM
            return project(*ops.expand_depthwise(x, *L["expand"], *L["dw"], s.kernel, pads, act, s.has_se))

        def library():  # cuDNN's depthwise (no bias), squeeze kernel; bias + act in the project GEMM's prologue
            d = _library_conv(expand(), L["dw_lib"], None, s.stride, pads, groups=s.mid_channels)
            bias = L["dw"][1]
            return project(d, ops.squeeze(d, bias, act) if s.has_se else None, pre_act=act, pre_bias=bias)

        def dwproject():  # depthwise in the project GEMM's prologue; SE: a squeeze-only depthwise pass first
            e = expand()
            hw = _out_hw(x.shape[1:3], s.kernel, s.stride, pads)
            pooled = ops.depthwise(e, *L["dw"], s.kernel, s.stride, pads, act, True, store=False)[1] if s.has_se else None
            return ops.dw_project(e, *L["dw"], *L["project"], s.kernel, s.stride, pads, act,
                                  gate=excite(pooled, hw[0] * hw[1]), residual=res)

        paths = {"fused": fused, "separate": separate, "library": library, "dwproject": dwproject}
        if not (s.has_expand and s.stride == 1) or self.fuse_expand is False:
            del paths["fused"]
        if self.library_convs is False:
            del paths["library"]
        if self.dw_project is False:
            del paths["dwproject"]
        forced = ("dwproject" if self.dw_project else "fused" if self.fuse_expand and "fused" in paths
                  else "library" if self.library_convs else None)
        if forced or len(paths) == 1:
            return paths[forced or next(iter(paths))]()
        return self._choose("mbconv_path4", (tuple(x.shape), s.mid_channels, s.out_channels, s.kernel, s.stride,
                                             s.has_se, s.residual, act, *paths), paths, None)

    def _fused_mbconv(self, x: torch.Tensor, L: dict) -> torch.Tensor:
        s, ops, act = L["spec"], self.ops, L["act"]
        pads = _pads(x.shape[1:3], s.kernel, s.stride, s.padding)
        res = x if s.residual else None
        if not s.has_se:  # any mid width: the tap-loop conv kernel projects it in chunks
            proj = L["project"] if s.has_project else None
            return self._choose("fused_path", (tuple(x.shape), s.mid_channels, s.out_channels, s.kernel, s.stride), {
                "triton": lambda: ops.conv(x, *L["expand"], s.kernel, s.stride, pads, act, proj=proj, residual=res),
                "library": lambda: self._fused_library(x, L, pads)},
                None if self.library_convs is None else not self.library_convs)
        h = ops.conv(x, *L["expand"], s.kernel, s.stride, pads, act)
        gate = None
        if s.has_se:  # not in the zoo: squeeze through torch, excitation through the SE kernel
            gate = ops.se_excite(h.float().sum((1, 2)), h.shape[1] * h.shape[2], *L["se"], act)
        if not s.has_project:
            out = h * gate[:, None, None, :].to(h.dtype) if gate is not None else h
            return out + x if s.residual else out
        return ops.pointwise(h, *L["project"], 0, gate=gate, residual=res)

    def _fused_library(self, x: torch.Tensor, L: dict, pads: tuple[int, int, int, int]) -> torch.Tensor:
        """Fused-MBConv through the library's conv (cuDNN, no bias: torch adds a conv's bias in a pass of its
        own), its bias and activation applied in the project's prologue, or without a project in one
        bias + activation (+ residual) pass."""
        s, bias, res = L["spec"], L["expand"][1], x if L["spec"].residual else None
        h = _library_conv(x, L["expand_lib"][0], None, s.stride, pads)
        if s.has_project:
            return self.ops.pointwise(h, *L["project"], 0, residual=res, pre_act=L["act"], pre_bias=bias)
        return self.ops.bias_act(h, bias, L["act"], residual=res)

    def _choose(self, kind: str, key: tuple, paths: dict, first: bool | None):
        """Run one of the ways of computing a block: ``first`` forces the first (True) or second (False);
        None times all on first use of this shape and keeps the fastest (cached on disk like tile choices)."""
        names = list(paths)
        if first is not None:
            return paths[names[0] if first else names[1]]()
        if tune.enabled and not tune.capturing() and not tune.known(kind, key):
            for fn in paths.values():  # compile and tune each path's kernels before timing the paths
                fn()
        cfg = tune.pick(kind, key, [{"path": n} for n in names], lambda c: paths[c["path"]]())
        return paths[cfg["path"]]()

    def _separable(self, x: torch.Tensor, L: dict) -> torch.Tensor:
        s = L["spec"]
        pads = _pads(x.shape[1:3], s.kernel, s.stride, s.padding)
        d, _ = self.ops.depthwise(x, *L["dw"], s.kernel, s.stride, pads, L["act"], False)
        return self.ops.pointwise(d, *L["project"], L["act"])

    def run_block(self, x: torch.Tensor, layer: dict) -> torch.Tensor:
        """One block on an NHWC activation."""
        kind = layer["spec"].block
        if kind is BlockType.MBCONV:
            return self._mbconv(x, layer)
        if kind is BlockType.FUSED_MBCONV:
            return self._fused_mbconv(x, layer)
        return self._separable(x, layer)

    def forward_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC image [N, H, W, C] in the engine dtype -> logits [N, classes] (float32)."""
        st, ops = self.plan.stem, self.ops
        pads, act = _pads(x.shape[1:3], st.kernel, st.stride, st.padding), ops.ACT_CODES[st.activation]
        img = x
        x = self._choose("stem_path", tuple(x.shape), {
            "triton": lambda: ops.conv(img, *self.stem, st.kernel, st.stride, pads, act),
            "library": lambda: ops.bias_act(_library_conv(img, self.stem_lib[0], None, st.stride, pads),
                                            self.stem[1], act)},
            None if self.library_convs is None else not self.library_convs)
        for layer in self.layers:
            x = self.run_block(x, layer)
        hw = x.shape[1] * x.shape[2]
        if self.head is not None:
            pooled = ops.pointwise(x, *self.head, ops.ACT_CODES[self.plan.head.activation], pool=True) / hw
        else:
            pooled = x.float().mean((1, 2))
        return F.linear(pooled, *self.classifier) if self.classifier is not None else pooled

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.plan.stem.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected an image batch (N, {self.plan.stem.in_channels}, H, W), got {shape}")
        if x.device.type != self.device.type:
            raise ValueError(f"the fused engine's weights are on {self.device.type}; move the input there "
                             f"(got a {x.device.type} tensor)")
        return x.to(self.dtype, memory_format=torch.channels_last).permute(0, 2, 3, 1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check(x)
        if not self.cuda_graph:
            return self.forward_nhwc(x)
        key = (tuple(x.shape), x.device.index)
        if key not in self._graphs:
            static_in = x.clone()
            graph, static_out = capture_graph(lambda: self.forward_nhwc(static_in))
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


def optimize(model: nn.Module, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cuda") -> FusedNet:
    """The fused engine for ``model`` (eval semantics: BatchNorm running statistics are folded in)."""
    return FusedNet(model, dtype=dtype, device=device)
