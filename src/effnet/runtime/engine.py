"""``compile(graph_or_model, backend=...)``: one callable per graph, whatever runs it.

The callable takes an ``(N, C, H, W)`` float32 numpy array or torch tensor and returns the same kind
(a torch tensor comes back on the CPU).  Backends: ``"numpy"`` (the reference), ``"opencl"`` (our
OpenCL C kernels through pyopencl), ``"triton"`` (effnet.kernels' fused GPU kernels).
"""

from __future__ import annotations

import numpy as np

from effnet.runtime.graph import Graph
from effnet.runtime.lower import from_model
from effnet.runtime.numpy_backend import NumpyEngine
from effnet.runtime.opencl import OpenCLEngine

BACKENDS = ("numpy", "opencl", "triton")


class Engine:
    """A compiled graph: checks its input, runs the backend, hands back the caller's kind of array."""

    def __init__(self, graph: Graph, impl) -> None:
        self.graph, self.impl = graph, impl
        self.backend = impl.backend

    def __call__(self, x):
        is_torch = type(x).__module__.split(".")[0] == "torch"
        if is_torch and str(x.dtype) != "torch.float32":  # bfloat16 has no numpy twin: check before converting
            raise TypeError(f"input must be float32, got {x.dtype} (convert with .float())")
        arr = x.detach().cpu().numpy() if is_torch else x
        self.check_input(arr)
        out = self.impl.run(np.ascontiguousarray(arr))
        if is_torch:
            # The caller passed a torch tensor, so torch is importable; hand back what they gave.
            import torch

            return torch.from_numpy(out)
        return out

    def check_input(self, x) -> None:
        """ValueError/TypeError (one line) unless ``x`` is an (N, C, H, W) float32 array of the graph's size."""
        want = self.graph.input_shape
        if not isinstance(x, np.ndarray):
            raise TypeError(f"input must be a numpy array or torch tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(want) or x.shape[0] < 1:
            raise ValueError(f"input must have shape (N, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        if x.dtype != np.float32:
            raise TypeError(f"input must be float32, got {x.dtype} (convert with .astype(np.float32) or .float())")

    def __repr__(self) -> str:
        return f"Engine({self.backend}, {self.graph!r})"


def compile(graph_or_model, backend: str = "numpy", *, device: int | str | None = None,
            input_size=None) -> Engine:
    """A callable that runs ``graph_or_model`` (a Graph, or a model lowered with ``from_model``).

    ``device`` picks the OpenCL device by index (into ``effnet runtime devices``' list) or by a
    substring of its platform or device name (for "triton": a torch device, default "cuda");
    ``input_size`` is for models (default: their resolution).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    graph = graph_or_model
    if not isinstance(graph, Graph):
        graph = from_model(graph_or_model, input_size=input_size)
    if backend == "numpy":
        return Engine(graph, NumpyEngine(graph))
    if backend == "opencl":
        return Engine(graph, OpenCLEngine(graph, device))
    if isinstance(graph_or_model, Graph):
        raise TypeError('backend="triton" takes a model: effnet.kernels fuses whole blocks from model.plan')
    return Engine(graph, _TritonImpl(graph_or_model, device))


class _TritonImpl:
    """effnet.kernels' fused GPU kernels (FusedNet, fp32) behind the engine's numpy-in, numpy-out call."""

    backend = "triton"

    def __init__(self, model, device) -> None:
        try:
            # Imported here, not at the top: the kernels need torch and triton, and graph files must
            # load and run on numpy or OpenCL where neither is installed.
            import torch

            from effnet.kernels import FusedNet
        except ImportError as e:
            raise ValueError(f'backend="triton" needs effnet.kernels.FusedNet (with torch and triton), which '
                             f'cannot be imported here ({e}); use backend="opencl" or "numpy"') from None
        self.torch = torch
        self.device = torch.device("cuda" if device is None else device)
        self.net = FusedNet(model, dtype=torch.float32, device=self.device)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.net(self.torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()
