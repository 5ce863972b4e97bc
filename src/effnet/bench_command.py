"""``effnet bench``: the analysis layer's benchmark, plus ``--engine triton`` (the fused Triton kernels).

The benchmark itself lives in :mod:`effnet.analysis.bench_cli`; the fused engine sits above the analysis
layer (``effnet.runtime`` / ``effnet.kernels``), so it is joined here, at the command layer, and handed
down as one more mode:

    effnet bench --device cuda --engine triton --dtypes bfloat16 --out docs/benchmarks/gpu
"""

from __future__ import annotations

import argparse

import torch

from effnet.analysis import bench_cli
from effnet.errors import UserError
from effnet.runtime import optimize

ENGINES = ("torch", "triton")


def add_arguments(p: argparse.ArgumentParser) -> None:
    bench_cli.add_arguments(p)
    p.add_argument("--engine", choices=ENGINES, default="torch",
                   help="triton: also time effnet.kernels' fused engine (BN folded, one CUDA graph per shape), "
                   "as the mode 'triton' next to --modes; needs Triton and a CUDA GPU")


def _triton_engine(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return optimize(model, dtype=dtype, device=device)


def check_triton(device: str | None) -> None:
    """One-line errors, before any timing, where the fused engine cannot run."""
    try:
        import triton  # noqa: F401
    except ImportError:
        raise UserError("--engine triton needs Triton (pip install triton), which is not importable here") from None
    if (device or "auto").split(":")[0] not in ("auto", "cuda") or not torch.cuda.is_available():
        where = "torch sees no CUDA GPU here" if not torch.cuda.is_available() else f"--device is {device!r}"
        raise UserError(f"--engine triton runs on a CUDA GPU ({where}); use --device cuda, or --engine torch")


def run(args: argparse.Namespace) -> int:
    if args.engine == "triton" and not args.combine:
        check_triton(args.device)
        return bench_cli.run(args, engines={"triton": _triton_engine})
    return bench_cli.run(args)
