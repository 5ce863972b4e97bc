"""Per-layer times from torch.profiler records: the grouping by module, on synthetic traces and on a CPU trace."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

import effnet
from effnet.analysis import traced
from effnet.analysis.ceilings import Ceilings
from effnet.analysis.measure import measure
from effnet.analysis.profile import profile
from effnet.analysis.traced import Work, assign, attribute, functional_records, split_forward, trace_layers

pytestmark = pytest.mark.usefixtures("one_thread")

HIGH = Ceilings("cpu", "test", "float32", peak_flops=1e16, bandwidth=1e14)


# --- pure pieces, on hand-made traces -------------------------------------------------------------

def test_each_unit_gets_the_idle_time_before_it_and_the_shares_add_up_to_the_span():
    chunk = [Work("k0", 10.0, 14.0), Work("k1", 20.0, 21.0), Work("k2", 21.0, 25.0), Work("k3", 22.0, 24.0)]
    shares, own = split_forward(chunk)
    assert shares == pytest.approx([4e-6, 7e-6, 4e-6, 0.0])  # k1 waited 6 us for its launch; k3 overlapped k2
    assert own == pytest.approx([4e-6, 1e-6, 4e-6, 2e-6])
    assert sum(shares) == pytest.approx((25.0 - 10.0) * 1e-6)


def test_work_is_assigned_to_module_records_and_to_functional_records_by_op_and_call_order():
    modules = {"", "blk", "blk.conv", "relu"}
    records = ["blk.conv", "blk.add", "blk.add#1", "relu", "relu#1", "blk.mul"]
    work = [
        Work("conv_a", 0, 1, "blk.conv", ("aten::conv2d", "aten::cudnn_convolution"), 1),
        Work("conv_b", 1, 2, "blk.conv", ("aten::conv2d", "aten::cudnn_convolution"), 1),
        Work("add", 2, 3, "blk", ("aten::add",), 2),
        Work("add_part2", 3, 4, "blk", ("aten::add",), 2),  # a second kernel of the same op call
        Work("add", 4, 5, "blk", ("aten::add_",), 3),  # the container's second add: blk.add#1
        Work("elementwise", 5, 6, "blk", ("aten::where",), 4),  # no record of that op: shared in blk
        Work("relu", 6, 7, "relu", ("aten::relu",), 5),
        Work("relu", 7, 8, "relu#1", ("aten::relu",), 6),  # a module called twice
        Work("memset", 8, 9, None, (), -1),  # launched outside any module
    ]
    labels = assign(work, records, modules)
    assert labels == [("record", "blk.conv"), ("record", "blk.conv"), ("record", "blk.add"), ("record", "blk.add"),
                      ("record", "blk.add#1"), ("share", "blk"), ("record", "relu"), ("record", "relu#1"),
                      ("none", "")]
    functional = functional_records(records, modules)
    assert functional == {"blk": ["blk.add", "blk.add#1", "blk.mul"]}
    times, left = attribute(labels, [1.0] * len(work), functional, {"blk.add": 1.0, "blk.add#1": 1.0, "blk.mul": 2.0})
    assert times == pytest.approx({"blk.conv": 2.0, "blk.add": 2.25, "blk.add#1": 1.25, "blk.mul": 0.5,
                                   "relu": 1.0, "relu#1": 1.0})
    assert left == 1.0 and sum(times.values()) + left == pytest.approx(len(work))  # nothing lost or counted twice


def test_a_composite_op_matches_the_decomposed_op_the_profile_counted():
    # F.adaptive_avg_pool2d in a container's forward: the profile sees "mean", the trace "adaptive_avg_pool2d".
    work = [Work("reduce", 0, 1, "", ("aten::adaptive_avg_pool2d", "aten::mean"), 7)]
    assert assign(work, ["mean"], {""}) == [("record", "mean")]


# --- the two passes on a real CPU trace (aten ops stand for kernels) ------------------------------

def tiny_model() -> nn.Module:
    return effnet.create_model("efficientnet_b0", width=0.25, depth=0.25, num_classes=10).eval()


def test_cpu_trace_times_every_record_by_its_own_ops():
    model = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    prof = profile(model, 32, batch_size=2)
    names = [r.name for r in prof.layers]
    with torch.inference_mode():
        t = trace_layers(model, x, names, {n: 1.0 for n in names}, torch.device("cpu"), 3, lambda: None)
    assert len(t.spans) == 3 and all(s > 0 for s in t.spans)
    # one untraced whole forward per round, and each traced round holds exactly one forward's work
    assert len(t.wholes) == 3 and all(w > 0 for w in t.wholes)
    assert set(t.per_record) == set(names)  # every record, module or functional, got its own work
    assert all(t.per_record[n] > 0 and t.busy[n] <= t.per_record[n] + 1e-9 for n in names)
    # functional records (SE's mean, sigmoid and gate, the residual adds) were matched by op name; the
    # only unmatched ops are the root's flatten (a view) and the eval-mode dropout, which are no records
    assert t.unmatched == 2
    assert not any("ran other work" in n for n in t.notes)
    # each record's fastest run is at most its time in any one forward, and one forward's records fit in
    # its span: a unit counted twice, or a parent counted with its children, would break this
    assert sum(t.per_record_min.values()) <= min(t.spans) * (1 + 1e-9)


def test_a_timed_forward_with_other_work_falls_back_to_the_labelled_pass(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    real = traced.timed_work
    monkeypatch.setattr(traced, "timed_work", lambda events, device: real(events, device)[:-1])
    names = [r.name for r in profile(model, (3, 8, 8)).layers]
    with torch.inference_mode():
        t = trace_layers(model, torch.randn(1, 3, 8, 8), names, {}, torch.device("cpu"), 2, lambda: None)
    assert any("ran other work" in n for n in t.notes) and len(t.spans) == 1
    assert set(t.per_record) == {"0", "1"}


def test_measure_with_the_profiler_method_on_cpu():
    m = measure(tiny_model(), 32, "cpu", warmup=1, runs=3, ceilings=HIGH, per_layer="profiler")
    assert m.per_layer == "profiler" and m.busy_sum_s is not None
    assert len(m.whole.times) == 3  # the whole forward as timed between the traced ones, one per round
    assert 0 < m.busy_sum_s <= m.per_layer_sum_s
    assert all(t.measured_s is not None for t in m.layers)
    assert any(line.startswith("per-layer sum (torch.profiler op records)") for line in m.summary())
    assert m.to_dict()["layers"][0]["busy_s"] is not None
    with pytest.raises(ValueError, match="per_layer must be one of"):
        measure(tiny_model(), 32, "cpu", ceilings=HIGH, per_layer="events")


# --- the GPU branch of the labelling pass, on a hand-made kernel trace -----------------------------

def _event(eid, name, start, end, parent=None, device=traced.DeviceType.CPU, **extra):
    e = types.SimpleNamespace(id=eid, name=name, time_range=types.SimpleNamespace(start=start, end=end),
                              cpu_parent=parent, cpu_children=[], is_async=False, kernels=[], device_type=device,
                              **extra)
    if parent is not None:
        parent.cpu_children.append(e)
    return e


def _gpu_trace(linked: bool):
    r_conv = _event(1, traced.RANGE + "conv", 0, 10)
    conv = _event(2, "aten::conv2d", 1, 9, r_conv)
    cudnn = _event(3, "aten::cudnn_convolution", 2, 8, conv)
    r_root = _event(4, traced.RANGE + "", 0, 20)
    add = _event(5, "aten::add", 11, 12, r_root)
    kernels = []
    for i, (op, name, s, e) in enumerate([(cudnn, "implicit_gemm", 5, 9), (cudnn, "bias_act", 9, 10),
                                           (add, "elementwise_add", 12, 13)]):
        k = _event(100 + i, name, s, e, device=traced.DeviceType.CUDA,
                   **({"linked_correlation_id": op.id} if linked else {}))
        op.kernels.append(types.SimpleNamespace(name=name, duration=e - s))
        kernels.append(k)
    annotation = _event(200, traced.RANGE + "conv", 5, 10, device=traced.DeviceType.CUDA, is_user_annotation=True)
    return [r_conv, conv, cudnn, r_root, add, *kernels, annotation]


@pytest.mark.parametrize("linked", [True, False])
def test_kernels_are_labelled_by_the_module_range_around_the_op_that_launched_them(linked):
    work = traced.labelled_work(_gpu_trace(linked), torch.device("cuda"))
    assert [(w.name, w.module, w.ops) for w in work] == [
        ("implicit_gemm", "conv", ("aten::conv2d", "aten::cudnn_convolution")),
        ("bias_act", "conv", ("aten::conv2d", "aten::cudnn_convolution")),
        ("elementwise_add", "", ("aten::add",))]
    assert work[0].call == work[1].call == 2  # one op call: the conv2d
    assert assign(work, ["conv", "add"], {"", "conv"}) == [("record", "conv")] * 2 + [("record", "add")]
    timed = traced.timed_work(_gpu_trace(linked), torch.device("cuda"))
    assert [w.name for w in timed] == ["implicit_gemm", "bias_act", "elementwise_add"]  # the annotation left out


def test_the_tracer_cost_comes_off_the_waits_for_launches_only():
    chunk = [Work("k0", 10.0, 14.0), Work("k1", 20.0, 21.0), Work("k2", 21.5, 25.0)]
    shares, own = split_forward(chunk, cost_s=2e-6)
    # k1 waited 6 us, 2 of them the tracer's; k2 waited 0.5 us, less than the cost: it keeps its own time
    assert shares == pytest.approx([4e-6, 5e-6, 3.5e-6]) and own == pytest.approx([4e-6, 1e-6, 3.5e-6])


def test_tracer_cost_is_measured_per_launch():
    cost = traced.tracer_cost(torch.device("cpu"), lambda: None, launches=50, runs=3)
    assert 0 <= cost < 1e-3  # the profiler's cost of recording one op: microseconds, never negative
