"""The zoo table: every model against FlopCounterMode and sum(p.numel()), and against the papers' figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.flop_counter import FlopCounterMode

from effnet.analysis.zoo_cli import (
    DEFAULT_MACS_TOLERANCE,
    KNOWN_DEVIATIONS,
    PARAMS_TOLERANCE,
    REGENERATE,
    macs_tolerance,
    render_zoo,
    zoo_profile,
    zoo_row,
    zoo_rows,
)
from effnet.reference import PAPER_FIGURES
from effnet.zoo import MODELS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "zoo.md"
WITH_MACS = [n for n in MODELS if PAPER_FIGURES.get(n) and PAPER_FIGURES[n].macs]


@pytest.mark.parametrize("name", list(MODELS))
def test_macs_equal_flop_counter_and_params_equal_numel(name):
    # PyTorch's counter watches the very forward pass the profiler counts (both are dispatch modes).
    with FlopCounterMode(display=False) as counter:
        model, prof = zoo_profile(name)
    totals = prof.totals()
    assert prof.input_size == (1, 3, MODELS[name].resolution, MODELS[name].resolution)
    assert counter.get_total_flops() > 0
    assert 2 * totals["macs"] == counter.get_total_flops()  # exactly: FLOPs = 2 x MACs
    conv_linear = sum(r.macs for r in prof.layers if r.kind in ("conv", "depthwise", "pointwise", "fused-conv",
                                                                  "se", "linear"))
    assert conv_linear == totals["macs"]
    assert totals["params"] == sum(p.numel() for p in model.parameters())


def test_the_issue_figures_hold():
    # The three figures the issue names, written out so an edit to PAPER_FIGURES cannot loosen them.
    assert abs(zoo_row("mobilenet_v1_100").macs / 569e6 - 1) <= 0.01
    assert abs(zoo_row("mobilenet_v2_100").macs / 300e6 - 1) <= 0.01
    assert abs(zoo_row("efficientnet_b0").macs / 0.39e9 - 1) <= 0.02
    assert macs_tolerance("mobilenet_v1_100") == macs_tolerance("mobilenet_v2_100") == 1.0
    assert macs_tolerance("efficientnet_b0") == 2.0 and macs_tolerance("efficientnet_b3") == DEFAULT_MACS_TOLERANCE


@pytest.mark.parametrize("name", WITH_MACS)
def test_macs_within_tolerance_of_the_papers_or_a_documented_deviation(name):
    row = zoo_row(name)
    if name in KNOWN_DEVIATIONS:
        # Documented exception: it must still deviate, or the entry (and its "!" flag) should go.
        assert abs(row.macs_dev) > macs_tolerance(name), f"{name} now matches; drop it from KNOWN_DEVIATIONS"
        assert "!" in row.flag("macs") and KNOWN_DEVIATIONS[name] in row.note()
    else:
        assert abs(row.macs_dev) <= macs_tolerance(name), f"{name}: {row.macs_dev:+.2f}% vs the published MACs"
        assert "!" not in row.flag("macs")
    if PAPER_FIGURES[name].params:
        assert abs(row.params_dev) <= PARAMS_TOLERANCE


def test_known_deviations_are_real_zoo_models_with_a_published_figure():
    assert set(KNOWN_DEVIATIONS) <= set(WITH_MACS)
    assert all(len(reason) > 40 for reason in KNOWN_DEVIATIONS.values())  # a reason, not a shrug


def test_rounded_figures_are_flagged_in_the_table():
    rows = {r.name: r for r in zoo_rows()}
    for name, pub in PAPER_FIGURES.items():
        if pub.macs:
            assert ("≈" in rows[name].flag("macs")) == pub.rounded, name
    table = render_zoo(zoo_rows("efficientnet_b0"), "table")
    assert "-1.07% ≈" in table


def test_docs_zoo_md_is_the_current_output():
    text = DOCS.read_text(encoding="utf-8")
    assert f"`{REGENERATE}`" in text
    assert text == render_zoo(zoo_rows(), "markdown") + "\n", f"docs/zoo.md is stale; run: {REGENERATE}"


def test_unknown_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="no zoo model matches"):
        zoo_rows("resnet*")


def test_terminal_table_fits_120_columns_and_explains_its_flags():
    rows = zoo_rows()
    narrow = render_zoo(rows, "table").splitlines()
    assert max(len(line) for line in narrow) <= 120
    assert "note" not in narrow[0] and any("!" in line for line in narrow[2:len(rows) + 2])  # flags still shown
    legend = " ".join(narrow[len(rows) + 3:])
    assert "≈ the source rounds" in legend and "! the MACs deviate" in legend and "--wide" in legend
    wide = render_zoo(rows, "table", wide=True).splitlines()
    assert wide[0].rstrip().endswith("note") and max(len(line) for line in wide) > 120
