"""effnet search blocks: the search space, the latency lookup table (fake timer), a tiny search."""

import json
import random
from dataclasses import replace

import pytest
import torch

import effnet
from effnet.search.blocks import (
    BlockSettings,
    apply,
    base_genome,
    calibration_networks,
    genome_key,
    mutate,
    random_genome,
    search_blocks,
)
from effnet.search.candidate import SearchRecipe
from effnet.search.executors import LocalExecutor
from effnet.search.latency import (
    GLUE,
    LatencyTable,
    check,
    fastest,
    glue_key,
    plan_entries,
    resolve_clock,
    torch_timer,
)
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
    assert reopened.path.name == "latency-fake-gpu-9000-inference-b1-wall.json"
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


class WholeTimer:
    """Parts as ``fake_timer``; a whole network costs its parts' sum plus ``glue_us`` per block (or per
    block of each type: a dict) and a factor ``scale`` (a made-up device whose network differs from
    the sum of its parts). Records calls."""

    def __init__(self, glue_us: float | dict, scale: float = 1.0):
        self.glue_us, self.scale, self.calls = glue_us, scale, []

    def __call__(self, module, x):
        whole = isinstance(module, effnet.EfficientConvNet)
        self.calls.append((type(module).__name__, whole))
        if not whole:
            return fake_timer(module, x)
        plan, res = module.plan, module.config.resolution
        parts = sum(fake_timer(*_built(b)) for _, b in plan_entries(plan, res))
        glue = self.glue_us if isinstance(self.glue_us, dict) else dict.fromkeys(BlockType, self.glue_us)
        return self.scale * parts + 1e-6 * sum(glue[b.block] for b in plan.blocks)


def _built(build):
    module, (channels, size, grad) = build()
    return module, torch.randn(1, channels, size, size).requires_grad_(grad)


def test_calibration_is_signed_and_the_check_times_parts_and_networks_in_interleaved_rounds():
    base = effnet.model_config("efficientnet_b0", width=0.25, depth=0.5, resolution=32, num_classes=3)
    # On a GPU one synchronisation per timed part costs more than a network spends between blocks:
    # the whole is *faster* than its parts' sum, and the calibrated share per block is negative.
    timer = WholeTimer(glue_us=-3.0)
    table = LatencyTable(device="fake", mode="train-step", batch=1)
    assert table.calibrate(base, timer, rounds=2) == pytest.approx({glue_key(BlockType.MBCONV): -3e-6})
    assert table.predict(base, timer) == pytest.approx(timer(effnet.EfficientConvNet(base), None))
    rng = random.Random(3)
    configs = [replace(base, spec=apply(base.spec, random_genome(7, rng))) for _ in range(3)]
    timer.calls.clear()
    result = check(table, configs, timer, rounds=2)
    assert result["ok"] and result["worst_error"] == pytest.approx(0, abs=1e-9) and result["rounds"] == 2
    assert result["between_blocks_ms"] == pytest.approx({"mbconv": -3e-3})
    assert table.glue(BlockType.FUSED_MBCONV) == pytest.approx(-3e-6)  # no Fused-MBConv calibrated: the mean
    wholes = [i for i, (_, whole) in enumerate(timer.calls) if whole]
    assert len(wholes) == 6  # 3 networks x 2 rounds, each round timing every missing part and then every network
    parts_per_round = wholes[0]
    assert parts_per_round > 0 and wholes == [parts_per_round + k for k in (0, 1, 2)] + \
        [2 * parts_per_round + 3 + k for k in (0, 1, 2)]
    # A device where the network is 20% slower than its parts: the check says so, it does not hide it.
    skewed = LatencyTable(device="fake", mode="train-step", batch=1)
    skewed.calibrate(base, WholeTimer(glue_us=0.0), rounds=1)
    result = check(skewed, configs, WholeTimer(glue_us=0.0, scale=1.2), rounds=1)
    assert not result["ok"] and result["worst_error"] == pytest.approx(1 - 1 / 1.2, rel=1e-6)


