"""``effnet search blocks``: a latency-aware search over per-stage block choices (EfficientNetV2 Sec. 3.3).

Search space, per stage of the base table: block type (MBConv or Fused-MBConv), kernel (3 or 5),
expansion (1, 4 or 6) and a repeats delta (-1, 0, +1).  Reward A * (T / T0)**w with A the proxy
accuracy, T the latency from the lookup table (:mod:`effnet.search.latency`) and T0 the base's.
Search: random sampling or regularised evolution (Real et al. 2019: the population ages out its
oldest member, a child mutates the best of a random sample) under a candidate budget.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from effnet.config import ModelConfig
from effnet.io import write_atomic
from effnet.search import report
from effnet.search.candidate import SearchRecipe, job, run_candidate
from effnet.search.executors import Executor
from effnet.search.grid import reward
from effnet.search.latency import LatencyTable, Timer, check
from effnet.tables import BlockType, NetSpec
from effnet.zoo import SPEC_FORMAT, model_config

BLOCK_TYPES = (BlockType.MBCONV, BlockType.FUSED_MBCONV)
KERNELS = (3, 5)
EXPANSIONS = (1, 4, 6)
REPEAT_DELTAS = (-1, 0, 1)
METHODS = ("evolution", "random")


@dataclass(frozen=True)
class Choice:
    """One stage's choices."""

    block: BlockType
    kernel: int
    expand: int
    delta: int  # repeats added to the base stage's (at least one block remains)


Genome = tuple[Choice, ...]


def base_genome(spec: NetSpec) -> Genome:
    """The base table's own choices (expansions outside the space snap to the nearest allowed)."""
    return tuple(Choice(s.block if s.block in BLOCK_TYPES else BlockType.MBCONV, s.kernel if s.kernel in KERNELS else 3,
                        min(EXPANSIONS, key=lambda e: abs(e - s.expand_ratio)), 0) for s in spec.stages)


def apply(spec: NetSpec, genome: Genome) -> NetSpec:
    """The base table with each stage's choices; SE (the base's ratio) only in MBConv stages, as in V2."""
    se = max((s.se_ratio for s in spec.stages), default=0.0)
    stages = tuple(replace(s, block=c.block, kernel=c.kernel, expand_ratio=c.expand,
                           repeats=max(1, s.repeats + c.delta), se_ratio=se if c.block is BlockType.MBCONV else 0.0)
                   for s, c in zip(spec.stages, genome))
    return replace(spec, stages=stages)


def random_genome(n: int, rng: random.Random) -> Genome:
    return tuple(Choice(rng.choice(BLOCK_TYPES), rng.choice(KERNELS), rng.choice(EXPANSIONS), rng.choice(REPEAT_DELTAS))
                 for _ in range(n))


def mutate(genome: Genome, rng: random.Random) -> Genome:
    """Change one choice of one stage to a different allowed value."""
    i = rng.randrange(len(genome))
    c = genome[i]
    field_name, values = rng.choice((("block", BLOCK_TYPES), ("kernel", KERNELS), ("expand", EXPANSIONS),
                                     ("delta", REPEAT_DELTAS)))
    new = rng.choice([v for v in values if v != getattr(c, field_name)])
    return genome[:i] + (replace(c, **{field_name: new}),) + genome[i + 1:]


def genome_key(genome: Genome) -> str:
    text = json.dumps([[c.block.value, c.kernel, c.expand, c.delta] for c in genome])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def describe(genome: Genome) -> str:
    short = {BlockType.MBCONV: "MB", BlockType.FUSED_MBCONV: "F"}
    return " ".join(f"{short[c.block]}{c.expand}k{c.kernel}{c.delta:+d}" for c in genome)


