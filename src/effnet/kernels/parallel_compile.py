"""Compile the fused engine's kernels for one input shape in parallel worker processes, before tuning.

On first use of a shape the engine times every tile candidate and block path (:func:`tune.pick`).  Where
Triton's on-disk cache is cold, each candidate is compiled first, one after another: minutes for a whole
network (330 s for EfficientNet-B0 at batch 256 on an H100, docs/benchmarks/fused.md run 12).
:func:`precompile` has ``workers`` processes compile disjoint shares of the candidates into that cache at
once (``tune.compile_only`` with ``tune.shard``: nothing timed, nothing chosen); the engine's first call
then only times them.  Each worker builds the model from its config with fresh weights: kernels depend on
shapes, not values.

    fused = FusedNet(model)
    precompile(model, x)   # x: the input the engine will see (its shape, dtype and device)
    fused(x)               # tunes, without compiling
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from effnet.kernels import tune

# A worker's program (``-c``, not ``-m``: the package has imported this module already).
_WORKER = "import sys; from effnet.kernels.parallel_compile import _worker; _worker(*sys.argv[1:])"
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def default_workers() -> int:
    """One worker per two CPU cores, at least one, at most 8 (each holds a CUDA context and one forward)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def spawn(model: torch.nn.Module, x: torch.Tensor, workers: int, folder: str, **engine_options) -> list:
    """Start ``workers`` compile processes for ``model`` on inputs shaped like ``x`` (returns the Popens).

    ``folder`` holds the model's config for them (until they end); ``engine_options``: FusedNet's ``fuse_expand``,
    ``library_convs``, ``dw_project`` (a forced path compiles only that path's kernels)."""
    if x.dtype not in DTYPE_NAMES:
        raise ValueError(f"x must be bfloat16, float16 or float32, got {x.dtype}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    fd, config = tempfile.mkstemp(suffix=".json", prefix="config-", dir=folder)  # one folder may serve many calls
    with os.fdopen(fd, "w") as f:
        json.dump(model.config.to_dict(), f)
    package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds effnet/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
    shape = ",".join(map(str, x.shape))
    args = [str(config), shape, DTYPE_NAMES[x.dtype], str(x.device)]
    return [subprocess.Popen([sys.executable, "-c", _WORKER, *args, str(i), str(workers), json.dumps(engine_options)],
                             env=env, stdout=subprocess.DEVNULL)
            for i in range(workers)]


def precompile(model: torch.nn.Module, x: torch.Tensor, *, workers: int | None = None,
               timeout: float | None = None, **engine_options) -> list[int | None]:
    """Compile ``FusedNet(model, dtype=x.dtype, **engine_options)``'s kernels for inputs shaped like ``x``
    in ``workers`` processes at once; returns their exit codes (None: stopped at ``timeout`` seconds).
    A failed worker costs only time: whatever it did not compile, the engine compiles on first use."""
    if tune.interpreting():
        return []  # Triton's interpreter compiles nothing
    if not torch.cuda.is_available() or x.device.type != "cuda":
        raise ValueError(f"precompile needs x on a CUDA GPU (the fused engine's device), got {x.device}")
    workers = default_workers() if workers is None else workers
    with tempfile.TemporaryDirectory() as folder:
        procs = spawn(model, x, workers, folder, **engine_options)
        deadline = None if timeout is None else time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return [p.returncode if p.returncode is not None and p.returncode >= 0 else None for p in procs]


@torch.no_grad()
def _worker(config_path: str, shape: str, dtype: str, device: str, shard: str, shards: str, options: str) -> None:
    from effnet.config import ModelConfig
    from effnet.kernels.engine import FusedNet
    from effnet.model import EfficientConvNet

    tune.compile_only, tune.shard = True, (int(shard), int(shards))
    model = EfficientConvNet(ModelConfig.from_dict(json.loads(Path(config_path).read_text()))).eval().to(device)
    engine = FusedNet(model, dtype=getattr(torch, dtype), device=device, cuda_graph=False, **json.loads(options))
    x = torch.randn(*map(int, shape.split(",")), device=device).to(getattr(torch, dtype))
    engine(x.contiguous(memory_format=torch.channels_last))
    if torch.cuda.is_available():
        torch.cuda.synchronize()

