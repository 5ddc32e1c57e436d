"""Tests for honed.selection.render: the text table, the self-contained escaped HTML, the written files."""

import json
import re

from honed.selection.rank import GIB, Constraints, rank, recommend
from honed.selection.render import format_duration, format_params, render_html, render_text, write_report

META = {
    "recipe": "viggo <demo>",
    "task": "structured",
    "sample_rows": 32,
    "few_shot_k": 3,
    "device": "cpu",
    "wall_s": 41.5,
    "date": "2025-06-01",
}


def candidate(name, zero, few, **overrides):
    """Return a measured candidate with one example prediction."""
    row = {
        "name": name,
        "source": "registry",
        "params": 134_515_008,
        "license": "Apache-2.0",
        "commercial_use": True,
        "evaluated": True,
        "primary_metric": "slot_f1",
        "zero_shot": {"slot_f1": zero},
        "few_shot": {"slot_f1": few},
        "few_shot_k": 3,
        "trial": None,
        "latency_s": 0.4,
        "tokens_per_s": 30.0,
        "train_memory_bytes": 2 * GIB,
        "train_epoch_s": 3480.0,
        "examples": [
            {"prompt": "inform(name=X)", "reference": "X is great", "zero_shot": "?", "few_shot": "X"}
        ],
    }
    row.update(overrides)
    return row


def ranked_fixture(constraints=None):
    """Return (ranked, recommendation, constraints) for three candidates, one excluded by memory."""
    constraints = constraints or Constraints(max_memory_gb=8.0)
    evil = {"prompt": "p & q", "reference": "r", "zero_shot": "<script>alert(1)</script>", "few_shot": None}
    rows = [
        candidate("smollm2-135m-instruct", 0.12, 0.31),
        candidate(
            "qwen2.5-1.5b-instruct", 0.4, 0.55, params=1_543_714_304, train_memory_bytes=int(9.1 * GIB)
        ),
        candidate("gemma<3>", 0.2, 0.25, license="Gemma", examples=[evil]),
    ]
    ranked = rank(rows, constraints)
    return ranked, recommend(ranked, constraints), constraints


def test_formats_params_and_epoch_time():
    assert format_params(134_515_008) == "135M"
    assert format_params(1_543_714_304) == "1.54B"
    assert format_params(None) == "-"
    assert format_duration(3480) == "58 min"
    assert format_duration(7560) == "2.1 h"
    assert format_duration(None) == "-"


def test_text_table_has_every_name_columns_reasons_and_recommendation():
    ranked, rec, constraints = ranked_fixture()
    text = render_text(ranked, rec, constraints)
    for row in ranked:
        assert row["name"] in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("#"))
    for column in ("params", "zero-shot", "few-shot", "trial", "latency s", "tok/s", "epoch", "commercial"):
        assert column in header
    assert "needs 9.1 GiB to train; limit 8.0 GiB" in text
    assert f"recommendation: {rec['name']}" in text and rec["name"] == "smollm2-135m-instruct"
    assert "1.54B" in text and "135M" in text and "0.310" in text and "58 min" in text
    first_row = next(line for line in lines if line.startswith("1 "))
    params_end = header.index("params") + len("params")
    assert first_row[params_end - len("135M") : params_end] == "135M"  # numbers right-aligned under headers
    assert header.index("params") < header.index("zero-shot") < header.index("few-shot")


def test_text_says_none_when_nothing_qualifies():
    ranked, rec, constraints = ranked_fixture(Constraints(max_memory_gb=1.0))
    text = render_text(ranked, rec, constraints)
    assert "recommendation: none" in text and "No candidate qualifies" in text


def test_html_escapes_model_output_and_has_no_scripts_or_remote_assets():
    ranked, rec, constraints = ranked_fixture()
    page = render_html(ranked, rec, constraints, META)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert "http" not in page
    assert not re.search(r"""(src|href)\s*=""", page)
    assert "gemma&lt;3&gt;" in page and "gemma<3>" not in page
    assert "<title>honed select: viggo &lt;demo&gt;</title>" in page


def test_html_has_header_constraints_recommendation_ranking_chart_and_examples():
    ranked, rec, constraints = ranked_fixture()
    page = render_html(ranked, rec, constraints, META)
    for value in ("structured", "32", "cpu", "41.5", "2025-06-01", "8.0 GiB"):
        assert f"<td>{value}</td>" in page
    assert '<div class="rec"><b>Recommended: smollm2-135m-instruct</b>' in page
    assert page.count('<tr class="excluded">') == 1
    excluded_row = page.split('<tr class="excluded">')[1].split("</tr>")[0]
    assert "qwen2.5-1.5b-instruct" in excluded_row and "needs 9.1 GiB to train" in excluded_row
    svg = page.split("<svg")[1].split("</svg>")[0]
    assert svg.count("<rect") == 2 + 2 * len(ranked)  # legend swatches, then a zero- and few-shot bar each
    assert "X is great" in page and page.count('<table class="examples">') == 3


def test_html_shows_no_recommendation_box_when_all_excluded():
    ranked, rec, constraints = ranked_fixture(Constraints(max_memory_gb=1.0))
    page = render_html(ranked, rec, constraints, META)
    assert '<div class="rec none"><b>No recommendation</b>' in page
    assert page.count('<tr class="excluded">') == 3


def test_write_report_writes_json_and_html(tmp_path):
    ranked, rec, constraints = ranked_fixture()
    path = write_report(tmp_path / "select", ranked, rec, constraints, META)
    assert path == tmp_path / "select" / "report.html" and path.read_text(encoding="utf-8").startswith(
        "<!DOCTYPE"
    )
    record = json.loads((tmp_path / "select" / "select.json").read_text(encoding="utf-8"))
    assert record["meta"] == META
    assert record["constraints"] == {"max_memory_gb": 8.0, "max_latency_s": None, "commercial": False}
    assert record["recommendation"] == rec
    assert [r["name"] for r in record["ranked"]] == [r["name"] for r in ranked]
