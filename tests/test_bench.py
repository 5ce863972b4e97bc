"""``effnet bench`` on tiny inputs: results JSON, markdown, PNG, combining files, bad input (no speed asserted)."""

from __future__ import annotations

import json
import sys

import pytest

from effnet.analysis import bench, bench_report
from effnet.analysis.models import build_model
from effnet.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"


def _bench(tmp_path, *extra: str) -> int:
    return main(["bench", "--device", "cpu", "--resolution", "32", "--runs", "2", "--warmup", "0",
                 "--no-ceilings", "--out", str(tmp_path), *extra])


def test_bench_cli_writes_results_markdown_and_png(tmp_path, capsys, monkeypatch):
    # a small torchvision model stands in for the dense baseline, to keep the test cheap
    monkeypatch.setattr(bench, "BASELINE", "resnet18")
    assert _bench(tmp_path, "--models", "mobilenet_v2_100,resnet18", "--batch-sizes", "1,2",
                  "--modes", "eager,channels_last") == 0
    data = json.loads((tmp_path / "bench-cpu.json").read_text())
    rows = data["results"]
    assert len(rows) == 2 * 2 * 2  # models x batch sizes x modes
    assert {r["model"] for r in rows} == {"mobilenet_v2_100", "resnet18"}
    for r in rows:
        assert r["error"] is None and r["runs"] == 2 and r["median_s"] > 0
        assert r["throughput"] == pytest.approx(r["batch_size"] / r["median_s"])
        assert r["mac_rate"] == pytest.approx(r["throughput"] * r["macs"])
    mnv2 = next(r for r in rows if r["model"] == "mobilenet_v2_100")
    r18 = next(r for r in rows if r["model"] == "resnet18")
    assert 0 < mnv2["macs"] < r18["macs"]  # analytic MACs at 32 px, per image
    assert data["env"]["torch"] and data["env"]["device"] == "cpu"
    md = (tmp_path / "bench-cpu.md").read_text()
    assert "| mobilenet_v2_100 | channels_last |" in md and "1.00x" in md  # the baseline against itself
    assert (tmp_path / "macs-vs-latency-cpu.png").read_bytes()[:8] == PNG
    assert "GMAC/s" in capsys.readouterr().out


def test_bench_combine_draws_saved_files_side_by_side(tmp_path):
    one = {"env": bench.environment(bench.resolve_device("cpu")), "results": [
        {"model": "resnet50", "batch_size": 1, "mode": "eager", "dtype": "float32", "macs": 4e9,
         "median_s": 0.02, "iqr_s": 0.001, "throughput": 50.0, "mac_rate": 2e11, "error": None},
        {"model": "mobilenet_v2_100", "batch_size": 1, "mode": "eager", "dtype": "float32", "macs": 3e8,
         "median_s": 0.01, "iqr_s": 0.001, "throughput": 100.0, "mac_rate": 3e10, "error": None}]}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    bench_report.write_json(one, a)
    bench_report.write_json({**one, "env": {**one["env"], "device": "cuda:0", "device_name": "Some GPU"}}, b)
    compiled = tmp_path / "a-compiled.json"  # same device, another run: merged into a's panel
    bench_report.write_json({**one, "results": [{**r, "mode": "compile"} for r in one["results"]]}, compiled)
    assert main(["bench", "--combine", str(a), str(b), str(compiled), "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "macs-vs-latency.png").read_bytes()[:8] == PNG
    md = (tmp_path / "both" / "bench-combined.md").read_text()
    assert sum(line.startswith("### ") for line in md.splitlines()) == 2 and "Some GPU (cuda:0)" in md
    assert "| mobilenet_v2_100 | eager | 0.300 | 10.000 |" in md
    assert md.split("Some GPU")[0].count("| compile |") == 2 and md.split("Some GPU")[1].count("| compile |") == 0
    assert "2.00x" in md and "0.15x" in md  # throughput and MAC rate against resnet50


def test_bench_rejects_bad_input(tmp_path, capsys):
    assert _bench(tmp_path, "--models", "mobilenet_v9") == 2
    assert "unknown model 'mobilenet_v9'" in capsys.readouterr().err
    assert _bench(tmp_path, "--models", "mobilenet_v2_100", "--modes", "turbo") == 2
    assert "turbo" in capsys.readouterr().err
    assert _bench(tmp_path, "--models", "mobilenet_v2_100", "--batch-sizes", "one") == 2
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["bench", "--combine", str(bad)]) == 2
    assert "not an effnet bench results file" in capsys.readouterr().err


def test_unsupported_dtype_is_skipped_and_said(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_cpu_flags", lambda: set())  # a CPU without native bf16
    assert _bench(tmp_path, "--models", "mobilenet_v2_100", "--batch-sizes", "1", "--modes", "eager",
                  "--dtypes", "float32,bfloat16") == 0
    data = json.loads((tmp_path / "bench-cpu.json").read_text())
    assert {r["dtype"] for r in data["results"]} == {"float32"}
    assert any("bfloat16" in s for s in data["skipped"])


def test_without_torchvision_the_defaults_are_effnet_only(monkeypatch):
    assert bench.BASELINE in bench.default_models()
    monkeypatch.setitem(sys.modules, "torchvision", None)
    assert bench.default_models() == list(bench.EFFNET_DEFAULTS)
    with pytest.raises(ValueError, match="torchvision is not installed"):
        build_model("resnet50")
    named = build_model("mobilenet_v2_100", "meta")
    assert (named.resolution, named.in_chans, named.source) == (224, 3, "effnet")


# --- --engine triton: the fused engine as one more mode -------------------------------------------------
def test_engine_triton_needs_a_gpu_one_line_error(tmp_path, capsys):
    pytest.importorskip("triton")
    assert _bench(tmp_path, "--models", "mobilenet_v2_100", "--engine", "triton") == 2
    err = capsys.readouterr().err.strip()
    assert "--engine triton runs on a CUDA GPU" in err and "\n" not in err
    assert not (tmp_path / "bench-cpu.json").exists()  # refused before any timing


def test_engine_triton_needs_triton_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    assert _bench(tmp_path, "--models", "mobilenet_v2_100", "--engine", "triton") == 2
    err = capsys.readouterr().err.strip()
    assert "needs Triton" in err and "\n" not in err


def test_engine_rows_join_the_results_and_report(tmp_path, monkeypatch):
    # the plumbing only (rows, report, peers refused), with an engine stand-in that runs on the CPU
    monkeypatch.setattr(bench, "BASELINE", "resnet18")
    calls = []

    def engine(model, device, dtype):
        calls.append(model.plan.stem.out_channels)
        return bench.prepare_mode(model, device, dtype, "channels_last")

    data = bench.run_bench(["mobilenet_v2_050", "resnet18"], "cpu", batch_sizes=(1, 2), modes=("eager", "triton"),
                           runs=1, warmup=0, resolution=32, engines={"triton": engine}, log=lambda s: None)
    rows = {(r["model"], r["mode"], r["batch_size"]): r for r in data["results"]}
    assert len(rows) == 8 and len(calls) == 1  # one engine per model and dtype, reused across batch sizes
    assert rows["mobilenet_v2_050", "triton", 2]["median_s"] > 0
    assert "effnet models" in rows["resnet18", "triton", 1]["error"]
    md = bench_report.markdown_report(data)
    assert "| mobilenet_v2_050 | triton |" in md
    with pytest.raises(ValueError, match="unknown mode"):
        bench.run_bench(["mobilenet_v2_050"], "cpu", modes=("triton",), runs=1, warmup=0)  # no engine passed
