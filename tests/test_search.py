"""effnet search: the coefficient grid, the reward, the Pareto front, errors, and tiny end-to-end runs."""

import json
import math

import pytest

import effnet
from effnet.search.candidate import SearchRecipe
from effnet.search.compound import Base, Settings, search, single_dimension
from effnet.search.executors import LocalExecutor, make_executor
from effnet.search.grid import PAPER_COEFFICIENTS, Triple, coefficient_grid, flops_factor, reward
from effnet.search.report import pareto_front


def test_filter_keeps_exactly_the_points_within_tolerance_of_the_target():
    assert flops_factor(1.2, 1.1, 1.15) == pytest.approx(1.2 * 1.21 * 1.3225)  # 1.92027
    grid = coefficient_grid(step=0.05)
    assert Triple(*PAPER_COEFFICIENTS) in grid  # the grid re-discovers EfficientNet's choice as feasible
    assert all(abs(t.cost - 2.0) <= 0.1 + 1e-12 for t in grid)
    assert Triple(1.5, 1.1, 1.15) not in grid  # cost 2.40
    assert Triple(2.0, 1.0, 1.0) in grid and Triple(1.0, 1.0, 1.4) in grid  # depth-only, resolution-only ends
    # Every excluded grid point really is outside the tolerance: count them from the axes by hand.
    axis = [round(1.0 + i * 0.05, 10) for i in range(23)]  # alpha 1.00 .. 2.10
    small = [round(1.0 + i * 0.05, 10) for i in range(10)]  # beta, gamma 1.00 .. 1.45
    expected = {(a, b, g) for a in axis for b in small for g in small if abs(a * b * b * g * g - 2) <= 0.1 + 1e-12}
    assert {(t.alpha, t.beta, t.gamma) for t in grid} == expected
    assert abs(grid[0].cost - 2) <= abs(grid[-1].cost - 2)  # closest to the target first


def test_reward_known_values():
    assert reward(0.8, 1.0, 1.0) == pytest.approx(0.8)
    assert reward(0.8, 2.0, 1.0) == pytest.approx(0.8 * 2**-0.07)  # twice as slow costs ~4.7%
    assert reward(0.8, 0.5, 1.0) > 0.8
    assert reward(0.5, 3.0, 1.5, w=-1.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="latencies must be > 0"):
        reward(0.8, 0.0, 1.0)


def test_pareto_front():
    rows = [{"id": i, "latency_ms": t, "val_acc": a} for i, (t, a) in enumerate([(1, 0.5), (2, 0.4), (2, 0.6),
                                                                                 (3, 0.6), (4, 0.7)])]
    assert [r["id"] for r in pareto_front(rows)] == [0, 2, 4]


def test_bad_input_gets_one_line_errors():
    with pytest.raises(ValueError, match="no grid point has .* within 0.1 of 50"):
        coefficient_grid(target=50)
    with pytest.raises(ValueError, match="alpha range must be 0 < low <= high"):
        coefficient_grid(alpha=(1.5, 1.2))
    with pytest.raises(ValueError, match="step must be a number > 0"):
        coefficient_grid(step=0)
    from effnet.search.options import devices

    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        devices("tpu", None)
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        make_executor("slurm", ["cpu"])
    with pytest.raises(ValueError, match="budget too small: --epochs must be >= 1"):
        search(Settings("unused", recipe=SearchRecipe(epochs=0)), LocalExecutor(["cpu"]))


def test_single_dimension_candidates_follow_the_formula_without_a_macs_counter():
    base = Base(resolution=64)
    d = single_dimension(base, Triple(1.2, 1.1, 1.15), 4.0, 2.0)
    assert d["width only"]["width"] == pytest.approx(0.5) and d["depth only"]["depth"] == pytest.approx(2.0)
    assert d["resolution only"]["resolution"] == 128
    assert d["compound"]["depth"] == pytest.approx(0.5 * 1.44) and d["compound"]["resolution"] == 84  # 64 * 1.3225


def test_single_dimension_at_a_repeat_step_keeps_the_network_whose_counted_macs_are_closest():
    # Depth-only x2 of this base bisects to depth 1.0000000009, just past a repeat step: its 4-decimal
    # snap (what the candidate id carries) is another network.  The chosen dict is snapped, and its own
    # counted MACs are the closest of the snapped choices (a search on the GPU once stopped here).
    from effnet.search.compound import macs_counter

    count = macs_counter("efficientnet_b0", 10)
    base = Base(width=0.25, depth=0.5, resolution=32)
    d = single_dimension(base, Triple(1.2, 1.1, 1.15), 2.0, 2.0, count)
    goal = 2.0 * count(base.scaled())
    for k, v in d.items():
        assert round(v["depth"], 4) == v["depth"] and round(v["width"], 4) == v["width"], k
    depth = d["depth only"]
    near = [{**depth, "depth": depth["depth"] + delta} for delta in (-1e-4, 1e-4)]
    assert all(abs(count(depth) - goal) <= abs(count(n) - goal) for n in near)
    assert 1.2 < count(depth) / count(base.scaled()) < 3


