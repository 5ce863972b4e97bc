"""effnet search blocks: the search space, the latency lookup table (fake timer), a tiny search."""

import json
import random

import pytest

import effnet
from effnet.search.blocks import (
    BlockSettings,
    apply,
    base_genome,
    genome_key,
    mutate,
    random_genome,
    search_blocks,
)
from effnet.search.candidate import SearchRecipe
from effnet.search.executors import LocalExecutor
from effnet.search.latency import LatencyTable, check
from effnet.tables import BlockType


def fake_timer(module, x):
    """A deterministic stand-in for the device: 1 us per thousand parameters plus 1 us per call."""
    return 1e-6 + 1e-9 * sum(p.numel() for p in module.parameters()) * x.shape[-1]


def test_base_genome_rebuilds_the_base_table_and_mutation_changes_one_choice():
    base = effnet.model_config("efficientnet_b0", width=0.25, depth=0.5).spec
    genome = base_genome(base)
    assert apply(base, genome) == base
    rng = random.Random(0)
    for _ in range(20):
        child = mutate(genome, rng)
        diffs = [(a, b) for a, b in zip(genome, child) if a != b]
        assert len(diffs) == 1
        a, b = diffs[0]
        assert sum(getattr(a, f) != getattr(b, f) for f in ("block", "kernel", "expand", "delta")) == 1
    g = random_genome(7, rng)
    spec = apply(base, g)
    for s, c, b in zip(spec.stages, g, base.stages):
        assert s.repeats == max(1, b.repeats + c.delta)
        assert (s.se_ratio > 0) == (c.block is BlockType.MBCONV)  # SE only in MBConv stages (V2)
    assert genome_key(g) == genome_key(tuple(g)) and genome_key(g) != genome_key(genome)


def test_latency_table_times_each_distinct_block_once_and_caches_per_device(tmp_path):
    config = effnet.model_config("efficientnet_b0", width=0.25, resolution=32, num_classes=3)
    table = LatencyTable.open(tmp_path, "Fake GPU 9000", "inference", 1)
    first = table.predict(config, fake_timer)
    n = table.timed
    # B0's 16 blocks: each stage's first block (7) + one key for the repeats of the 5 stages that have
    # them; plus stem and head: 14 entries timed, not 18.
    assert n == 14 and len(table.entries) == n
    assert table.predict(config, fake_timer) == first and table.timed == n  # nothing timed again
    table.save()
    reopened = LatencyTable.open(tmp_path, "Fake GPU 9000", "inference", 1)
    assert reopened.path.name == "latency-fake-gpu-9000-inference-b1.json"
    assert reopened.predict(config, fake_timer) == pytest.approx(first) and reopened.timed == 0
    result = check(reopened, [config], fake_timer)
    assert set(result) >= {"worst_error", "ok", "networks"} and result["networks"][0]["predicted_ms"] > 0


@pytest.mark.slow
def test_tiny_block_search_saves_a_spec_that_builds_and_trains(tmp_path, one_thread):
    out = tmp_path / "blocks"
    s = BlockSettings(str(out), width=0.25, depth=0.25, resolution=32,
                      recipe=SearchRecipe(data="digits", epochs=1, batch_size=64, latency_runs=2), budget=3, population=2,
                      sample=2, latency_batch=2, check=2)
    table = LatencyTable(device="fake", mode="train-step", batch=2)
    summary = search_blocks(s, LocalExecutor(["cpu"]), table, fake_timer, say=lambda _: None)
    assert len(summary["candidates"]) == 3 and summary["base"]["reward"] == pytest.approx(summary["base"]["val_acc"])
    assert summary["best"]["reward"] == max(c["reward"] for c in summary["candidates"])
    assert len(summary["latency_check"]["networks"]) == 2
    for name in ("results.csv", "acc_vs_latency.png", "best_spec.json"):
        assert (out / name).stat().st_size > 0
    doc = json.loads((out / "best_spec.json").read_text())
    model = effnet.create_model(spec=out / "best_spec.json", num_classes=10)
    assert model.config.spec.to_dict() == doc["spec"]

    from effnet.train.config import TrainConfig
    from effnet.train.run import train

    run = train(TrainConfig.for_data("digits", spec=str(out / "best_spec.json"), epochs=1, stages=1, batch_size=64,
                                     output=str(tmp_path / "train"), progress=False, plots=False, device="cpu"))
    saved = json.loads((tmp_path / "train" / "config.json").read_text())["model"]
    assert saved["spec"] == doc["spec"] and run.history


def test_bad_block_search_settings():
    table = LatencyTable(device="fake", mode="inference", batch=1)
    with pytest.raises(ValueError, match="budget too small"):
        search_blocks(BlockSettings("unused", budget=0), LocalExecutor(["cpu"]), table, fake_timer)
    with pytest.raises(ValueError, match="evolution needs 2 <= --sample <= --population <= --budget"):
        search_blocks(BlockSettings("unused", budget=3, population=6), LocalExecutor(["cpu"]), table, fake_timer)
    with pytest.raises(ValueError, match="unknown method 'rl'"):
        search_blocks(BlockSettings("unused", method="rl"), LocalExecutor(["cpu"]), table, fake_timer)
