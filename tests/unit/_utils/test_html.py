"""Tests for honed._utils.html: escaping, the page skeleton, tables, and the inline-SVG charts."""

import xml.etree.ElementTree as ET

from honed._utils.html import (
    Bar,
    BarGroup,
    Line,
    bar_chart,
    esc,
    kv_table,
    line_chart,
    page,
    pre_td,
    table,
    td,
    tr,
)

NS = "{http://www.w3.org/2000/svg}"


def test_esc_escapes_markup_and_quotes():
    assert esc('<a href="x">&\'</a>') == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;&lt;/a&gt;"
    assert esc(3.5) == "3.5"


def test_page_is_one_document_with_escaped_title_and_no_remote_assets():
    doc = page("run <1>", ["<h1>a</h1>", "<p>b</p>"], extra_css=".x{color:red}")
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert "<title>run &lt;1&gt;</title>" in doc and ".x{color:red}</style>" in doc
    assert "<h1>a</h1>\n<p>b</p>" in doc
    assert "<script" not in doc and "<link" not in doc and "http" not in doc


def test_table_escapes_cells_and_keeps_row_classes():
    rows = [tr([td("<b>"), td(1.5, "num"), pre_td("a\nb")], "excluded")]
    text = table(["name", "<x>"], rows, css="examples")
    assert text.startswith('<table class="examples"><thead><tr><th>name</th><th>&lt;x&gt;</th></tr></thead>')
    assert (
        '<tr class="excluded"><td>&lt;b&gt;</td><td class="num">1.5</td><td><pre>a\nb</pre></td></tr>' in text
    )


def test_kv_table_has_a_row_per_pair_and_a_note_when_empty():
    assert kv_table([("a", td(1)), ("b", td(2))]).count("<tr>") == 2
    assert kv_table([]) == '<p class="muted">Not recorded.</p>'


def test_line_chart_draws_a_point_per_value_and_skips_empty_lines():
    lines = [Line("a", "#000", [(1, 2.0), (2, 1.0), (3, 0.5)]), Line("empty", "#111", [])]
    root = ET.fromstring(line_chart(lines, title="t", x_label="step", y_label="loss", empty="none"))
    polylines = root.findall(f"{NS}polyline")
    assert len(polylines) == 1 and len(polylines[0].get("points").split()) == 3
    assert len(root.findall(f"{NS}circle")) == 3
    labels = [t.text for t in root.iter(f"{NS}text")]
    assert "a" in labels and "empty" not in labels and "step" in labels and "loss" in labels


def test_line_chart_says_so_when_there_is_nothing_to_draw():
    root = ET.fromstring(line_chart([], title="t", x_label="x", y_label="y", empty="no <loss>"))
    assert [t.text for t in root.iter(f"{NS}text")] == ["no <loss>"]


def test_bar_chart_draws_one_rect_per_series_swatch_and_measured_bar():
    series = [("a", "#000"), ("b", "#111")]
    groups = [BarGroup("x", [Bar(0.5), None]), BarGroup("<y>", [Bar(0.25), Bar(2.0)], muted=True)]
    svg = bar_chart(series, groups, title="scores")
    root = ET.fromstring(svg)
    assert len(root.findall(f"{NS}rect")) == 2 + 3  # legend swatches, then the measured bars
    widths = [float(r.get("width")) for r in root.findall(f"{NS}rect")[2:]]
    assert widths[0] == 2 * widths[1] and widths[2] == 4 * widths[0]  # one linear scale, up to the max
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "<y>" in texts and "-" in texts and "2.000" in texts and "&lt;y&gt;" in svg


def test_bar_chart_draws_interval_whiskers_and_labels():
    groups = [BarGroup("base", [Bar(0.9, 0.8, 0.95)]), BarGroup("tuned", [Bar(0.5)])]
    root = ET.fromstring(bar_chart([("metric", "#000")], groups, title="primary metric"))
    assert len(root.findall(f"{NS}line")) == 3  # one whisker and its two caps
    assert "0.900 [0.800, 0.950]" in [t.text for t in root.iter(f"{NS}text")]
    assert root.get("aria-label") == "primary metric"


def test_bar_chart_without_namespace_holds_no_url():
    svg = bar_chart([("a", "#000")], [], title="t", empty="nothing", xmlns=False)
    assert "http" not in svg and "nothing" in svg