@pytest.mark.slow
def test_tiny_compound_search_end_to_end_and_resume(tmp_path, one_thread, digits_folder):
    out = tmp_path / "search"
    s = Settings(str(out), base=Base(width=0.25, depth=0.25, resolution=32),
                 recipe=SearchRecipe(data=str(digits_folder), epochs=1, batch_size=32, latency_runs=2), step=0.1,
                 limit=2,
                 phi_max=1, multiples=(2.0,))
    summary = search(s, LocalExecutor(["cpu"]), say=lambda _: None)
    files = sorted((out / "candidates").glob("*.json"))
    # One file per distinct network: a network with several roles (the winner is compound x2; a grid
    # point may be depth-only x2) is trained once.
    ids = {summary["base"]["id"], *(r["id"] for r in summary["ranking"]), *(r["id"] for r in summary["scaling"]),
           *(r["id"] for r in summary["single_dimension"])}
    assert len(ids) >= 4 and {p.stem for p in files} == ids
    assert summary["scaling"][0]["id"] == summary["ranking"][0]["id"]  # phi = 1 is the step-1 winner
    for name in ("results.csv", "summary.json", "summary.md", "acc_vs_macs.png", "acc_vs_latency.png"):
        assert (out / name).stat().st_size > 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 2 + 1 + 4 and rows[0].startswith("id,roles,alpha")  # header, base, grid, phi, x2 rows
    x2 = {r["scaling"]: r for r in summary["single_dimension"]}
    assert x2["depth only"]["macs_ratio"] > 1.2 and x2["resolution only"]["macs_ratio"] > 1.5
    first = {p.name: p.stat().st_mtime_ns for p in files}
    # A killed search resumes: finished candidates are not trained again, a missing one is.
    files[0].unlink()
    search(s, LocalExecutor(["cpu"]), say=lambda _: None)
    again = {p.name: p.stat().st_mtime_ns for p in sorted((out / "candidates").glob("*.json"))}
    changed = [n for n in again if again[n] != first.get(n)]
    assert changed == [files[0].name]
    result = json.loads(files[1].read_text())
    assert result["params"] > 0 and result["latency_ms"] > 0 and 0 <= result["val_acc"] <= 1
    assert math.isclose(summary["base"]["width"], 0.25)
    # --remeasure times every finished network again without training any.
    from dataclasses import replace

    again = search(replace(s, remeasure="cpu"), LocalExecutor(["cpu"]), say=lambda _: None)
    assert all(r["latency_median_ms"] >= r["latency_ms"] > 0 for r in again["single_dimension"])
    assert len(list((out / "runs").iterdir())) == len(ids)


def _square(job, device):
    return {"id": job["id"], "value": job["x"] ** 2, "device": device}


def test_executors_share_one_interface():
    jobs = [{"id": str(i), "x": i} for i in range(3)]
    assert sorted(r["value"] for r in LocalExecutor(["cpu"]).run(_square, jobs)) == [0, 1, 4]


def _where(job, device):
    import os
    import time

    time.sleep(0.3)  # long enough that one worker cannot drain the queue before the other starts
    return {"id": job["id"], "pid": os.getpid(), "device": device}


@pytest.mark.slow
def test_local_pool_runs_one_worker_per_device():
    jobs = [{"id": str(i)} for i in range(6)]
    results = list(LocalExecutor(["cpu", "cpu"]).run(_where, jobs))
    assert sorted(r["id"] for r in results) == [str(i) for i in range(6)]
    assert len({r["pid"] for r in results}) == 2  # two worker processes, each holding one device


@pytest.mark.slow
def test_ray_executor_with_a_local_cpu_cluster():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra effnet[search]")
    import sys

    from effnet.search.executors import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    try:
        ex = RayExecutor()
        jobs = [{"id": str(i), "x": i} for i in range(4)]
        results = list(ex.run(_square, jobs))
    finally:
        ray.shutdown()
    assert sorted(r["value"] for r in results) == [0, 1, 4, 9] and {r["device"] for r in results} == {"cpu"}


def test_create_model_from_a_spec_file(tmp_path):
    config = effnet.model_config("efficientnet_b0", width=0.25, depth=0.25, num_classes=3)
    doc = {"format": "effnet-spec", "base": "efficientnet_b0", "resolution": 32, "spec": config.spec.to_dict()}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(doc))
    model = effnet.create_model(spec=path, num_classes=3)
    assert model.config.spec == config.spec and model.config.name == "efficientnet_b0"
    assert effnet.create_model(spec=config.spec.to_dict(), name="efficientnet_b0", num_classes=3).config == config
    with pytest.raises(ValueError, match="whole .* table: pass it without width"):
        effnet.model_config(spec=path, width=2.0)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not an effnet spec file"):
        effnet.model_config(spec=path)
