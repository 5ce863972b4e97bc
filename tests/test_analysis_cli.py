"""Table rendering and the ``effnet zoo`` / ``effnet profile`` commands (small models, meta device)."""

from __future__ import annotations

import csv
import io
import json
import sys
import types

import pytest
import torch
from torch import nn

import effnet
from effnet.analysis import profile, separable_conv_macs, standard_conv_macs
from effnet.analysis import profile_cli as pcli
from effnet.analysis.table import Column, human, render, render_layers, render_rollup
from effnet.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small():
    return profile(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()), (3, 8, 8))


# --- table.py -----------------------------------------------------------------------------------

def test_every_format_keeps_raw_values_for_machines_and_formats_for_people(small):
    extra = Column("time_ms", lambda r: {"0": 1.5, "1": 0.25, "2": 0.125}[r.name], "ms", lambda v: f"{v:.2f}")
    rows = list(csv.DictReader(io.StringIO(render_layers(small.layers, "csv", [extra]))))
    assert [r["name"] for r in rows] == ["0", "1", "2"] and rows[0]["macs"] == str(8 * 64 * 27)
    assert rows[0]["time_ms"] == "1.5" and rows[0]["output_shape"] == "1x8x8x8"
    data = json.loads(render_layers(small.layers, "json", [extra]))
    assert data[0]["macs"] == 8 * 64 * 27 and data[0]["output_shape"] == [1, 8, 8, 8] and data[2]["time_ms"] == 0.125
    table = render_layers(small.layers, "table", [extra])
    assert table.splitlines()[0].split()[-1] == "ms" and "13.8k" in table and "1.50" in table
    md = render_layers(small.layers, "markdown", [extra]).splitlines()
    assert len(md) == 2 + 3 and md[1].startswith("| :--- | :--- |") and md[0].endswith("| ms |")


def test_render_rejects_unknown_format_and_hides_machine_only_columns(small):
    with pytest.raises(ValueError, match="allowed: table, csv, json, markdown"):
        render_layers(small.layers, "xml")
    cols = [Column("a", lambda r: r), Column("flag", lambda r: "!", machine_only=True)]
    assert "flag" not in render([1], cols, "table") and "flag" in render([1], cols, "csv")


def test_rollup_shares_and_human_numbers(small):
    text = render_rollup(small.by_kind(), "kind", "csv")
    shares = {r["kind"]: float(r["macs_share"]) for r in csv.DictReader(io.StringIO(text))}
    assert shares == {"conv": 1.0, "norm-act": 0.0}
    assert [human(x) for x in (999, 1234, 5.6e6, 7.89e9, 2e12)] == ["999", "1.23k", "5.6M", "7.89G", "2T"]


# --- effnet profile -------------------------------------------------------------------------------

def test_profile_json_matches_the_api(capsys):
    code, out, _ = run_cli(capsys, "profile", "mobilenet_v1_025", "--resolution", "64", "--format", "json",
                           "--batch-size", "2", "--dtype", "bfloat16")
    assert code == 0
    data = json.loads(out)
    with torch.device("meta"):
        model = effnet.create_model("mobilenet_v1_025")
    expected = profile(model, 64, torch.bfloat16, batch_size=2)
    assert data["input_size"] == [2, 3, 64, 64] and data["dtype"] == "bfloat16"
    assert data["totals"] == expected.totals() and len(data["layers"]) == len(expected.layers)
    assert set(data["by_stage"]) == set(expected.by_stage()) and set(data["by_kind"]) == set(expected.by_kind())


def test_profile_table_has_layers_and_rollups(capsys):
    code, out, _ = run_cli(capsys, "profile", "efficientnet_b0", "--resolution", "64", "--by-block")
    assert code == 0
    for heading in ("layers", "by stage", "by block", "by kind"):
        assert f"\n{heading}\n" in out
    assert "stages.1.1.add" in out and "stages.5.0.se.mul" in out and "depthwise" in out
    code, out, _ = run_cli(capsys, "profile", "efficientnet_b0", "--resolution", "64", "--no-layers")
    assert "stages.1.1.add" not in out and "by kind" in out


def test_profile_conv_cost(capsys):
    code, out, _ = run_cli(capsys, "profile", "--conv-cost", "3", "32", "64", "112", "112")
    assert code == 0
    assert f"{standard_conv_macs(3, 32, 64, 112, 112):,}" in out and f"{separable_conv_macs(3, 32, 64, 112, 112):,}" in out
    assert "1/C_out + 1/K^2 = 0.126736" in out  # 1/64 + 1/9
    code, out, _ = run_cli(capsys, "profile", "--conv-cost", "3", "32", "64", "112", "112", "--format", "json")
    assert json.loads(out)["ratio"] == pytest.approx(1 / 64 + 1 / 9)
    code, _, err = run_cli(capsys, "profile", "--conv-cost", "0", "32", "64", "112", "112")
    assert code == 2 and "k must be a positive integer" in err


