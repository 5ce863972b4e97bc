"""The fused Triton kernels, run on the CPU through Triton's interpreter, against float32 PyTorch.

Triton reads TRITON_INTERPRET when a kernel is defined (``@triton.jit``) and when it is launched, so it is
switched on here, before ``effnet.kernels.triton_ops`` is first imported; CI has no GPU.  Speed is not
tested here: scripts/bench_fused.py measures it on a GPU.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import effnet
from effnet.config import ModelConfig
from effnet.kernels import FusedNet, fold
from effnet.kernels.engine import _pads
from effnet.model import EfficientConvNet
from effnet.tables import BlockType, NetSpec, Stage
from support import conv_case, nhwc, randomize_bn, rel

ops = pytest.importorskip("effnet.kernels.triton_ops")
dw_ops = pytest.importorskip("effnet.kernels.triton_depthwise")
fused_ops = pytest.importorskip("effnet.kernels.triton_fused")
dwp_ops = pytest.importorskip("effnet.kernels.triton_dwproject")

MB, FU, DS = BlockType.MBCONV, BlockType.FUSED_MBCONV, BlockType.DEPTHWISE_SEPARABLE
ACTS = {0: lambda t: t, 1: F.relu, 2: F.relu6, 3: F.silu, 4: F.hardswish}


@pytest.fixture(autouse=True)
def _seed(one_thread):
    torch.manual_seed(0)


# --- BN folding (pure torch) ----------------------------------------------------------------------------
def test_fold_matches_conv_bn_in_eval():
    model = randomize_bn(effnet.create_model("efficientnet_b0", width=0.25, depth=0.25, num_classes=7))
    net = fold(model.plan, model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    stem = net.stem
    assert rel(F.conv2d(x, stem.weight, stem.bias, 2, 1), model.stem.norm(model.stem.conv(x))) < 1e-5
    blk, fb = model.stages[1][0], net.blocks[1]
    assert fb.spec.has_expand and fb.se is not None and fb.expand.weight.shape[1] == fb.spec.in_channels
    h = torch.randn(2, fb.spec.in_channels, 8, 8)
    assert rel(F.conv2d(h, fb.expand.weight, fb.expand.bias), blk.expand.norm(blk.expand.conv(h))) < 1e-5
    assert net.classifier[0].shape == (7, model.plan.head.num_features)


# --- each kernel alone ------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", [0, 1, 2, 3, 4])
def test_pointwise_bias_act(act):
    x, w, b = torch.randn(2, 5, 7, 24), torch.randn(24, 40), torch.randn(40)
    y = ops.pointwise(x, w, b, act)
    assert rel(y, ACTS[act](x @ w + b)) < 1e-5


def test_pointwise_gate_prologue_and_residual():
    x, w, b = torch.randn(3, 6, 5, 40), torch.randn(40, 24), torch.randn(24)
    gate, res = torch.rand(3, 40), torch.randn(3, 6, 5, 24)
    y = ops.pointwise(x, w, b, 0, gate=gate, residual=res)
    assert rel(y, (x * gate[:, None, None, :]) @ w + b + res) < 1e-5


def test_pointwise_pool_epilogue():
    x, w, b = torch.randn(2, 9, 9, 16), torch.randn(16, 48), torch.randn(48)
    pooled = ops.pointwise(x, w, b, 3, pool=True)
    assert rel(pooled, F.silu(x @ w + b).sum((1, 2))) < 1e-5


def _depthwise_ref(x, w, b, k, stride, pads, act):
    c = x.shape[-1]
    xp = F.pad(x.permute(0, 3, 1, 2), (pads[2], pads[3], pads[0], pads[1]))
    return ACTS[act](F.conv2d(xp, w.t().reshape(c, 1, k, k), b, stride, groups=c))


@pytest.mark.parametrize("k,stride,padding", [(3, 1, "symmetric"), (3, 2, "symmetric"), (5, 1, "symmetric"),
                                              (5, 2, "same"), (3, 2, "same")])
def test_depthwise_and_squeeze(k, stride, padding):
    c, hw = 20, 11  # 20 channels: not a multiple of the channel block (masked channels)
    x, w, b = torch.randn(2, hw, hw, c), torch.randn(k * k, c), torch.randn(c)
    pads = _pads((hw, hw), k, stride, padding)
    y, pooled = dw_ops.depthwise(x, w, b, k, stride, pads, 2, True)
    ref = _depthwise_ref(x, w, b, k, stride, pads, 2)
    assert y.shape == nhwc(ref).shape
    assert rel(y, nhwc(ref)) < 1e-5
    assert rel(pooled, ref.sum((2, 3))) < 1e-5


# every tiling / order / specialisation the tuner may pick, on small tiles
DW_CONFIGS = {
    "flat": {"BP": 16, "BC": 16, "warps": 4},
    "tile2d": {"BP": 16, "BC": 16, "warps": 4, "TW": 4},
    "batchwide": {"BP": 32, "BC": 16, "warps": 4, "GP": 1, "CF": 1},  # 32 px > a 5x5 image: up to 3 images a block
    "spec": {"BP": 16, "BC": 32, "warps": 4, "SPEC": 1},
    "rowloop": {"BP": 16, "BC": 16, "warps": 4, "RL": 1, "CF": 1},
    "batchwide_spec_rowloop": {"BP": 64, "BC": 16, "warps": 4, "GP": 1, "SPEC": 1, "RL": 1},
    "rows": {"RS": 4, "TW": 4, "BC": 16, "warps": 4},  # row-walking kernel: 3 strips, 2-3 column blocks
    "rows_one_strip": {"RS": 16, "TW": 8, "BC": 32, "warps": 4},
}


DW_SHAPES = [(3, 1, "symmetric", 16, 9), (5, 2, "same", 24, 9), (5, 1, "symmetric", 13, 5), (3, 2, "same", 32, 6)]


@pytest.mark.parametrize("name,k,stride,padding,c,hw",  # the row-walking kernel: stride 1 only
                         [(n, *s) for n in DW_CONFIGS for s in DW_SHAPES if s[1] == 1 or "RS" not in DW_CONFIGS[n]])
def test_depthwise_tile_configs(name, k, stride, padding, c, hw):
    cfg = {"TW": 0, "GP": 0, "CF": 0, "SPEC": 0, "RL": 0, **DW_CONFIGS[name]}
    x, w, b = torch.randn(3, hw, hw, c), torch.randn(k * k, c), torch.randn(c)
    pads = _pads((hw, hw), k, stride, padding)
    ref = _depthwise_ref(x, w, b, k, stride, pads, 3)
    for squeeze in (True, False):
        y, pooled, _ = dw_ops.launch(x, dw_ops.pad_weights(w), b, k, stride, pads, 3, squeeze, cfg, relaxed=squeeze)
        assert rel(y, nhwc(ref)) < 1e-5
        assert (pooled is None) if not squeeze else rel(pooled, ref.sum((2, 3))) < 1e-5


@pytest.mark.parametrize("k", sorted(dw_ops.CANDIDATES))
def test_depthwise_tuner_candidates(k):
    x, w, b = torch.randn(2, 6, 6, 40), torch.randn(k * k, 40), torch.randn(40)
    pads = (k // 2,) * 4
    ref = _depthwise_ref(x, w, b, k, 1, pads, 3)
    for cfg in dw_ops.CANDIDATES[k]:
        y, pooled, _ = dw_ops.launch(x, dw_ops.pad_weights(w), b, k, 1, pads, 3, True, cfg)
        assert rel(y, nhwc(ref)) < 1e-5 and rel(pooled, ref.sum((2, 3))) < 1e-5, cfg


@pytest.mark.parametrize("name", ["flat", "batchwide", "rows"])
def test_depthwise_squeeze_only_pass(name):
    cfg = {"TW": 0, "GP": 0, "CF": 0, "SPEC": 0, "RL": 0, **DW_CONFIGS[name]}
    k, c, hw = 3, 20, 7
    x, w, b = torch.randn(3, hw, hw, c), torch.randn(k * k, c), torch.randn(c)
    ref = _depthwise_ref(x, w, b, k, 1, (1, 1, 1, 1), 3)
    out, pooled, _ = dw_ops.launch(x, dw_ops.pad_weights(w), b, k, 1, (1, 1, 1, 1), 3, True, cfg, store=False)
    assert out is None and rel(pooled, ref.sum((2, 3))) < 1e-5
    out, pooled = dw_ops.depthwise(x, w, b, k, 1, (1, 1, 1, 1), 3, True, store=False)
    assert out is None and rel(pooled, ref.sum((2, 3))) < 1e-5


def _dw_project_ref(e, wd, bd, wp, bp, k, stride, pads, act, gate, residual):
    d = nhwc(_depthwise_ref(e, wd, bd, k, stride, pads, act))
    if gate is not None:
        d = d * gate[:, None, None, :]
    y = d @ wp + bp
    return y + residual if residual is not None else y


# (k, stride, padding, mid channels, out channels, SE gate, residual, map size, activation)
DWP_SHAPES = [(3, 1, "symmetric", 24, 16, False, True, 7, 2), (3, 2, "symmetric", 20, 24, False, False, 9, 2),
              (5, 1, "same", 13, 16, True, True, 6, 3), (5, 2, "same", 40, 24, True, False, 9, 3),
              (3, 2, "same", 72, 160, True, False, 8, 4)]  # 160 outputs: two 128-wide N tiles


@pytest.mark.parametrize("k,stride,padding,c,n_out,se,res,hw,act", DWP_SHAPES)
def test_dw_project(k, stride, padding, c, n_out, se, res, hw, act):
    e, wd, bd = torch.randn(2, hw, hw, c), torch.randn(k * k, c), torch.randn(c)
    wp, bp = torch.randn(c, n_out), torch.randn(n_out)
    pads = _pads((hw, hw), k, stride, padding)
    oh, ow = ((hw + pads[0] + pads[1] - k) // stride + 1, (hw + pads[2] + pads[3] - k) // stride + 1)
    gate = torch.rand(2, c) if se else None
    residual = torch.randn(2, oh, ow, n_out) if res else None
    y = dwp_ops.dw_project(e, dw_ops.pad_weights(wd), bd, wp, bp, k, stride, pads, act, gate=gate, residual=residual)
    ref = _dw_project_ref(e, wd, bd, wp, bp, k, stride, pads, act, gate, residual)
    assert y.shape == ref.shape and rel(y, ref) < 1e-5


def test_dw_project_tuner_candidates():
    k, c, n_out, hw, stride = 3, 72, 80, 5, 1  # 80 outputs: two N tiles where BN is 64 (BM 128, 4 warps)
    e, wd, bd = torch.randn(3, hw, hw, c), torch.randn(k * k, c), torch.randn(c)
    wp, bp, gate, res = torch.randn(c, n_out), torch.randn(n_out), torch.rand(3, c), torch.randn(3, hw, hw, n_out)
    ref = _dw_project_ref(e, wd, bd, wp, bp, k, stride, (1, 1, 1, 1), 3, gate, res)
    assert {dwp_ops.block_n(n_out, cfg) for cfg in dwp_ops.CANDIDATES} == {64, 128}
    for cfg in [*dwp_ops.CANDIDATES, {**dwp_ops.CANDIDATES[0], "RL": 1}]:  # and k3 with its rows as a loop
        y = dwp_ops._launch(e, dw_ops.pad_weights(wd), bd, wp, bp, k, stride, (1, 1, 1, 1), 3, gate, res, cfg)
        assert rel(y, ref) < 1e-5, cfg


def test_squeeze_of_a_pre_activation():
    h, b = torch.randn(3, 7, 9, 40), torch.randn(40)  # 63 pixels: one full and one partial pixel block... of 64
    pooled = dw_ops.squeeze(h, b, 3)
    assert rel(pooled, F.silu(h + b).sum((1, 2))) < 1e-5


def test_pointwise_pre_bias_and_activation_prologue():
    x, w, b = torch.randn(2, 5, 6, 24), torch.randn(24, 16), torch.randn(16)
    pre_bias, gate, res = torch.randn(24), torch.rand(2, 24), torch.randn(2, 5, 6, 16)
    y = ops.pointwise(x, w, b, 0, gate=gate, residual=res, pre_act=3, pre_bias=pre_bias)
    assert rel(y, (F.silu(x + pre_bias) * gate[:, None, None, :]) @ w + b + res) < 1e-5


def test_se_excite():
    n, c, s, hw = 19, 80, 6, 25  # more samples than one program's 16, more channels than its 64
    sums, w1, b1, w2, b2 = torch.randn(n, c), torch.randn(s, c), torch.randn(s), torch.randn(c, s), torch.randn(c)
    gate = ops.se_excite(sums, hw, w1, b1, w2, b2, 3)
    assert rel(gate, torch.sigmoid(F.silu(sums / hw @ w1.t() + b1) @ w2.t() + b2)) < 1e-5


@pytest.mark.parametrize("ci,co,stride,proj,res", [(3, 24, 2, False, False), (12, 20, 1, False, True),
                                                   (24, 40, 2, True, False), (16, 48, 1, True, True)])
def test_conv_implicit_gemm(ci, co, stride, proj, res):
    x, wflat, b, p, residual, ref = conv_case(ci, co, (10, 10), stride, (1, 1, 1, 1), proj, res)
    y = ops.conv(x, wflat, b, 3, stride, (1, 1, 1, 1), 3, proj=p, residual=residual)
    assert rel(y, ref) < 1e-5


@pytest.mark.parametrize("k,hw", [(3, 9), (5, 7), (3, 16)])
def test_expand_depthwise_fused(k, hw):
    ci, c = 12, 40
    x, we, be = torch.randn(2, hw, hw, ci), torch.randn(ci, c), torch.randn(c)
    wd, bd = torch.randn(c, 1, k, k), torch.randn(c)
    pads = _pads((hw, hw), k, 1, "symmetric")
    wd_rows = dw_ops.pad_weights(wd.reshape(c, k * k).t().contiguous())
    y, pooled = fused_ops.expand_depthwise(x, we, be, wd_rows, bd, k, pads, 3, True)
    e = F.silu(x @ we + be).permute(0, 3, 1, 2)
    ref = F.silu(F.conv2d(e, wd, bd, 1, k // 2, groups=c))
    assert rel(y, nhwc(ref)) < 1e-5
    assert rel(pooled, ref.sum((2, 3))) < 1e-5


# --- each block type through the engine ----------------------------------------------------------------
BLOCKS = [  # (in_channels, Stage(block, expand, kernel, stride, out, repeats, se_ratio), activation, padding)
    (16, Stage(MB, 6, 3, 1, 16, 1, 0.25), "silu", "symmetric"),  # B0-like, SE + residual
    (16, Stage(MB, 6, 5, 2, 24, 1, 0.25), "silu", "same"),  # k5 s2, TF SAME
    (16, Stage(MB, 1, 3, 1, 8, 1, 0.25), "silu", "symmetric"),  # expansion 1 (B0's first block)
    (8, Stage(MB, 6, 3, 2, 16, 1, 0.0), "relu6", "symmetric"),  # MobileNetV2, no SE
    (16, Stage(MB, 4, 5, 1, 16, 1, 0.0), "relu6", "same"),  # Lite-like k5 s1 residual, no SE
    (16, Stage(MB, 4, 3, 1, 16, 1, 0.25), "hardswish", "symmetric"),
    (8, Stage(FU, 1, 3, 1, 8, 1), "silu", "symmetric"),  # Fused-MBConv e1 + residual
    (8, Stage(FU, 4, 3, 2, 16, 1), "silu", "same"),  # Fused-MBConv e4 s2
    (16, Stage(FU, 4, 3, 1, 16, 1), "silu", "symmetric"),  # Fused-MBConv e4 residual
    (16, Stage(FU, 4, 3, 1, 16, 1, 0.25), "silu", "symmetric"),  # Fused-MBConv with SE (fallback path)
    (16, Stage(DS, 1, 3, 1, 24, 1), "relu6", "symmetric"),  # depthwise-separable
    (16, Stage(DS, 1, 3, 2, 24, 1), "relu", "same"),
]


@pytest.mark.parametrize("cin,stage,act,padding", BLOCKS,
                         ids=[f"{s.block.value}-e{s.expand_ratio}-k{s.kernel}-s{s.stride}-se{s.se_ratio}-{p}"
                              for _, s, _, p in BLOCKS])
def test_block_matches_pytorch(cin, stage, act, padding):
    cfg = ModelConfig(spec=NetSpec(cin, (stage,), None), num_classes=0, activation=act, padding=padding)
    model = randomize_bn(EfficientConvNet(cfg))
    x = torch.randn(2, cin, 9, 9)
    ref = model.stages[0][0](x)
    # MBConv: expand + depthwise fused (where stride 1 with an expand), the library's depthwise with its bias and
    # activation in the project prologue, ours separately, or the depthwise in the project GEMM's prologue (SE:
    # after a squeeze-only pass); Fused-MBConv: ours or the library's conv
    ways = ((True, False, False), (False, True, False), (False, False, False))
    for fuse, lib, dwp in ways + (((False, False, True),) if stage.block is MB else ()):
        engine = FusedNet(model, dtype=torch.float32, device="cpu", fuse_expand=fuse, library_convs=lib,
                          dw_project=dwp)
        y = engine.run_block(nhwc(x), engine.layers[0])
        assert rel(y, nhwc(ref)) < 1e-4, (fuse, lib, dwp)


@pytest.mark.parametrize("name,kw", [("efficientnet_b0", {"width": 0.25, "depth": 0.25}),
                                     ("mobilenet_v1_025", {}), ("efficientnet_v2_s", {"width": 0.25, "depth": 0.1})])
def test_reduced_model_end_to_end(name, kw):
    model = randomize_bn(effnet.create_model(name, num_classes=10, **kw))
    x = torch.randn(2, 3, 32, 32)
    y = FusedNet(model, dtype=torch.float32, device="cpu")(x)
    assert y.shape == (2, 10) and rel(y, model(x)) < 1e-4


def test_library_stem_and_pre_activation_prologue():
    model = randomize_bn(effnet.create_model("efficientnet_v2_s", width=0.25, depth=0.1, num_classes=5,
                                             padding="same"))
    x = torch.randn(2, 3, 33, 33)  # odd size: SAME padding differs from symmetric at stride 2
    y = FusedNet(model, dtype=torch.float32, device="cpu", library_convs=True)(x)
    assert rel(y, model(x)) < 1e-4


# --- the edges: no Triton, wrong device, wrong input -----------------------------------------------------
def test_effnet_imports_without_triton_and_engine_says_what_is_needed():
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import effnet, effnet.kernels
        from effnet.kernels import FusedNet
        model = effnet.create_model("mobilenet_v1_025", num_classes=3)
        try:
            FusedNet(model)
        except RuntimeError as e:
            print("ERR:" + str(e))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    msg = out.stdout.split("ERR:", 1)[1].strip()
    assert "Triton" in msg and "\n" not in msg


def test_cpu_device_without_interpreter_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    model = effnet.create_model("mobilenet_v1_025", num_classes=3)
    with pytest.raises(ValueError, match="CUDA") as e:
        FusedNet(model, device="cpu")
    assert "\n" not in str(e.value)


def test_bad_inputs_are_one_line_errors():
    model = randomize_bn(effnet.create_model("mobilenet_v1_025", num_classes=3))
    engine = FusedNet(model, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="image batch"):
        engine(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="move the input"):
        engine(torch.randn(1, 3, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="dtype"):
        FusedNet(model, dtype=torch.int8, device="cpu")


def test_tune_compile_only_launches_every_candidate_and_chooses_nothing(monkeypatch):
    from effnet.kernels import tune

    monkeypatch.setattr(tune, "interpreting", lambda: False)  # as on a GPU: no interpreter shortcut
    monkeypatch.setattr(tune, "compile_only", True)
    launched = []

    def run(cfg):
        launched.append(cfg["BM"])
        if cfg["BM"] == 32:
            raise RuntimeError("out of shared memory")  # a config the card cannot run is skipped

    cands = [tune.config(BM=128), tune.config(BM=32), tune.config(BM=64)]
    assert tune.pick("probe_kind", (1, 2), cands, run) == cands[0]
    assert launched == [128, 32, 64]
    assert "probe_kind(1, 2)" not in tune._memory  # nothing chosen, nothing cached


# --- parallel compile workers (effnet.kernels.parallel_compile) ------------------------------------------
def test_precompile_workers_rebuild_the_model_and_run_the_engine(tmp_path):
    """The workers' whole path (config file -> model -> engine -> one forward) in real subprocesses, here under
    the interpreter on the CPU; an engine option FusedNet does not take makes them fail."""
    from effnet.kernels.parallel_compile import spawn

    model = effnet.create_model("efficientnet_b0", width=0.25, depth=0.25, num_classes=7)
    x = torch.randn(1, 3, 16, 16).to(torch.bfloat16)
    good = spawn(model, x, 2, str(tmp_path), dw_project=False)
    bad = spawn(model, x, 1, str(tmp_path), not_an_option=True)
    assert [p.wait(240) for p in good] == [0, 0]
    assert bad[0].wait(240) != 0


def test_precompile_needs_a_gpu_input_and_sane_workers(monkeypatch, tmp_path):
    from effnet.kernels import parallel_compile as pre

    model = effnet.create_model("efficientnet_b0", width=0.25, depth=0.25, num_classes=7)
    x = torch.randn(1, 3, 16, 16)
    assert pre.precompile(model, x) == []  # the interpreter compiles nothing: no workers
    monkeypatch.setattr(pre.tune, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="CUDA GPU"):
        pre.precompile(model, x)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        pre.spawn(model, x, 0, str(tmp_path))
    with pytest.raises(ValueError, match="bfloat16, float16 or float32"):
        pre.spawn(model, x.to(torch.int32), 1, str(tmp_path))
    assert 1 <= pre.default_workers() <= 8
