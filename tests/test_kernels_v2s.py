"""The Triton conv and GEMM kernels added for EfficientNetV2-S (``triton_conv``: tap-loop and TMA conv, the
bias + activation pass; ``triton_gemm``: TMA and persistent GEMM; ``triton_ops.pointwise``'s gate on tiles that
straddle samples), each forced on, on the CPU through Triton's interpreter, against float32 PyTorch.

The tuner would pick among them only on a GPU (the interpreter takes a list's first candidate), so each
config is launched directly here, on tiles small enough to leave partial tiles at every edge.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from support import conv_case, nhwc, rel

os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

ops = pytest.importorskip("effnet.kernels.triton_ops")
conv_ops = pytest.importorskip("effnet.kernels.triton_conv")
gemm_ops = pytest.importorskip("effnet.kernels.triton_gemm")


@pytest.fixture(autouse=True)
def _seed(one_thread):
    torch.manual_seed(0)


# the tap-loop conv kernel (triton_conv), small tiles: input channels not a multiple of BK, mid channels
# in several chunks of BN with a partial last one, stride 2 with SAME padding, rows not a multiple of BM
@pytest.mark.parametrize("ci,co,stride,pads,proj,res", [(24, 40, 1, (1, 1, 1, 1), True, True),
                                                       (20, 36, 2, (0, 1, 0, 1), True, False),
                                                       (16, 24, 1, (1, 1, 1, 1), False, True),
                                                       (40, 20, 2, (1, 1, 1, 1), False, False)])
def test_conv_tap_loop_kernel(ci, co, stride, pads, proj, res):
    x, wflat, b, p, residual, ref = conv_case(ci, co, (7, 7), stride, pads, proj, res, c2=12)
    cfg = {"BM": 32, "BN": 16, "BK": 16, "warps": 4, "stages": 2, "TAPS": 1}
    y = ops._conv_launch(x, wflat, b, 3, stride, pads, 3, p, residual, ref.shape[1], ref.shape[2], False, cfg)
    assert rel(y, ref) < 1e-5


@pytest.mark.parametrize("ci,co,proj,res,hw", [(24, 40, True, True, (7, 9)), (16, 24, False, True, (5, 8)),
                                                (40, 16, False, False, (9, 4)), (8, 48, True, False, (8, 8))])
def test_conv_tma_kernel(ci, co, proj, res, hw):
    """Stride 1: every tap's input a TMA box; image edges, channels past C_in and maps not a multiple of the
    tile come from the descriptors' zero fill / clipped stores."""
    x, wflat, b, p, residual, ref = conv_case(ci, co, hw, 1, (1, 1, 1, 1), proj, res)
    out_c = ref.shape[-1]
    out = x.new_empty(ref.shape)
    cfg = {"TH": 4, "TW": 4, "BN": 16, "BK": 16, "warps": 4, "stages": 2}
    y = conv_ops.launch_tma(x, wflat, b, 3, (1, 1, 1, 1), 3, p, residual, hw[0], hw[1], cfg, 16,
                            16, max(16, 1 << (out_c - 1).bit_length()), out)
    assert rel(y, ref) < 1e-5


def test_conv_tma_kernel_only_where_it_fits():
    x = torch.empty(1, 4, 4, 24, dtype=torch.bfloat16)
    w = torch.empty(9 * 24, 48, dtype=torch.bfloat16)
    assert conv_ops.tma_fits(x, w, 3, 1, (1, 1, 1, 1), None)
    assert not conv_ops.tma_fits(x, w, 3, 2, (1, 1, 1, 1), None)  # stride 2
    assert not conv_ops.tma_fits(x, w, 3, 1, (0, 1, 0, 1), None)  # SAME-style uneven padding
    assert not conv_ops.tma_fits(x[..., :20].contiguous(), w[:180], 3, 1, (1, 1, 1, 1), None)  # 40-byte rows
    assert not conv_ops.tma_fits(x.float(), w.float(), 3, 1, (1, 1, 1, 1), None)


@pytest.mark.parametrize("res", [False, True])
def test_bias_act_pass(res):
    h, b = torch.randn(2, 5, 7, 24), torch.randn(24)  # 1680 elements: one partial block
    r = torch.randn(2, 5, 7, 24) if res else None
    y = conv_ops.bias_act(h, b, 3, residual=r)
    assert rel(y, F.silu(h + b) + r if res else F.silu(h + b)) < 1e-6


def test_conv_wide_mid_fused_project_takes_the_tap_loop_kernel():
    ci, co, c2, hw = 16, ops.MAX_MID + 16, 8, 5  # too wide for the unrolled kernel's one-tile project
    x, w, b = torch.randn(1, hw, hw, ci), torch.randn(co, ci, 3, 3), torch.randn(co)
    p = (torch.randn(co, c2) / co**0.5, torch.randn(c2))
    y = ops.conv(x, w.permute(2, 3, 1, 0).reshape(-1, co).contiguous(), b, 3, 1, (1, 1, 1, 1), 3, proj=p)
    ref = nhwc(F.silu(F.conv2d(x.permute(0, 3, 1, 2), w, b, 1, 1))) @ p[0] + p[1]
    assert rel(y, ref) < 1e-5


@pytest.mark.parametrize("gate,res,persist", [(False, False, 0), (True, True, 0), (True, False, 0), (False, False, 1),
                                              (True, True, 2)])
def test_pointwise_tma_kernel(gate, res, persist):
    x, w, b = torch.randn(5, 3, 5, 40), torch.randn(40, 24), torch.randn(24)  # 75 rows, K and N past the tiles
    g = torch.rand(5, 40) if gate else None
    r = torch.randn(5, 3, 5, 24) if res else None
    cfg = {"BM": 8, "BN": 16, "BK": 16, "warps": 4, "stages": 2, "GROUP": 3, "TMA": 1, "PERSIST": persist}
    y = gemm_ops.launch(x, w, b, 3, g, r, cfg, 16, 16)
    ref = F.silu((x * g[:, None, None, :] if gate else x) @ w + b)
    assert rel(y, ref + r if res else ref) < 1e-5


@pytest.mark.parametrize("hw", [(3, 5), (4, 4)])  # 15 pixels: tiles of 8 straddle samples; 16: they align
def test_pointwise_gate_on_tiles_that_straddle_samples(hw):
    x, w, b = torch.randn(5, *hw, 24), torch.randn(24, 20), torch.randn(20)
    gate, res = torch.rand(5, 24), torch.randn(5, *hw, 20)
    cfg = {"BM": 8, "BN": 16, "BK": 16, "warps": 4, "stages": 2, "SPAN": 1}
    y = ops._pointwise_launch(x, w, b, 3, gate, res, False, cfg, True, 0)
    assert rel(y, F.silu((x * gate[:, None, None, :]) @ w + b) + res) < 1e-5
