"""Fused GPU inference kernels (Triton) and the engine that runs a model's plan with them.

``effnet.kernels.FusedNet(model, dtype=torch.bfloat16)`` / ``optimize(model)``: an eval-only drop-in
module.  BN folding (``fold``) is a pure function of plan + state dict.  Triton is imported only when
an engine is built (module ``triton_ops``), so this package imports where Triton is missing.
``precompile(model, x)``: a new input shape's kernels compiled in parallel worker processes before the
engine's first call tunes them.
"""

from effnet.kernels.engine import FusedNet, optimize
from effnet.kernels.fold import FoldedNet, fold
from effnet.kernels.parallel_compile import precompile

__all__ = ["FoldedNet", "FusedNet", "fold", "optimize", "precompile"]