@dataclass
class BlockSettings:
    output: str
    base: str = "efficientnet_b0"
    width: float = 0.25
    depth: float = 0.5
    resolution: int = 32
    recipe: SearchRecipe = field(default_factory=SearchRecipe)
    budget: int = 20  # candidates trained, the base included
    method: str = "evolution"
    population: int = 6
    sample: int = 3
    w: float = -0.07  # reward exponent on T / T0 (EfficientNetV2)
    latency: str = "train-step"  # what T is: "train-step" (forward + backward) or "inference"
    latency_batch: int = 32
    check: int = 10  # networks of the latency-table check (0: skip)
    seed: int = 0


def spec_document(s: BlockSettings, spec: NetSpec) -> dict:
    return {"format": SPEC_FORMAT, "base": s.base, "resolution": s.resolution, "spec": spec.to_dict()}


def calibration_networks(base_config: ModelConfig) -> list[ModelConfig]:
    """The networks the latency table's per-type shares are fitted on: the base, and the base with every
    stage's block type swapped (MBConv <-> Fused-MBConv), so that each type of the space is measured."""
    swap = {BlockType.MBCONV: BlockType.FUSED_MBCONV, BlockType.FUSED_MBCONV: BlockType.MBCONV}
    swapped = tuple(replace(c, block=swap[c.block]) for c in base_genome(base_config.spec))
    return [base_config, replace(base_config, spec=apply(base_config.spec, swapped), name=describe(swapped))]


def check_table(s: BlockSettings, table: LatencyTable, timer: Timer, say: Callable[[str], None] = print) -> dict:
    """Predicted vs measured latency of ``s.check`` random networks of the search space (seeded);
    written to ``<output>/latency_check.json``."""
    if s.check < 1:
        raise ValueError(f"--check must be >= 1 to check the latency table, got {s.check}")
    base_config = model_config(s.base, width=s.width, depth=s.depth, resolution=s.resolution)
    table.calibrate(calibration_networks(base_config), timer)
    rng = random.Random(s.seed + 1)
    configs = []
    for _ in range(s.check):
        g = random_genome(len(base_config.spec.stages), rng)
        configs.append(replace(base_config, spec=apply(base_config.spec, g), name=describe(g)))
    result = check(table, configs, timer)
    table.save()
    out = Path(s.output)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "latency_check.json", json.dumps(result, indent=1).encode())
    for r in result["networks"]:
        say(f"  {r['name']}: predicted {r['predicted_ms']:.3f} ms, measured {r['measured_ms']:.3f} ms "
            f"({100 * r['error']:+.1f}%)")
    say(f"latency table check ({table.mode}, batch {table.batch}, {table.device}, {table.clock} clock): worst error "
        f"{100 * result['worst_error']:.1f}% over {s.check} random networks "
        f"({'within' if result['ok'] else 'NOT within'} {100 * result['tolerance']:.0f}%); table {table.path}")
    return result


