"""effnet.runtime's graph: hand-built (the notes' API), lowered from models, passes, summary, files."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import effnet
from effnet import runtime as rt
from effnet.analysis.profile import profile
from effnet.runtime import ops
from support import randomized_model


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _cna(g, prefix, sd, op, *args, act="relu6", **kw):
    """conv + BN (+ ReLU6) by hand, with the model's tensors under ``prefix``: the notes' three lines."""
    conv = {"weight": sd[f"{prefix}.conv.weight"]}
    if op == "pw":
        g.add(ops.PWConv(g.back(), *args, bias=False, params=conv))
    elif op == "dw":
        g.add(ops.DWConv(g.back(), *args, params=conv, **kw))
    else:
        g.add(ops.Conv(g.back(), *args, params=conv, **kw))
    bn = {k: sd[f"{prefix}.norm.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    g.add(ops.BatchNorm(g.back(), 1e-5, params=bn))
    if act:
        g.add(ops.ReLU6(g.back()))


def test_notes_mobilenet_v2_prefix_matches_the_model(one_thread):
    """The design notes' hand-written MobileNetV2 (stem, block 1, and blocks 2-4 as printed there, with
    the shortcut Add(g.back(), g[16])) with create_model's weights gives the model's first blocks."""
    model = randomized_model("mobilenet_v2_100")
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    g = rt.Graph(input_shape=(3, 64, 64))
    _cna(g, "stem", sd, "conv", 32, 3, stride=2)
    _cna(g, "stages.0.0.depthwise", sd, "dw", 3, 1)
    _cna(g, "stages.0.0.project", sd, "pw", 16, act=None)
    assert len(g) == 9  # the notes' "//9": block 2 starts at node 9
    _cna(g, "stages.1.0.expand", sd, "pw", 96)
    _cna(g, "stages.1.0.depthwise", sd, "dw", 3, 2)
    _cna(g, "stages.1.0.project", sd, "pw", 24, act=None)
    assert len(g) == 17  # "//17"
    _cna(g, "stages.1.1.expand", sd, "pw", 144)
    _cna(g, "stages.1.1.depthwise", sd, "dw", 3, 1)
    _cna(g, "stages.1.1.project", sd, "pw", 24, act=None)
    g.add(ops.Add(g.back(), g[16]))
    assert len(g) == 26  # "//26"
    _cna(g, "stages.2.0.expand", sd, "pw", 144)
    _cna(g, "stages.2.0.depthwise", sd, "dw", 3, 2)
    _cna(g, "stages.2.0.project", sd, "pw", 32, act=None)
    assert g.output_shape == (32, 8, 8)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.stages[2][0](model.stages[1](model.stages[0](model.stem(x)))).numpy()
    for graph in (g, rt.optimize_graph(g)):
        assert _rel(rt.compile(graph, "numpy")(x.numpy()), ref) < 1e-5
        assert _rel(rt.compile(graph, "opencl")(x.numpy()), ref) < 1e-4


def test_add_checks_references_and_shapes():
    g = rt.Graph(input_shape=(3, 16, 16))
    g.add(ops.Conv(g.back(), 8, 3, stride=2))
    g.add(ops.PWConv(g.back(), 4))
    with pytest.raises(rt.GraphError, match=r"node 3 \(add\): cannot add shapes \(4, 8, 8\) and \(8, 8, 8\)"):
        g.add(ops.Add(g.back(), g[1]))
    with pytest.raises(rt.GraphError, match=r"node 3 \(add\): input 7 does not exist yet"):
        g.add(ops.Add(g.back(), 7))
    with pytest.raises(rt.GraphError, match="no node 9"):
        g[9]
    with pytest.raises(rt.GraphError, match=r"tensor weight has shape \(4, 3, 1, 1\), expected \(4, 4, 1, 1\)"):
        g.add(ops.PWConv(g.back(), 4, params={"weight": np.zeros((4, 3, 1, 1))}))
    with pytest.raises(rt.GraphError, match="needs a \\(F,\\) vector"):
        g.add(ops.Linear(g.back(), 10))
    with pytest.raises(rt.GraphError, match="unknown activation 'gelu'"):
        ops.Activation(g.back(), "gelu")
    with pytest.raises(rt.GraphError, match="stride must be 1 or 2"):
        ops.DWConv(g.back(), 3, 3)
    assert len(g) == 3  # nothing half-added


def test_same_padding_is_asymmetric_at_stride_2():
    g = rt.Graph(input_shape=(1, 8, 8))
    same = g.add(ops.DWConv(g.back(), 3, 2, padding="same"))
    assert ops.pads(same.attrs, (1, 8, 8)) == (0, 1, 0, 1)  # TF puts the odd pixel after
    sym = g.add(ops.DWConv(g[0], 3, 2))
    assert ops.pads(sym.attrs, (1, 8, 8)) == (1, 1, 1, 1)
    assert same.shape == sym.shape == (1, 4, 4)


@pytest.mark.parametrize("name", ["mobilenet_v1_100", "mobilenet_v2_100", "efficientnet_b0", "efficientnet_v2_s"])
def test_summary_totals_equal_profile(name):
    model = effnet.create_model(name)
    want = profile(model, 96).totals()
    raw = rt.from_model(model, optimize=False, input_size=96)
    assert raw.totals()["params"] == want["params"]
    assert raw.totals()["macs"] == want["macs"]
    opt = rt.optimize_graph(raw)
    # Folding moves BatchNorm into conv biases: MACs stay, parameters drop by what BN held beyond a bias.
    assert opt.totals()["macs"] == want["macs"]
    assert len(opt) < len(raw)
    with open(os.devnull, "w") as devnull:
        text = raw.summary(file=devnull)
    assert f"{want['params']:,} params" in text and f"{want['macs']:,} MACs" in text


def test_from_model_records_blocks_and_is_one_to_one_without_optimize():
    model = effnet.create_model("efficientnet_b0")
    g = rt.from_model(model, optimize=False, input_size=64)
    plan = model.plan
    assert {n.block for n in g if n.block is not None} == {b.index for b in plan.blocks}
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(n.op == "batchnorm" for n in g) == n_bn
    assert sum(n.op == "se" for n in g) == sum(b.has_se for b in plan.blocks)
    assert sum(n.op == "add" for n in g) == sum(b.residual for b in plan.blocks)
    opt = rt.from_model(model, input_size=64)
    assert not any(n.op in ("batchnorm", "activation", "identity") for n in opt)


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_b0", "mobilenet_v1_050"])
def test_each_pass_keeps_outputs(name, one_thread):
    model = randomized_model(name)
    raw = rt.from_model(model, optimize=False, input_size=48)
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 48), dtype=np.float32)
    ref = rt.compile(raw, "numpy")(x)
    with torch.no_grad():
        assert _rel(ref, model(torch.from_numpy(x)).numpy()) < 1e-5
    g = raw
    for p in (rt.drop_identities, rt.fold_batchnorm, rt.fuse_activations):
        g2 = p(g)
        assert g2 is not g and len(g2) < len(g)
        assert _rel(rt.compile(g2, "numpy")(x), ref) < 1e-5
        g = g2


def test_save_load_round_trips_bit_exactly(tmp_path):
    g = rt.from_model(randomized_model("efficientnet_b0", width=0.5, depth=0.5), input_size=32)
    path = tmp_path / "net.safetensors"
    g.save(path)
    h = rt.load(path)
    assert [(n.op, n.inputs, n.attrs, n.block, n.shape) for n in g] == [(n.op, n.inputs, n.attrs, n.block, n.shape)
                                                                     for n in h]
    for a, b in zip(g, h):
        assert a.params.keys() == b.params.keys()
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k])
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32), dtype=np.float32)
    assert np.array_equal(rt.compile(g, "numpy")(x), rt.compile(h, "numpy")(x))


def _rewrite(src, dst, metadata=None, drop=None, reshape=None):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    meta.update(metadata or {})
    if drop:
        del tensors[drop]
    if reshape:
        tensors[reshape] = tensors[reshape][:-1]
    save_file(tensors, str(dst), metadata=meta)


def test_bad_graph_files_give_one_line_errors(tmp_path):
    g = rt.from_model(effnet.create_model("mobilenet_v1_025"), input_size=32)
    good = tmp_path / "good.safetensors"
    g.save(good)
    cases = {
        "missing.safetensors": ({"drop": "1.weight"}, r"no tensor '1.weight' \(node 1, conv\)"),
        "shape.safetensors": ({"reshape": "2.bias"}, r"tensor '2.bias' has shape"),
        "newer.safetensors": ({"metadata": {"format_version": "3"}}, "written by a newer effnet"),
        "nodes.safetensors": ({"metadata": {"graph": json.dumps([{"op": "input"}])}}, "not a valid node list"),
    }
    for name, (change, message) in cases.items():
        _rewrite(good, tmp_path / name, **change)
        with pytest.raises(rt.CheckpointError, match=message) as e:
            rt.load(tmp_path / name)
        assert "\n" not in str(e.value)
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(rt.CheckpointError, match="truncated"):
        rt.load(tmp_path / "cut.safetensors")
    effnet.save(effnet.create_model("mobilenet_v1_025"), tmp_path / "model.safetensors")
    with pytest.raises(rt.CheckpointError, match="holds a model, not a graph"):
        rt.load(tmp_path / "model.safetensors")
    with pytest.raises(rt.CheckpointError, match="no such checkpoint file"):
        rt.load(tmp_path / "absent.safetensors")


def test_graph_file_runs_where_torch_cannot_be_imported(tmp_path):
    """Deployment: loading a graph file and running it needs numpy, safetensors and pyopencl only."""
    g = rt.from_model(randomized_model("mobilenet_v2_035"), input_size=32)
    g.save(tmp_path / "net.safetensors")
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", rt.compile(g, "numpy")(x))
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
    """))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        import effnet.runtime as rt
        g = rt.load({str(tmp_path / "net.safetensors")!r})
        x, ref = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "ref.npy")!r})
        out = rt.compile(g, "numpy")(x)
        assert np.abs(out - ref).max() <= 1e-6 * np.abs(ref).max(), "numpy differs"
        out = rt.compile(g, "opencl")(x)
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max(), "opencl differs"
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        try:
            import torch  # noqa: F401
        except ImportError:
            print("ok without torch")
    """)
    src = os.path.join(os.path.dirname(effnet.__file__), os.pardir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), os.path.abspath(src)])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok without torch" in result.stdout