def test_profile_peer_models(capsys, monkeypatch):
    code, out, _ = run_cli(capsys, "profile", "torchvision:resnet18", "--resolution", "64", "--no-layers")
    assert code == 0 and "layer4" in out
    code, out, _ = run_cli(capsys, "profile", "timm:efficientnet_lite0", "--resolution", "64", "--no-layers")
    assert code == 0 and "blocks" in out
    monkeypatch.setitem(sys.modules, "timm", None)  # timm absent: a one-line error, not a traceback
    code, _, err = run_cli(capsys, "profile", "timm:efficientnet_lite0")
    assert code == 2 and "timm is not installed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["profile", "efficientnet_b9"], "unknown model 'efficientnet_b9'"),
    (["profile", "keras:foo"], "unknown model source 'keras'"),
    (["profile", "torchvision:nonet"], "torchvision has no model 'nonet'"),
    (["profile", "mobilenet_v1_025", "--resolution", "0"], "--resolution must be a positive integer"),
    (["profile", "mobilenet_v1_025", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["profile"], "give a MODEL"),
    (["zoo", "resnet*"], "no zoo model matches"),
])
def test_user_errors_are_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_measure_hook_joins_timings_by_name(capsys, monkeypatch):
    # A stand-in for effnet.analysis.measure: the hook must pass the profile and join rows by record name.
    calls = {}

    def fake_measure(model, input_size, device, dtype, batch_size, channels_last, compile, *, analytic, name,
                     per_layer):
        calls.update(input_size=input_size, device=device, batch_size=batch_size, name=name, per_layer=per_layer)
        layers = [types.SimpleNamespace(record=r, predicted_s=1e-6, bound="memory", measured_s=2e-6, fraction=0.5,
                                        busy_s=1e-6) for r in analytic.layers]
        return types.SimpleNamespace(layers=layers, per_layer=per_layer, summary=lambda: ["fake summary line"],
                                     to_dict=lambda: {"per_layer": per_layer, "layers": []})

    monkeypatch.setattr(pcli, "measure", fake_measure)
    code, out, _ = run_cli(capsys, "profile", "mobilenet_v1_025", "--resolution", "32", "--measure", "--format", "csv",
                           "--per-layer", "profiler")
    assert code == 0 and calls == {"input_size": 32, "device": "cpu", "batch_size": 1, "name": "mobilenet_v1_025",
                                   "per_layer": "profiler"}
    rows = list(csv.DictReader(io.StringIO(out)))
    assert all(r["measured_ms"] == "0.002" and r["busy_ms"] == "0.001" and r["bound"] == "memory" for r in rows)
    code, out, _ = run_cli(capsys, "profile", "mobilenet_v1_025", "--resolution", "32", "--measure", "--format", "json",
                           "--per-layer", "hooks")
    assert json.loads(out)["measurement"] == {"per_layer": "hooks"} and "busy_ms" not in json.loads(out)["layers"][0]
    with pytest.raises(SystemExit):  # only the two methods
        main(["profile", "mobilenet_v1_025", "--measure", "--per-layer", "events"])


# --- effnet zoo -------------------------------------------------------------------------------------

def test_zoo_formats_and_output_file(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "zoo", "mobilenet_v1_1*", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["model"] for r in rows] == ["mobilenet_v1_100"]
    assert int(rows[0]["macs"]) == 568_740_352 and float(rows[0]["published_macs"]) == 569e6
    code, out, _ = run_cli(capsys, "zoo", "efficientnet_lite0", "--format", "json")
    (row,) = json.loads(out)
    assert row["macs_flag"] == "!" and "407M" in row["note"] and row["source"].startswith("official TF")
    target = tmp_path / "zoo.md"
    code, out, _ = run_cli(capsys, "zoo", "mobilenet_v1_025", "--format", "markdown", "--output", str(target))
    assert code == 0 and out == "" and target.read_text().startswith("# The zoo against the papers")
    assert [p.name for p in tmp_path.iterdir()] == ["zoo.md"]  # no temporary file left behind
    code, _, err = run_cli(capsys, "zoo", "--output", str(tmp_path / "missing" / "zoo.md"))
    assert code == 2 and "folder does not exist" in err