def search_blocks(s: BlockSettings, executor: Executor, table: LatencyTable, timer: Timer,
                  say: Callable[[str], None] = print) -> dict:
    """Run (or resume) a block search; returns the summary it writes to ``<output>/summary.json``."""
    if s.method not in METHODS:
        raise ValueError(f"unknown method {s.method!r}; allowed: {', '.join(METHODS)}")
    if s.recipe.epochs < 1 or s.budget < 1:
        raise ValueError(f"budget too small: need --epochs >= 1 and --budget >= 1, got {s.recipe.epochs}, {s.budget}")
    if s.method == "evolution" and not 2 <= s.sample <= s.population <= s.budget:
        raise ValueError(f"evolution needs 2 <= --sample <= --population <= --budget, got {s.sample}, "
                         f"{s.population}, {s.budget}")
    out = Path(s.output)
    (out / "specs").mkdir(parents=True, exist_ok=True)
    base_config = model_config(s.base, width=s.width, depth=s.depth, resolution=s.resolution)
    base_spec = base_config.spec
    rng = random.Random(s.seed)
    start = time.perf_counter()

    def config_of(genome: Genome) -> ModelConfig:
        return replace(base_config, spec=apply(base_spec, genome), name=f"{s.base}-{genome_key(genome)}")

    table.calibrate(calibration_networks(base_config), timer)
    t0 = table.predict(base_config, timer)
    evaluated: dict[str, dict] = {}

    def evaluate(genomes: list[Genome]) -> list[dict]:
        jobs, meta = [], {}
        for g in genomes:
            key = genome_key(g)
            spec = apply(base_spec, g)
            path = out / "specs" / f"{key}.json"
            if not path.exists():
                write_atomic(path, json.dumps(spec_document(s, spec), indent=1).encode())
            j = job(output=s.output, base=s.base, width=1.0, depth=1.0, resolution=s.resolution, recipe=s.recipe,
                    spec=str(path), spec_key=key)
            jobs.append(j)
            meta[j["id"]] = (g, key)
        results = {r["id"]: r for r in executor.run(run_candidate, list({j["id"]: j for j in jobs}.values()))}
        rows = []
        for j in jobs:
            g, key = meta[j["id"]]
            r = results[j["id"]]
            t = table.predict(config_of(g), timer)
            row = {**r, "key": key, "genome": describe(g), "predicted_latency_ms": t * 1e3,
                   "reward": reward(r["val_acc"], t, t0, s.w)}
            evaluated[key] = row
            rows.append(row)
            say(f"  {describe(g)}: acc {100 * r['val_acc']:.2f}%, predicted {s.latency} {t * 1e3:.3f} ms, "
                f"reward {row['reward']:.4f}")
        table.save()
        return rows

    say(f"block search ({s.method}, budget {s.budget}) over {len(base_spec.stages)} stages of {s.base}; "
        f"T0 = {t0 * 1e3:.3f} ms ({s.latency}, batch {s.latency_batch}, {table.device})")
    base = base_genome(base_spec)
    batch = executor.parallelism  # children per round: one per device
    history: list[tuple[Genome, dict]] = []
    first = [base] + [random_genome(len(base), rng) for _ in range((s.population if s.method == "evolution"
                                                                      else s.budget) - 1)]
    first = first[:s.budget]
    for i in range(0, len(first), batch):
        history += list(zip(first[i:i + batch], evaluate(first[i:i + batch])))
    population = list(history[-s.population:]) if s.method == "evolution" else []
    while len(history) < s.budget:
        children = []
        for _ in range(min(batch, s.budget - len(history))):
            parent = max(rng.sample(population, s.sample), key=lambda gr: gr[1]["reward"])
            children.append(mutate(parent[0], rng))
        for g, r in zip(children, evaluate(children)):
            history.append((g, r))
            population = population[1:] + [(g, r)]  # regularised: the oldest leaves, not the worst

    rows = [r for _, r in history]
    best_genome, best = max(history, key=lambda gr: gr[1]["reward"])
    write_atomic(out / "best_spec.json", json.dumps(spec_document(s, apply(base_spec, best_genome)), indent=1).encode())
    latency_check = check_table(s, table, timer, say) if s.check else None
    for r in rows:
        r["latency_ms"] = r["predicted_latency_ms"]
        r["group"] = "base" if r["key"] == genome_key(base) else "candidate"
        r["roles"] = [r["genome"]]
    summary = {"settings": {**asdict(s), "recipe": asdict(s.recipe)}, "t0_ms": t0 * 1e3,
               "wall_s": time.perf_counter() - start, "best": best, "base": evaluated[genome_key(base)],
               "candidates": rows, "latency_check": latency_check, "table": str(table.path),
               "table_entries": len(table.entries)}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1, default=str).encode())
    report.write_csv(out / "results.csv", rows)
    report.plot(out / "acc_vs_macs.png", rows, "macs", "MACs", "block search: accuracy vs MACs")
    report.plot(out / "acc_vs_latency.png", rows, "latency_ms", f"predicted {s.latency} latency (ms, {table.device})",
                "block search: accuracy vs latency", front=True)
    say(f"best: {best['genome']} (acc {100 * best['val_acc']:.2f}%, reward {best['reward']:.4f}); "
        f"spec saved to {out / 'best_spec.json'}")
    return summary