def test_calibration_fits_one_share_per_block_type_on_the_base_and_its_swapped_twin():
    base = effnet.model_config("efficientnet_b0", width=0.25, depth=0.5, resolution=32, num_classes=3)
    nets = calibration_networks(base)
    twin, original = effnet.plan.expand(nets[1]).blocks, effnet.plan.expand(nets[0]).blocks
    assert nets[0] == base and len(twin) == len(original)
    assert {b.block for b in original} == {BlockType.MBCONV} and {b.block for b in twin} == {BlockType.FUSED_MBCONV}
    # a device where an MBConv costs 40 us more inside a network and a Fused-MBConv 5 us less
    timer = WholeTimer(glue_us={BlockType.MBCONV: 40.0, BlockType.FUSED_MBCONV: -5.0})
    table = LatencyTable(device="fake", mode="train-step", batch=1)
    shares = table.calibrate(nets, timer, rounds=1)
    assert shares == pytest.approx({glue_key(BlockType.MBCONV): 40e-6, glue_key(BlockType.FUSED_MBCONV): -5e-6})
    rng = random.Random(5)
    mixed = [replace(base, spec=apply(base.spec, random_genome(7, rng))) for _ in range(4)]
    assert check(table, mixed, timer, rounds=1)["worst_error"] == pytest.approx(0, abs=1e-9)
    # one share for all types (the earlier method) cannot fit this device: the mixed networks miss
    single = LatencyTable(device="fake", mode="train-step", batch=1)
    single.entries[glue_key(BlockType.MBCONV)] = 17.5e-6  # (40 - 5) / 2: right on average, wrong per network
    single.entries[glue_key(BlockType.FUSED_MBCONV)] = 17.5e-6
    assert check(single, mixed, timer, rounds=1)["worst_error"] > 0.01
    with pytest.raises(ValueError, match="at least one network"):
        LatencyTable(device="fake", mode="train-step", batch=1).calibrate([], timer)


def test_fastest_keeps_each_items_minimum_over_rounds():
    times = iter([5.0, 7.0, 3.0, 9.0, 4.0, 8.0])  # rounds of (a, b): (5, 7), (3, 9), (4, 8)
    best = fastest({"a": (None, None), "b": (None, None)}, lambda m, x: next(times), rounds=3)
    assert best == {"a": 3.0, "b": 7.0}
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        fastest({}, fake_timer, rounds=0)


def test_train_step_timer_leaves_no_gradients_behind_and_only_the_stem_skips_its_input_gradient(one_thread):
    config = effnet.model_config("efficientnet_b0", width=0.25, depth=0.25, resolution=32, num_classes=3)
    entries = plan_entries(effnet.plan.expand(config), 32)
    assert [build()[1][2] for _, build in entries] == [False] + [True] * (len(entries) - 1)
    timer = torch_timer("cpu", "train-step", runs=2, clock="wall", evict_mib=1)
    module, x = _built(entries[1][1])
    assert timer(module, x) > 0
    assert all(p.grad is None for p in module.parameters()) and x.grad is None  # nothing accumulated
    model = effnet.EfficientConvNet(config)
    assert timer(model, torch.randn(2, 3, 32, 32)) > 0
    assert all(p.grad is None for p in model.parameters())


def test_clock_choice_and_a_table_timed_another_way_is_not_reused(tmp_path, one_thread):
    assert resolve_clock("cpu") == "thread"  # one torch thread (the fixture): its CPU time is the cost
    assert resolve_clock("cpu", "wall") == "wall"
    assert resolve_clock("cuda") == "graph" and resolve_clock("cuda:1", "wall") == "wall"
    with pytest.raises(ValueError, match="unknown clock 'sundial'"):
        resolve_clock("cpu", "sundial")
    with pytest.raises(ValueError, match="clock 'thread' needs device cpu"):
        resolve_clock("cuda", "thread")
    with pytest.raises(ValueError, match="clock 'graph' \\(CUDA graphs\\) needs a CUDA device, got cpu"):
        resolve_clock("cpu", "graph")
    table = LatencyTable.open(tmp_path, "cpu", "inference", 1, "thread")
    table.entries["x"] = 1.0
    table.save()
    assert LatencyTable.open(tmp_path, "cpu", "inference", 1, "thread").entries == {"x": 1.0}
    assert LatencyTable.open(tmp_path, "cpu", "inference", 1, "wall").entries == {}
    doc = json.loads(table.path.read_text())
    table.path.write_text(json.dumps({**doc, "method": 1}))  # a table of the old timing method
    assert LatencyTable.open(tmp_path, "cpu", "inference", 1, "thread").entries == {}
    assert GLUE == "between-blocks" and glue_key(BlockType.MBCONV) == "between-blocks:mbconv"
