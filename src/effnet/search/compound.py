"""``effnet search compound``: EfficientNet's two steps on a proxy task, and the single-dimension test.

Step 1 fixes phi = 1 and trains every (alpha, beta, gamma) of the grid under
alpha * beta**2 * gamma**2 ~ target from the base network, with one recipe and one seed; the most
accurate wins.  Step 2 scales the base with the winner for phi = 1..N.  The paper's Figure 3/
Table 3 experiment compares, at equal MACs (x2, x4), scaling width only, depth only, resolution
only and all three together.  Results: ``candidates/*.json`` (one per trained network, what makes a
search resumable), ``results.csv``, ``summary.json``, ``summary.md`` and two PNGs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from effnet.analysis.profile import profile
from effnet.io import write_atomic
from effnet.model import EfficientConvNet
from effnet.plan import expand
from effnet.search import report
from effnet.search.candidate import SearchRecipe, job, remeasure, run_candidate
from effnet.search.executors import Executor
from effnet.search.grid import PAPER_COEFFICIENTS, Triple, coefficient_grid
from effnet.zoo import model_config


@dataclass(frozen=True)
class Base:
    """The phi = 0 network: a zoo model shrunk to a proxy-sized budget."""

    model: str = "efficientnet_b0"
    width: float = 0.25  # 4 x 4 times fewer MACs than B0 in the convs
    depth: float = 0.5  # 10 blocks instead of 16
    resolution: int = 32  # the proxy's crops are rendered at 64 px: scaling up to x2 adds real detail
    resolution_multiple: int = 2  # scaled resolutions are rounded to this (2: gamma 1.05 still moves 32 px)

    def scaled(self, depth: float = 1.0, width: float = 1.0, resolution: float = 1.0) -> dict:
        """Width, depth and resolution of the base scaled by these multipliers."""
        m = self.resolution_multiple
        return {"width": self.width * width, "depth": self.depth * depth,
                "resolution": max(m, round(self.resolution * resolution / m) * m)}


@dataclass
class Settings:
    """Everything one compound search needs (the CLI's flags)."""

    output: str
    base: Base = field(default_factory=Base)
    recipe: SearchRecipe = field(default_factory=SearchRecipe)
    target: float = 2.0
    tolerance: float = 0.1
    step: float = 0.05
    alpha: tuple[float, float] = (1.0, 2.1)
    beta: tuple[float, float] = (1.0, 1.45)
    gamma: tuple[float, float] = (1.0, 1.45)
    limit: int | None = None  # train only the `limit` grid points closest to the target
    phi_max: int = 3  # step 2 scales phi = 1..phi_max
    multiples: tuple[float, ...] = (2.0, 4.0)  # MACs multiples of the single-dimension experiment
    remeasure: str | None = None  # time every finished candidate again on this device (no training)


def _job(s: Settings, scaled: dict) -> dict:
    return job(output=s.output, base=s.base.model, recipe=s.recipe, **scaled)


def _run(executor: Executor, jobs: list[dict], say: Callable[[str], None]) -> dict[str, dict]:
    unique = list({j["id"]: j for j in jobs}.values())
    out = {}
    for r in executor.run(run_candidate, unique):
        out[r["id"]] = r
        say(f"  {r['id']}: val acc {100 * r['val_acc']:.2f}%, {r['macs'] / 1e6:.2f} M MACs, "
            f"{r['latency_ms']:.3f} ms, trained in {r['train_s']:.0f} s on {r['device']}")
    return out


def single_dimension(base: Base, winner: Triple, multiple: float, target: float,
                     macs: Callable[[dict], int] | None = None) -> dict[str, dict]:
    """Width-only, depth-only, resolution-only and compound scaling of ``base`` to ``multiple`` x its MACs.

    Without ``macs`` the multipliers follow the formula (width sqrt(m), depth m, resolution
    sqrt(m), compound phi = log_target(m)).  With ``macs`` (a counter of a scaled dict) each
    multiplier is chosen so the *counted* MACs land closest to the multiple: rounding of channels,
    repeats and pixels, and the stem/head that depth does not scale, move small networks far off
    the formula.
    """
    phi = math.log(multiple) / math.log(target)
    makers: dict[str, tuple[Callable[[float], dict], float]] = {
        "width only": (lambda m: base.scaled(width=m), math.sqrt(multiple)),
        "depth only": (lambda m: base.scaled(depth=m), multiple),
        "resolution only": (lambda m: base.scaled(resolution=m), math.sqrt(multiple)),
        "compound": (lambda p: base.scaled(winner.alpha**p, winner.beta**p, winner.gamma**p), phi),
    }
    if macs is None:
        return {k: make(x) for k, (make, x) in makers.items()}
    goal = multiple * macs(base.scaled())
    return {k: _closest(make, x, goal, macs) for k, (make, x) in makers.items()}


def _closest(make: Callable[[float], dict], guess: float, goal: float, macs: Callable[[dict], int]) -> dict:
    """The scaled dict whose MACs are closest to ``goal``; MACs grow (in steps) with the multiplier."""
    lo, hi = 1.0, guess  # the base itself (multiplier 1) is below any goal above it; below 1 is not scaling up
    while macs(make(hi)) < goal:  # the formula's guess can fall short: widen until past the goal
        hi *= 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(make(mid)) < goal else (lo, mid)
    # Candidate ids carry width and depth at 4 decimals, so the network trained is the snapped one:
    # snap both ends both ways (a repeat or channel step can sit between a value and its snap) and
    # keep the snapped network whose own MACs are closest to the goal.
    snapped = [_snap(make(m), rounding) for m in (lo, hi) for rounding in (math.floor, math.ceil)]
    return min(snapped, key=lambda d: abs(macs(d) - goal))


def _snap(d: dict, rounding: Callable[[float], float]) -> dict:
    """``d`` with width and depth at 4 decimals, as candidate ids carry them."""
    return {**d, "width": rounding(d["width"] * 1e4) / 1e4, "depth": rounding(d["depth"] * 1e4) / 1e4}


_MACS: dict[tuple, int] = {}  # (plan, resolution, classes) -> MACs, shared by every search in a process


def macs_counter(base: str, num_classes: int) -> Callable[[dict], int]:
    """MACs of ``base`` scaled to a (width, depth, resolution) dict, counted on the meta device.

    Counted once per distinct network: the bisections of :func:`single_dimension` try many
    multipliers that round to the same channels and repeats, so the cache is keyed by the block plan.
    """

    def count(d: dict) -> int:
        config = model_config(base, width=d["width"], depth=d["depth"], resolution=d["resolution"],
                              num_classes=num_classes)
        key = (expand(config), d["resolution"], num_classes)
        if key not in _MACS:
            with torch.device("meta"):
                model = EfficientConvNet(config)
            _MACS[key] = profile(model, d["resolution"]).totals()["macs"]
        return _MACS[key]

    return count


def search(s: Settings, executor: Executor, say: Callable[[str], None] = print) -> dict:
    """Run (or resume) the whole compound search; returns the summary it writes."""
    if s.recipe.epochs < 1:
        raise ValueError(f"budget too small: --epochs must be >= 1 to train one candidate, got {s.recipe.epochs}")
    if s.phi_max < 1:
        raise ValueError(f"--phi-max must be >= 1, got {s.phi_max}")
    grid = coefficient_grid(target=s.target, tolerance=s.tolerance, step=s.step, alpha=s.alpha, beta=s.beta,
                            gamma=s.gamma)
    if s.limit is not None:
        if s.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {s.limit}")
        grid = grid[:s.limit]
    out = Path(s.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base_job = _job(s, s.base.scaled())
    step1 = {t: _job(s, s.base.scaled(t.alpha, t.beta, t.gamma)) for t in grid}
    say(f"step 1: {len(grid)} grid points (alpha*beta^2*gamma^2 = {s.target} +- {s.tolerance}, step {s.step}) "
        f"+ the base, {s.recipe.epochs} epochs each on {s.recipe.data}")
    results = _run(executor, [base_job, *step1.values()], say)
    ranked = sorted(grid, key=lambda t: (-results[step1[t]["id"]]["val_acc"], abs(t.cost - s.target)))
    winner = ranked[0]
    say(f"step 1 winner: alpha {winner.alpha}, beta {winner.beta}, gamma {winner.gamma} "
        f"({100 * results[step1[winner]['id']]['val_acc']:.2f}%)")

    step2 = {phi: _job(s, s.base.scaled(winner.alpha**phi, winner.beta**phi, winner.gamma**phi))
             for phi in range(1, s.phi_max + 1)}
    classes = json.loads(Path(s.output, "runs", base_job["id"], "config.json").read_text())["model"]["num_classes"]
    count = macs_counter(s.base.model, classes)
    single = {m: {k: _job(s, v) for k, v in single_dimension(s.base, winner, m, s.target, count).items()}
              for m in s.multiples}
    say(f"step 2: phi 1..{s.phi_max} with the winner; single-dimension scaling at x{', x'.join(f'{m:g}' for m in s.multiples)} MACs")
    results.update(_run(executor, [*step2.values(), *(j for d in single.values() for j in d.values())], say))

    if s.remeasure:
        say(f"timing all {len(results)} candidates again on {s.remeasure}")
        results = {cid: remeasure(s.output, cid, s.remeasure, s.recipe.latency_batch, s.recipe.latency_runs)
                   for cid in results}
    rows = _rows(s, results, base_job, step1, winner, step2, single)
    summary = {
        "settings": {**asdict(s), "base": asdict(s.base), "recipe": asdict(s.recipe)},
        "grid_size": len(grid), "wall_s": time.perf_counter() - start,
        "winner": asdict(winner), "paper": dict(zip(("alpha", "beta", "gamma"), PAPER_COEFFICIENTS)),
        "paper_in_grid": Triple(*PAPER_COEFFICIENTS) in grid,
        "ranking": [{**asdict(t), "cost": t.cost, "val_acc": results[step1[t]["id"]]["val_acc"],
                     "id": step1[t]["id"]} for t in ranked],
        "base": results[base_job["id"]],
        "scaling": [{"phi": phi, **results[j["id"]]} for phi, j in step2.items()],
        "single_dimension": [{"multiple": m, "scaling": k, **results[j["id"]],
                              "macs_ratio": results[j["id"]]["macs"] / results[base_job["id"]]["macs"]}
                             for m, d in single.items() for k, j in d.items()],
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=1).encode())
    write_atomic(out / "summary.md", markdown(summary).encode())
    report.write_csv(out / "results.csv", rows)
    report.plot(out / "acc_vs_macs.png", rows, "macs", "MACs", "accuracy vs MACs")
    latency_device = summary["base"]["latency_device"]
    report.plot(out / "acc_vs_latency.png", rows, "latency_ms",
                f"measured latency (ms, batch {s.recipe.latency_batch}, {latency_device})",
                "accuracy vs measured latency", front=True)
    say(f"done in {summary['wall_s']:.0f} s: {out}/results.csv, summary.md, acc_vs_macs.png, acc_vs_latency.png")
    return summary


def _rows(s, results, base_job, step1, winner, step2, single) -> list[dict]:
    rows = [{**results[base_job["id"]], "roles": ["base"], "group": "base", "phi": 0}]
    for t, j in step1.items():
        rows.append({**results[j["id"]], "roles": [f"grid {t.name}" + (" (winner)" if t == winner else "")],
                     "group": "grid", "alpha": t.alpha, "beta": t.beta, "gamma": t.gamma, "phi": 1})
    for phi, j in step2.items():
        rows.append({**results[j["id"]], "roles": [f"compound phi={phi}"], "group": "compound (winner)",
                     "alpha": winner.alpha, "beta": winner.beta, "gamma": winner.gamma, "phi": phi})
    for m, d in single.items():
        for k, j in d.items():
            rows.append({**results[j["id"]], "roles": [f"{k} x{m:g}"],
                         "group": "compound (equal MACs)" if k == "compound" else k})
    return rows


def markdown(summary: dict) -> str:
    """The tables docs/search.md shows: step-1 ranking, step-2 scaling, single-dimension comparison."""
    lines = ["| rank | alpha | beta | gamma | alpha*beta^2*gamma^2 | val acc |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(summary["ranking"], 1):
        lines.append(f"| {i} | {r['alpha']:.2f} | {r['beta']:.2f} | {r['gamma']:.2f} | {r['cost']:.3f} | "
                     f"{100 * r['val_acc']:.2f}% |")
    lines += ["", "| phi | width | depth | resolution | params | MACs | latency (ms) | val acc |",
              "|---|---|---|---|---|---|---|---|"]
    for r in [{"phi": 0, **summary["base"]}, *summary["scaling"]]:
        lines.append(f"| {r['phi']} | {r['width']:.3f} | {r['depth']:.3f} | {r['resolution']} | "
                     f"{r['params'] / 1e3:.0f} k | {r['macs'] / 1e6:.2f} M | {r['latency_ms']:.3f} | "
                     f"{100 * r['val_acc']:.2f}% |")
    lines += ["", "| MACs target | scaling | width | depth | resolution | MACs (x base) | latency (ms) | val acc |",
              "|---|---|---|---|---|---|---|---|"]
    for r in summary["single_dimension"]:
        lines.append(f"| x{r['multiple']:g} | {r['scaling']} | {r['width']:.3f} | {r['depth']:.3f} | "
                     f"{r['resolution']} | {r['macs_ratio']:.2f} | {r['latency_ms']:.3f} | {100 * r['val_acc']:.2f}% |")
    return "\n".join(lines) + "\n"
