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
            input_size=None, dtype=None):
    """A callable that runs ``graph_or_model`` (a Graph, or a model lowered with ``from_model``).

    ``device`` picks the OpenCL device by index (into ``effnet runtime devices``' list) or by a
    substring of its platform or device name; ``input_size`` is for models (default: their resolution).
    ``backend="triton"`` takes a model and returns :func:`optimize`'s fused module (``dtype`` default
    bfloat16, ``device`` default "cuda"): it runs channels_last GPU tensors, not numpy arrays.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "triton":
        if isinstance(graph_or_model, Graph):
            raise TypeError('backend="triton" takes a model: effnet.kernels fuses whole blocks from model.plan')
        return optimize(graph_or_model, dtype=dtype, device="cuda" if device is None else device)
    if dtype is not None:
        raise ValueError(f'dtype applies to backend="triton"; the {backend} engine runs float32')
    graph = graph_or_model
    if not isinstance(graph, Graph):
        graph = from_model(graph_or_model, input_size=input_size)
    if backend == "numpy":
        return Engine(graph, NumpyEngine(graph))
    return Engine(graph, OpenCLEngine(graph, device))


def optimize(model, *, dtype=None, device="cuda"):
    """The fused Triton engine for ``model`` as an ``nn.Module`` drop-in for inference (eval semantics).

    It takes a channels_last bfloat16/float16 (or float32) CUDA tensor and returns logits; see
    :class:`effnet.kernels.FusedNet`.  Needs torch and triton; graphs and the other engines do not.
    """
    try:
        # Imported here, not at the top: this is an optional dependency (torch + triton), and graph
        # files must load and run on numpy or OpenCL where neither is installed.
        import torch

        from effnet.kernels import FusedNet
    except ImportError as e:
        raise ValueError(f'backend="triton" needs torch and triton (pip install "effnet[kernels]"), which '
                         f'cannot be imported here ({e}); use backend="opencl" or "numpy"') from None
    return FusedNet(model, dtype=torch.bfloat16 if dtype is None else dtype, device=device)
