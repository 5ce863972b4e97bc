"""The layer-graph engine of the design notes: a flat list of layers, run by numpy, OpenCL or Triton.

    g = effnet.runtime.from_model(model)        # lowered from model.plan, BN folded, activations fused
    g.summary()                                 # one row per node; totals agree with analysis.profile
    g.save("net.safetensors")                   # one file; effnet.runtime.load(path) needs no torch
    engine = effnet.runtime.compile(g, backend="opencl", device="NVIDIA")
    logits = engine(images)                     # (N, C, H, W) float32, numpy or torch

Graphs can also be written by hand, layer by layer (see :mod:`effnet.runtime.graph`).  Graph,
files, passes, numpy and OpenCL need only numpy, safetensors and pyopencl.
"""

from effnet.errors import CheckpointError
from effnet.runtime import ops
from effnet.runtime.engine import BACKENDS, Engine, compile, optimize
from effnet.runtime.graph import Graph, Node, load
from effnet.runtime.lower import from_model
from effnet.runtime.ops import GraphError
from effnet.runtime.passes import drop_identities, fold_batchnorm, fuse_activations, optimize_graph

__all__ = [
    "BACKENDS",
    "CheckpointError",
    "Engine",
    "Graph",
    "GraphError",
    "Node",
    "compile",
    "drop_identities",
    "fold_batchnorm",
    "from_model",
    "fuse_activations",
    "load",
    "ops",
    "optimize",
    "optimize_graph",
]
