"""effnet.runtime engines: numpy and OpenCL (PoCL on the CPU here) against PyTorch eval; cache; bad input.

OpenCL tests need a working OpenCL platform (``pip install "effnet[opencl]"`` gives PoCL).
"""

import sys

import numpy as np
import pytest
import torch

import effnet
from effnet import runtime as rt
from effnet.runtime import opencl
from support import randomized_model

TOL = 1e-4  # relative to the largest output magnitude, float32


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _check(name: str, size: int, backends=("numpy", "opencl"), batch: int = 2, **kwargs) -> None:
    model = randomized_model(name, **kwargs)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    g = rt.from_model(model, input_size=size)
    for backend in backends:
        out = rt.compile(g, backend)(x.numpy())
        assert out.shape == ref.shape
        assert _rel(out, ref) < TOL, f"{name} on {backend}: {_rel(out, ref):.2e}"


# A few models that between them cover: symmetric and SAME padding, strides 1 and 2, kernels 3 and 5,
# SE and no SE, Fused-MBConv (with and without projection), expansion ratio 1, depthwise-separable.
CASES = [
    ("efficientnet_b0", 64, {}),  # MBConv k3/k5, SE, expansion 1 first block, residuals
    ("efficientnet_b0", 48, {"padding": "same", "width": 0.5, "depth": 0.5}),  # TF SAME at stride 2, odd sizes
    ("efficientnet_v2_b0", 48, {"width": 0.5}),  # Fused-MBConv (ratio 1: no projection; ratio 4: projection)
    ("mobilenet_v1_050", 32, {"padding": "same"}),  # depthwise-separable, ReLU6
    ("efficientnet_lite0", 32, {"width": 0.5, "depth": 0.5}),  # ReLU6, no SE
]


@pytest.mark.parametrize(("name", "size", "kwargs"), CASES, ids=[f"{c[0]}-{c[1]}-{len(c[2])}" for c in CASES])
def test_engines_match_pytorch(name, size, kwargs, one_thread):
    _check(name, size, **kwargs)


def test_both_pointwise_kernels(one_thread):
    """The GPU's tiled GEMM and the CPU's vector rows (each device runs one) both match, with SE gates
    folded into the read, residuals in the epilogue, and column tiles that straddle two images."""
    model = randomized_model("efficientnet_b0", width=0.5, depth=0.5)
    g = rt.from_model(model, input_size=40)
    x = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        ref = model(x).numpy()
    for kind in ("gemm", "rows"):
        engine = rt.Engine(g, opencl.OpenCLEngine(g, pointwise=kind))
        assert _rel(engine(x.numpy()), ref) < TOL, kind


def test_unoptimized_graph_and_standalone_ops_on_opencl(one_thread):
    """optimize=False keeps BatchNorm, activations and identities as nodes: their kernels run too."""
    model = randomized_model("mobilenet_v2_035", activation="hardswish")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    g = rt.from_model(model, optimize=False, input_size=32)
    assert _rel(rt.compile(g, "opencl")(x.numpy()), ref) < TOL
    # The hand API's other paths: SE not followed by a pointwise conv (scaled in place), add with activation.
    h = rt.Graph(input_shape=(4, 9, 9))
    rng = np.random.default_rng(0)
    h.add(rt.ops.Conv(h.back(), 8, 5, stride=2, padding="same", params={"weight": rng.standard_normal((8, 4, 5, 5))}))
    params = {"reduce.weight": rng.standard_normal((2, 8, 1, 1)), "reduce.bias": rng.standard_normal(2),
              "expand.weight": rng.standard_normal((8, 2, 1, 1)), "expand.bias": rng.standard_normal(8)}
    h.add(rt.ops.SE(h.back(), 2, "relu", params=params))
    h.add(rt.ops.Add(h.back(), h[1], act="relu"))
    h.add(rt.ops.Sigmoid(h.back()))
    xs = rng.standard_normal((3, 4, 9, 9)).astype(np.float32)
    assert _rel(rt.compile(h, "opencl")(xs), rt.compile(h, "numpy")(xs)) < TOL


def test_torch_in_torch_out_and_batch_sizes():
    model = randomized_model("mobilenet_v1_025")
    engine = rt.compile(rt.from_model(model, input_size=32), "opencl")
    for n in (1, 3):
        x = torch.randn(n, 3, 32, 32)
        out = engine(x)
        assert isinstance(out, torch.Tensor) and out.shape == (n, 1000)
        with torch.no_grad():
            assert _rel(out.numpy(), model(x).numpy()) < TOL


