"""Tests for honed.evaluation.report: summary.json, a self-contained escaped report.html, the loss SVG."""

import json
import re
import xml.etree.ElementTree as ET

from honed.evaluation.report import loss_chart_svg, write_report

SUMMARY = {
    "run_id": "run-<1>",
    "recipe": {
        "name": "viggo & friends",
        "model": {"base": "HuggingFaceTB/SmolLM2-135M"},
        "adapter": {"kind": "lora", "r": 8},
        "eval": {"task": "structured"},
    },
    "data": {
        "train": {
            "rows_read": 100,
            "examples": 98,
            "skipped_bad_rows": 1,
            "too_long": 1,
            "tokens": {"min": 12, "mean": 40.5, "max": 90},
        },
        "validation": {"rows_read": 10, "examples": 10, "skipped_bad_rows": 0, "too_long": 0},
    },
    "train": {
        "steps": 30,
        "wall_s": 12.5,
        "tokens_per_s": 1234.5,
        "final_train_loss": 0.81,
        "final_val_loss": 0.92,
        "trainable_params": 460800,
        "total_params": 134975808,
    },
    "eval": {
        "task": "structured",
        "rows": 3,
        "base": {"slot_f1": 0.25, "act_accuracy": 0.5, "rows": 3},
        "tuned": {"slot_f1": 0.75, "act_accuracy": 0.4, "rows": 3},
    },
}

METRICS = [
    {"step": 10, "loss": 2.0, "lr": 1e-4, "tokens_per_s": 1000.0},
    {"step": 20, "loss": 1.2, "val_loss": 1.4},
    {"step": 30, "loss": 0.81, "val_loss": 0.92},
]


def _row(index, prediction, f1, prompt="p", reference="inform(name[Halo])"):
    return {
        "index": index,
        "prompt": prompt,
        "reference": reference,
        "prediction": prediction,
        "score": {"slot_f1": f1},
    }


def _predictions():
    base = [
        _row(0, "<script>alert(1)</script>", 0.0, prompt="Describe <b>Halo</b> & more"),
        _row(1, "inform(name[Halo])", 1.0),
        _row(2, "same", 0.5),
        _row(3, "inform(name[Doom])", 0.0),
    ]
    tuned = [
        _row(0, "inform(name[Halo])", 1.0, prompt="Describe <b>Halo</b> & more"),
        _row(1, "tuned-regression-output", 0.0),
        _row(2, "same", 0.5),
        _row(3, "inform(name[Halo], rating[good])", 0.6),
    ]
    return base, tuned


def _tbody_text(html_text):
    return re.sub(r"\s+", " ", html_text)


def test_write_report_writes_summary_json_and_self_contained_html(tmp_path):
    base, tuned = _predictions()
    path = write_report(tmp_path / "run", SUMMARY, METRICS, base, tuned)

    assert path == tmp_path / "run" / "report.html"
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == SUMMARY
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<svg" in text
    assert not re.search(r"<script|<link|@import|https?://(?!www\.w3\.org/2000/svg)", text)


def test_report_escapes_user_strings(tmp_path):
    base, tuned = _predictions()
    text = write_report(tmp_path, SUMMARY, METRICS, base, tuned).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Describe &lt;b&gt;Halo&lt;/b&gt; &amp; more" in text
    assert "run-&lt;1&gt;" in text and "viggo &amp; friends" in text
    assert "<b>Halo</b>" not in text


def test_report_metric_table_shows_base_tuned_and_delta(tmp_path):
    text = _tbody_text(write_report(tmp_path, SUMMARY, METRICS, None, None).read_text())
    assert re.search(r"slot_f1</b></th><td[^>]*>0\.250</td><td[^>]*>0\.750</td><td[^>]*>\+0\.500</td>", text)
    assert re.search(r"act_accuracy</th><td[^>]*>0\.500</td><td[^>]*>0\.400</td><td[^>]*>-0\.100</td>", text)
    assert "HuggingFaceTB/SmolLM2-135M" in text
    assert "tokens.mean" in text and "skipped_bad_rows" in text
    assert "460,800 of 134,975,808" in text


def test_report_lists_improvements_first_and_regressions_separately(tmp_path):
    base, tuned = _predictions()
    text = write_report(tmp_path, SUMMARY, METRICS, base, tuned).read_text()
    changed, worse = text.split("<h3>Got worse</h3>")
    # Example 0 gained 1.0, example 3 gained 0.6: the larger gain comes first.
    assert changed.index("&lt;script&gt;") < changed.index("rating[good]")
    assert "tuned-regression-output" in worse and "tuned-regression-output" not in changed
    assert ">same<" not in text  # identical predictions are not shown


def test_report_without_base_shows_tuned_examples(tmp_path):
    _, tuned = _predictions()
    text = write_report(tmp_path, SUMMARY, METRICS, None, tuned).read_text()
    assert "tuned-regression-output" in text and "base prediction" not in text


def test_report_survives_a_sparse_summary(tmp_path):
    text = write_report(
        tmp_path, {"run_id": "r", "eval": {"base": None, "tuned": None}}, [], None, None
    ).read_text()
    assert "no loss recorded" in text
    assert json.loads((tmp_path / "summary.json").read_text())["run_id"] == "r"


def test_loss_chart_is_valid_svg_with_both_series_and_legend():
    root = ET.fromstring(loss_chart_svg(METRICS))
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2
    assert len(lines[0].get("points").split()) == 3  # train loss at steps 10, 20, 30
    assert len(lines[1].get("points").split()) == 2  # val loss only where recorded
    labels = [t.text for t in root.iter(f"{ns}text")]
    assert "train loss" in labels and "val loss" in labels and "step" in labels


def test_loss_chart_handles_zero_and_one_point():
    ET.fromstring(loss_chart_svg([]))
    ET.fromstring(loss_chart_svg([{"step": 1}]))
    root = ET.fromstring(loss_chart_svg([{"step": 5, "loss": 1.5}]))
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 1
