"""Render a comparison (from `compare.compare_systems`) as Markdown, self-contained HTML and JSON files.

Tables are shared by the Markdown and HTML renderings. The HTML page, its tables and its charts (the
primary metric per system with its bootstrap interval, and per slice) come from `honed._utils.html`: inline
CSS and SVG, no scripts, so the page opens without a network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from honed._utils.html import PALETTE, Bar, BarGroup, bar_chart, esc, page, table, td, tr

_CELL_CHARS = 200  # longer prompts and predictions are cut in the Markdown/HTML tables, not in the JSON

Table = tuple[list[str], list[list[str]]]


def _cut(value: Any) -> str:
    """Return `value` as text, cut to _CELL_CHARS characters."""
    text = "" if value is None else str(value)
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


def _significance(diff: Mapping[str, Any], resamples: int) -> str:
    """Return "yes (p=0.003)" / "no (p=0.41)"; p = 0 is written as p < 2 / resamples."""
    p = diff["p_value"]
    shown = f"p below {2 / resamples:.2g}" if p == 0 else f"p={p:.3g}"
    return f"{'yes' if diff['significant'] else 'no'} ({shown})"


def _metric_table(result: Mapping[str, Any]) -> Table:
    """Return the metric table: one row per metric, each system's value, then delta, CI and significance."""
    labels, reference = result["systems"], result["systems"][0]
    percent = f"{result.get('confidence', 0.95):.0%}"
    header = ["metric", *labels]
    for label in labels[1:]:
        header += [f"{label} − {reference} [{percent} CI]", f"{label} significant"]
    rows = []
    for name in result["metrics"][reference]:
        mark = " (primary)" if name == result["primary_metric"] else ""
        row = [name + mark, *(f"{result['metrics'][label][name]:.4f}" for label in labels)]
        for label in labels[1:]:
            diff = result["differences"][label][name]
            row += [
                f"{diff['delta']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]",
                _significance(diff, result.get("resamples", 1000)),
            ]
        rows.append(row)
    return header, rows


def _slice_table(result: Mapping[str, Any]) -> Table:
    """Return the by-slice table of the primary metric, one row per slice."""
    labels, primary = result["systems"], result["primary_metric"]
    rows = [
        [name, str(values[labels[0]]["rows"]), *(f"{values[label][primary]:.4f}" for label in labels)]
        for name, values in result.get("by_slice", {}).items()
    ]
    return ["slice", "rows", *labels], rows


def _probe_table(result: Mapping[str, Any]) -> Table:
    """The forgetting probe: each system's general-text and base-answer perplexity (lower is better)."""
    probe = result.get("probe") or {}
    labels = [label for label in result["systems"] if label in probe]
    names = sorted({name for label in labels for name in probe[label]})
    rows = [
        [name, *[f"{probe[label][name]:.3f}" if name in probe[label] else "" for label in labels]]
        for name in names
    ]
    return ["probe metric (lower is better)", *labels], rows


def _regression_tables(result: Mapping[str, Any]) -> list[tuple[str, Table]]:
    """Return (title, table) per non-reference system listing the rows where it scored lower."""
    reference, tables = result["systems"][0], []
    for label in result["systems"][1:]:
        title = (
            f"{label} vs {reference}: {result['regressions_count'][label]} rows worse, "
            f"{result['improvements_count'][label]} better"
        )
        header = ["index", "prompt", "reference", f"{reference} prediction", f"{label} prediction"]
        header += [f"{reference} score", f"{label} score"]
        rows = [
            [str(r["index"]), *(_cut(r[k]) for k in ("prompt", "reference", "a_prediction", "b_prediction"))]
            + [f"{r['a_score']:.3f}", f"{r['b_score']:.3f}"]
            for r in result["regressions"][label]
        ]
        tables.append((title, (header, rows)))
    return tables


def _summary_line(result: Mapping[str, Any]) -> str:
    """Return the one-line description of what was compared and how."""
    return (
        f"{result['rows']} rows compared; reference system: {result['systems'][0]}; "
        f"{result.get('resamples', 1000)} paired bootstrap resamples (seed {result.get('seed', 0)}), "
        f"{result.get('confidence', 0.95):.0%} percentile intervals; "
        f"primary metric: {result['primary_metric']}."
    )


