"""Timing harness, ceilings, roofline classification and the measured/analytic join (CPU, cheap)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import effnet
from effnet.analysis import ceilings as ceil_mod
from effnet.analysis.ceilings import Ceilings, get_ceilings, measure_ceilings
from effnet.analysis.hooks import attribute, hook_overhead, hook_plan
from effnet.analysis.measure import LayerTime, measure
from effnet.analysis.profile import profile
from effnet.analysis.roofline import plot_roofline
from effnet.analysis.timing import Timing, time_fn
from effnet.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

# Ceilings far above any CPU: every predicted time is below every measured one.
HIGH = Ceilings("cpu", "test", "float32", peak_flops=1e16, bandwidth=1e14)


def tiny_model() -> nn.Module:
    return effnet.create_model("efficientnet_b0", width=0.25, depth=0.25, num_classes=10)


# --- timing harness -------------------------------------------------------------------------------

class FakeDevice:
    """A clock that advances only when the timed function runs, and a log of calls."""

    def __init__(self, durations: list[float]) -> None:
        self.t = 0.0
        self.durations = iter(durations)
        self.log: list[str] = []

    def clock(self) -> float:
        self.log.append("clock")
        return self.t

    def sync(self) -> None:
        self.log.append("sync")

    def fn(self) -> None:
        self.log.append("fn")
        self.t += next(self.durations)


def test_time_fn_warms_up_then_takes_the_median_between_synchronisations():
    warmups = [100.0, 100.0]  # slow first calls (compilation, allocation) must not count
    timed = [0.3, 0.1, 0.2, 9.0, 0.25]
    dev = FakeDevice(warmups + timed)
    t = time_fn(dev.fn, warmup=2, runs=5, synchronize=dev.sync, clock=dev.clock)
    assert t.times == pytest.approx(tuple(timed))
    assert t.median == pytest.approx(0.25)  # robust to the 9.0 outlier
    assert t.min == pytest.approx(0.1)
    assert t.warmup == 2
    # warm-up calls come first, untimed; each timed call sits between sync+clock and sync+clock
    assert dev.log[:2] == ["fn", "fn"]
    assert dev.log[2:] == ["sync", "clock", "fn", "sync", "clock"] * 5


def test_time_fn_with_several_calls_per_sample_synchronises_once_per_sample_and_divides():
    dev = FakeDevice([1.0] + [0.1, 0.3, 0.2, 0.6])  # one warm-up, then two samples of two calls
    t = time_fn(dev.fn, warmup=1, runs=2, synchronize=dev.sync, clock=dev.clock, number=2)
    assert t.times == pytest.approx((0.2, 0.4))  # seconds per call: (0.1 + 0.3) / 2, (0.2 + 0.6) / 2
    assert dev.log[1:] == ["sync", "clock", "fn", "fn", "sync", "clock"] * 2  # calls queue between syncs


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"warmup": -1}, {"number": 0}])
def test_time_fn_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="runs"):
        time_fn(lambda: None, **kwargs)


def test_timing_iqr_is_the_spread():
    assert Timing((1.0, 2.0, 3.0, 4.0, 5.0), 0).iqr > 0
    assert Timing((2.0,), 0).iqr == 0.0


# --- ceilings and classification ------------------------------------------------------------------

def test_ceilings_measured_on_cpu_are_positive_and_plausible():
    c = measure_ceilings("cpu", matmul_size=192, copy_bytes=2**20, warmup=1, runs=2)
    assert c.device == "cpu" and c.dtype == "float32" and c.device_name
    assert 1e7 < c.peak_flops < 1e14  # between 10 MFLOP/s and 100 TFLOP/s
    assert 1e7 < c.bandwidth < 1e13  # between 10 MB/s and 10 TB/s
    assert c.copy_bytes == 2 * 2**20  # read + written
    assert c.versions["torch"] == torch.__version__


def test_ceilings_cache_is_reused_and_bypassed(tmp_path, monkeypatch):
    path = tmp_path / "ceilings.json"
    small = {"matmul_size": 64, "copy_bytes": 2**16, "warmup": 0, "runs": 1}
    first = get_ceilings("cpu", cache_path=path, **small)
    assert json.loads(path.read_text())  # written
    assert not list(tmp_path.glob("*.tmp"))  # atomically: no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private mode

    def fail(*a, **k):
        raise AssertionError("measured although cached")

    monkeypatch.setattr(ceil_mod, "measure_ceilings", fail)
    assert get_ceilings("cpu", cache_path=path) == first
    monkeypatch.setenv("EFFNET_NO_CACHE", "1")
    with pytest.raises(AssertionError, match="measured although cached"):
        get_ceilings("cpu", cache_path=path)
    monkeypatch.delenv("EFFNET_NO_CACHE")
    # another thread count (or torch version) makes the entry stale
    monkeypatch.setattr(ceil_mod, "library_versions", lambda d: {"torch": "other"})
    with pytest.raises(AssertionError, match="measured although cached"):
        get_ceilings("cpu", cache_path=path)


def test_ceilings_reject_bad_input():
    with pytest.raises(ValueError, match="device"):
        measure_ceilings("tpu")
    with pytest.raises(TypeError, match="floating"):
        measure_ceilings("cpu", torch.int32)


def _records(module: nn.Module, size) -> list:
    return profile(module, size).layers


class AddTwice(nn.Module):
    def forward(self, x):
        return x + x


def test_roofline_classifies_layers_whose_bound_is_known():
    c = Ceilings("cpu", "test", "float32", peak_flops=1e12, bandwidth=1e11)  # ridge: 10 FLOP/byte
    assert c.ridge_intensity == pytest.approx(10.0)
    big_k = _records(nn.Conv2d(2048, 256, 1, bias=False, device="meta"), (2048, 14, 14))[0]  # ~50 FLOP/byte
    add = _records(AddTwice(), (64, 14, 14))[0]
    depthwise = _records(nn.Conv2d(256, 256, 3, padding=1, groups=256, bias=False, device="meta"),
                         (256, 56, 56))[0]
    assert (big_k.kind, add.kind, depthwise.kind) == ("pointwise", "add", "depthwise")
    assert c.bound(big_k.flops, big_k.bytes) == "compute"
    assert c.bound(add.flops, add.bytes) == "memory"
    assert c.bound(depthwise.flops, depthwise.bytes) == "memory"  # 9 MACs per element read: ~4.5 FLOP/byte
    assert c.predicted_time(big_k.flops, big_k.bytes) == pytest.approx(big_k.flops / 1e12)
    assert c.predicted_time(add.flops, add.bytes) == pytest.approx(add.bytes / 1e11)
    t = LayerTime(add, c.predicted_time(add.flops, add.bytes), "memory", measured_s=4 * add.bytes / 1e11)
    assert t.fraction == pytest.approx(0.25)
    assert t.achieved_bandwidth == pytest.approx(0.25e11)


# --- attribution of hooked times to profile records -----------------------------------------------

def test_attribution_gives_functional_ops_their_parents_time_outside_children():
    modules = {"", "a", "a.x", "a.y"}
    names = ["a.x", "a.y", "a.add"]
    p = hook_plan([type("R", (), {"name": n})() for n in names], modules)
    assert p.hooked == modules
    inclusive = {"": [10.0], "a": [9.0], "a.x": [3.0], "a.y": [4.0]}
    times, left, removed = attribute(inclusive, p, {n: 1.0 for n in names})
    assert times == pytest.approx({"a.x": 3.0, "a.y": 4.0, "a.add": 2.0})
    assert left == pytest.approx(1.0) and removed == 0.0  # the root's own time outside "a"
    assert sum(times.values()) + left == pytest.approx(10.0)  # nothing lost, nothing counted twice
    # with a hook cost of 0.5 inside each span and 0.1 per gap: leaves lose 0.5, "a" loses 0.5 + 3 gaps
    times, left, removed = attribute(inclusive, p, {n: 1.0 for n in names}, overhead=(0.5, 0.1))
    assert times == pytest.approx({"a.x": 2.5, "a.y": 3.5, "a.add": 2.0 - 0.5 - 0.3})
    assert sum(times.values()) + left + removed == pytest.approx(10.0)


def test_hook_overhead_is_small_and_positive_on_cpu():
    inside, gap = hook_overhead(torch.device("cpu"), n=16, repeats=3)
    assert 0 < inside < 1e-2 and 0 <= gap < 1e-2


class ReusedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(self.relu(x)))


def test_a_module_called_twice_gets_one_time_per_call():
    m = measure(ReusedRelu(), (3, 16, 16), "cpu", warmup=1, runs=3, ceilings=HIGH)
    names = [t.record.name for t in m.layers]
    assert "relu" in names and "relu#1" in names
    assert all(t.measured_s and t.measured_s > 0 for t in m.layers)


# --- measure(): the join on a tiny model ----------------------------------------------------------

def test_measure_joins_every_profile_record_with_a_time():
    model = tiny_model()
    m = measure(model, 32, "cpu", batch_size=2, warmup=1, runs=3, ceilings=HIGH)
    expected = [r.name for r in profile(model, 32, batch_size=2).layers]
    assert [t.record.name for t in m.layers] == expected
    assert {t.record.kind for t in m.layers} >= {"conv", "depthwise", "pointwise", "se", "norm-act", "add"}
    assert all(t.measured_s is not None and t.measured_s >= 0 for t in m.layers)  # every record got a time
    touching = [t for t in m.layers if t.record.bytes]
    # a layer faster than the calibrated hook cost can come out as 0 ("below resolution"); few do
    assert sum(t.measured_s > 0 for t in touching) >= 0.8 * len(touching)
    assert all(0 < t.fraction <= 1.0 for t in touching if t.measured_s)
    shares = [k["share"] for k in m.by_kind().values()]
    assert sum(shares) == pytest.approx(1.0)
    assert m.per_layer_sum_s > 0 and m.whole.median > 0
    assert m.unaccounted_share == pytest.approx(1 - m.per_layer_sum_s / m.whole.median)
    # Medians of different runs do not add up exactly (attribute() is tested exactly above), but a
    # record counted twice, or a parent counted with its children, would at least double the sum.
    assert m.per_layer_sum_s <= 2 * max(m.instrumented.times)
    assert any("unaccounted" in line for line in m.summary())
    assert model.training  # the caller's model is untouched (a copy was put in eval mode)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["layers"][0]["name"] == expected[0] and d["by_kind"]


def test_measure_with_compile_times_only_the_whole_model(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # the code path, without the compiler's cost
    m = measure(tiny_model(), 32, "cpu", compile=True, warmup=0, runs=2, ceilings=HIGH)
    assert m.compiled and m.per_layer_sum_s is None and m.unaccounted_share is None
    assert all(t.measured_s is None and t.predicted_s > 0 for t in m.layers if t.record.bytes)
    assert any("per-layer times: not measured" in line for line in m.summary())
    png = plot_roofline(m, tmp_path / "compiled.png")  # predictions only, drawn on the roof
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measure_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        measure(tiny_model(), 32, "cpu", batch_size=0, ceilings=HIGH)
    with pytest.raises(ValueError, match="device"):
        measure(tiny_model(), 32, "gpu", ceilings=HIGH)


def test_roofline_png(tmp_path):
    m = measure(tiny_model(), 32, "cpu", warmup=0, runs=2, ceilings=HIGH)
    png = plot_roofline(m, tmp_path / "sub" / "roofline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_profile_cli_measure_adds_roofline_columns_and_chart(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EFFNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ceil_mod, "DEFAULT_SIZES", {"cpu": (128, 2**20)})  # quick ceilings
    png = tmp_path / "roofline.png"
    assert main(["profile", "mobilenet_v2_100", "--resolution", "32", "--measure", "--device", "cpu",
                 "--roofline", str(png), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["layers"]
    assert {r["bound"] for r in rows} <= {"memory", "compute"}
    assert all(r["measured_ms"] > 0 for r in rows if r["kind"] in ("depthwise", "pointwise"))
    assert any(n.startswith("per-layer sum") for n in out["notes"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cache" / "ceilings.json").exists()