def test_buffers_are_reused_once_read():
    g = rt.from_model(effnet.create_model("mobilenet_v2_100", width=0.35), input_size=32)
    engine = rt.compile(g, "opencl")
    engine(np.zeros((2, 3, 32, 32), np.float32))
    plan = engine.impl._plan(2)
    assert len(plan.buffers) <= 8 < len(g)  # a few ping-pong buffers, not one per node
    assert plan.input is not plan.output


def test_second_compile_builds_nothing():
    g = rt.from_model(effnet.create_model("mobilenet_v1_025"), input_size=32)
    rt.compile(g, "opencl")
    before = opencl.cache_info()
    g2 = rt.from_model(effnet.create_model("efficientnet_b0", width=0.25), input_size=32)
    rt.compile(g2, "opencl")
    rt.compile(g, "opencl")
    assert opencl.cache_info() == before and before["builds"] >= 1


def test_bad_inputs_give_one_line_errors():
    engine = rt.compile(rt.from_model(effnet.create_model("mobilenet_v1_025"), input_size=32), "opencl")
    with pytest.raises(ValueError, match=r"input must have shape \(N, 3, 32, 32\), got \(1, 3, 64, 64\)"):
        engine(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"got \(3, 32, 32\)"):
        engine(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="input must be float32, got float64"):
        engine(np.zeros((1, 3, 32, 32)))
    with pytest.raises(TypeError, match="input must be float32, got torch.float16"):
        engine(torch.zeros(1, 3, 32, 32, dtype=torch.float16))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        engine([[0.0]])
    with pytest.raises(ValueError, match="unknown backend 'cuda'; allowed: numpy, opencl, triton"):
        rt.compile(engine.graph, "cuda")
    with pytest.raises(opencl.OpenCLUnavailable, match="no OpenCL device matches 'no-such-card'"):
        rt.compile(engine.graph, "opencl", device="no-such-card")
    with pytest.raises(opencl.OpenCLUnavailable, match="no OpenCL device 99"):
        rt.compile(engine.graph, "opencl", device=99)


def test_triton_backend_needs_effnet_kernels(monkeypatch):
    monkeypatch.setitem(sys.modules, "effnet.kernels", None)  # as on a machine without the kernels
    model = effnet.create_model("mobilenet_v1_025")
    with pytest.raises(ValueError, match=r'backend="triton" needs torch and triton'):
        rt.compile(model, "triton", input_size=32)
    with pytest.raises(ValueError, match=r'backend="triton" needs torch and triton'):
        rt.optimize(model)
    with pytest.raises(TypeError, match="takes a model"):
        rt.compile(rt.from_model(model, input_size=32), "triton")


def test_triton_backend_is_the_fused_module_and_refuses_the_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # test_kernels turns the CPU interpreter on for the session
    model = effnet.create_model("mobilenet_v1_025").eval()
    # Triton is installed here, but there is no GPU: the fused engine says what it needs in one line.
    with pytest.raises((ValueError, RuntimeError), match="CUDA"):
        rt.compile(model, "triton", device="cpu")
    with pytest.raises(ValueError, match='dtype applies to backend="triton"'):
        rt.compile(model, "numpy", dtype="bfloat16")


def test_missing_pyopencl_says_what_to_install(monkeypatch):
    monkeypatch.setattr(opencl, "cl", None)
    g = rt.from_model(effnet.create_model("mobilenet_v1_025"), input_size=32)
    with pytest.raises(opencl.OpenCLUnavailable, match=r'pip install "effnet\[opencl\]"'):
        rt.compile(g, "opencl")


def test_profile_times_every_node_that_runs_a_kernel():
    g = rt.from_model(effnet.create_model("efficientnet_b0", width=0.25, depth=0.25), input_size=32)
    engine = rt.compile(g, "opencl")
    times = engine.impl.profile(np.zeros((1, 3, 32, 32), np.float32), repeats=2)
    assert set(times) == {n.index for n in g.nodes[1:] if n.op != "add"}  # adds ride in the pointwise epilogue
    assert all(t > 0 for t in times.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", effnet.list_models())
def test_every_zoo_model_on_numpy_and_opencl(name, one_thread):
    """Every zoo model, reduced to a few channels and blocks, at 32 px."""
    big = name.startswith(("efficientnet_b", "efficientnet_l2", "efficientnet_v2_")) and name not in (
        "efficientnet_b0", "efficientnet_v2_b0")
    kwargs = {"width": 0.25, "depth": 0.25} if big else {"width": 0.5}
    _check(name, 32, batch=1, **kwargs)
