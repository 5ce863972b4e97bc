"""EfficientNet step 1 as data: the (alpha, beta, gamma) grid under alpha * beta**2 * gamma**2 ~ target.

Pure Python: no torch.  Depth grows by alpha, width by beta and resolution by gamma per unit of
phi; the MACs of a convolution grow with depth * width**2 * resolution**2, so the constraint says
"one unit of phi costs ``target`` times the MACs" (EfficientNet eq. 3, target 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The paper: alpha, beta, gamma >= 1.  Under alpha*beta^2*gamma^2 <= 2.1 none of them can pass these.
PAPER_RANGES = {"alpha": (1.0, 2.1), "beta": (1.0, 1.45), "gamma": (1.0, 1.45)}
PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)  # what EfficientNet's grid search chose for B0


@dataclass(frozen=True)
class Triple:
    """One candidate of step 1: depth, width and resolution growth per unit of phi."""

    alpha: float
    beta: float
    gamma: float

    @property
    def cost(self) -> float:
        """MACs multiplier of one unit of phi: alpha * beta**2 * gamma**2."""
        return flops_factor(self.alpha, self.beta, self.gamma)

    @property
    def name(self) -> str:
        return f"a{self.alpha:.2f}_b{self.beta:.2f}_g{self.gamma:.2f}"


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """alpha * beta**2 * gamma**2, the growth of MACs per unit of phi."""
    return alpha * beta**2 * gamma**2


def _axis(name: str, lo: float, hi: float, step: float) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi >= lo):
        raise ValueError(f"{name} range must be 0 < low <= high, got ({lo}, {hi})")
    n = math.floor((hi - lo) / step + 1e-9)
    return [round(lo + i * step, 10) for i in range(n + 1)]


def coefficient_grid(*, target: float = 2.0, tolerance: float = 0.1, step: float = 0.05,
                     alpha: tuple[float, float] = PAPER_RANGES["alpha"],
                     beta: tuple[float, float] = PAPER_RANGES["beta"],
                     gamma: tuple[float, float] = PAPER_RANGES["gamma"]) -> list[Triple]:
    """Every grid point with ``|alpha * beta**2 * gamma**2 - target| <= tolerance``, closest to target first.

    Raises ValueError for a grid with no points or a target that no point meets.
    """
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a number > 0, got {step}")
    if not (math.isfinite(target) and target > 1):
        raise ValueError(f"target must be > 1 (the MACs growth of one unit of phi), got {target}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    axes = [_axis(n, *r, step) for n, r in (("alpha", alpha), ("beta", beta), ("gamma", gamma))]
    points = [Triple(a, b, g) for a in axes[0] for b in axes[1] for g in axes[2]]
    if not points:
        raise ValueError("the grid is empty: check the ranges and step")
    kept = [t for t in points if abs(t.cost - target) <= tolerance + 1e-12]
    if not kept:
        near = min(points, key=lambda t: abs(t.cost - target))
        raise ValueError(f"no grid point has alpha*beta^2*gamma^2 within {tolerance} of {target} "
                         f"(closest: {near.name} = {near.cost:.3f}); widen the ranges or the tolerance")
    return sorted(kept, key=lambda t: (abs(t.cost - target), t.alpha, t.beta, t.gamma))


def reward(accuracy: float, latency: float, target_latency: float, w: float = -0.07) -> float:
    """EfficientNetV2's search reward A * (T / T0)**w: slower than T0 costs accuracy-equivalents."""
    if not (latency > 0 and target_latency > 0):
        raise ValueError(f"latencies must be > 0, got {latency} and {target_latency}")
    return accuracy * (latency / target_latency) ** w