def _md_cell(text: str) -> str:
    """Return `text` safe inside a Markdown table cell: `|` escaped, `&<>` as entities, newlines as <br>.

    Entities keep a prediction such as `<tag>` visible (and inert) when the Markdown is rendered.
    """
    text = html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def _md_table(table: Table) -> str:
    """Return a Markdown table."""
    header, rows = table
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(result: Mapping[str, Any]) -> str:
    """Return the comparison as Markdown: metric table, by-slice table, then regressions per system."""
    parts = [
        f"# Comparison: {result['task']}",
        _summary_line(result),
        "## Metrics",
        _md_table(_metric_table(result)),
    ]
    if result.get("probe"):
        parts += ["## Forgetting probe", _md_table(_probe_table(result))]
    if result.get("by_slice"):
        parts += [f"## By slice ({result['primary_metric']})", _md_table(_slice_table(result))]
    parts.append("## Regressions")
    for title, rendered in _regression_tables(result):
        parts += [f"### {_md_cell(title)}", _md_table(rendered) if rendered[1] else "No row got worse."]
    return "\n\n".join(parts) + "\n"


def _html_table(rendered: Table) -> str:
    """Return an HTML table with every cell escaped."""
    header, rows = rendered
    return table(header, [tr(td(cell) for cell in row) for row in rows])


def _primary_chart(result: Mapping[str, Any]) -> str:
    """Return a bar chart of the primary metric per system, its bootstrap interval as a whisker."""
    primary, intervals = result["primary_metric"], result.get("intervals") or {}
    groups = []
    for label in result["systems"]:
        interval = intervals.get(label, {})
        bar = Bar(result["metrics"][label].get(primary, 0.0), interval.get("ci_low"), interval.get("ci_high"))
        groups.append(BarGroup(label, [bar]))
    legend = f"{primary} ({result.get('confidence', 0.95):.0%} bootstrap CI)"
    return bar_chart([(legend, PALETTE[0])], groups, title="primary metric")


def _slice_chart(result: Mapping[str, Any]) -> str:
    """Return a bar chart of the primary metric per slice, one bar per system."""
    labels, primary = result["systems"], result["primary_metric"]
    series = [(label, PALETTE[i % len(PALETTE)]) for i, label in enumerate(labels)]
    groups = [
        BarGroup(name, [Bar(values[label][primary]) for label in labels])
        for name, values in result["by_slice"].items()
    ]
    return bar_chart(series, groups, title="primary metric by slice")


def tables_html(result: Mapping[str, Any]) -> str:
    """The metric table (values, deltas, confidence intervals) and the probe table, for embedding."""
    parts = [f"<p>{esc(_summary_line(result))}</p>", _html_table(_metric_table(result))]
    if result.get("probe"):
        parts += ["<h3>Forgetting probe</h3>", _html_table(_probe_table(result))]
    return "\n".join(parts)


def render_html(result: Mapping[str, Any]) -> str:
    """Return a self-contained HTML comparison (inline CSS, charts as inline SVG, no scripts)."""
    title = f"Comparison: {result['task']}"
    parts = [f"<h1>{esc(title)}</h1>", f"<p>{esc(_summary_line(result))}</p>", "<h2>Metrics</h2>"]
    parts += [_html_table(_metric_table(result)), _primary_chart(result)]
    if result.get("probe"):
        parts += ["<h2>Forgetting probe</h2>", _html_table(_probe_table(result))]
    if result.get("by_slice"):
        parts += [f"<h2>By slice ({esc(result['primary_metric'])})</h2>", _html_table(_slice_table(result))]
        parts.append(_slice_chart(result))
    parts.append("<h2>Regressions</h2>")
    for heading, rendered in _regression_tables(result):
        parts += [
            f"<h3>{esc(heading)}</h3>",
            _html_table(rendered) if rendered[1] else "<p>No row got worse.</p>",
        ]
    return page(title, parts)


def write_comparison(result: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write comparison.json, comparison.md and comparison.html into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "comparison.json",
        "md": out_dir / "comparison.md",
        "html": out_dir / "comparison.html",
    }
    paths["json"].write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(result), encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    return paths
