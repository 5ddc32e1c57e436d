"""Render a `honed select` ranking as a fixed-width text table and as a self-contained HTML report.

This module owns the layout only: the table columns and their number formats, the recommendation box,
an inline-SVG score chart and the example predictions. It decides nothing (selection/rank.py ranks and
recommends) and measures nothing. The look, escaping, tables and the chart come from `honed._utils.html`,
shared with the run report: no scripts, no external assets, and every user or model string escaped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from honed._utils.html import Bar, BarGroup, bar_chart, esc, kv_table, muted, page, pre_td, table, td, tr
from honed.selection.rank import GIB, STAGES, Constraints, stage_scores

_COLUMNS = (
    "#", "name", "status", "params", "zero-shot", "few-shot", "trial",
    "latency s", "tok/s", "train mem GiB", "epoch", "license", "commercial",
)  # fmt: skip
_TEXT_COLUMNS = frozenset({"name", "status", "license", "commercial"})  # left-aligned; the rest are numbers
_META_KEYS = (
    ("recipe", "recipe"), ("task", "task"), ("sample_rows", "sample rows"), ("few_shot_k", "few-shot k"),
    ("device", "device"), ("wall_s", "wall s"), ("date", "date"),
)  # fmt: skip
_MAX_EXAMPLES = 3
_COMMERCIAL: dict[Any, str] = {True: "yes", False: "no"}  # commercial_use may be missing or None
_STAGE_COLORS = {"zero_shot": "#93c5fd", "few_shot": "#2563eb", "trial": "#15803d"}
_SELECT_CSS = """
.rec{border:2px solid #15803d;background:#f0fdf4;padding:.75rem 1rem;border-radius:6px;margin:1rem 0}
.rec.none{border-color:#b91c1c;background:#fef2f2}
tr.excluded td,tr.excluded th{color:#9ca3af;background:#f9fafb}
ul.reasons{margin:0;padding-left:1.1rem}
"""


def render_text(ranked: list[dict], recommendation: dict, constraints: Constraints) -> str:
    """Return the ranking as a fixed-width table, each candidate's reasons below it, then the pick."""
    metric = next((r.get("primary_metric") for r in ranked if r.get("primary_metric")), None) or "score"
    rows = [_cells(row) for row in ranked]
    widths = [max(len(col), *(len(cells[i]) for cells in rows)) for i, col in enumerate(_COLUMNS)]
    lines = [
        f"constraints: {_constraints_text(constraints)}",
        f"metric: {metric}",
        _text_line(_COLUMNS, widths),
    ]
    for row, cells in zip(ranked, rows, strict=True):
        lines.append(_text_line(cells, widths))
        lines += [f"      - {reason}" for reason in row.get("reasons", [])]
    return "\n".join(lines) + "\n\n" + _recommendation_text(recommendation) + "\n"


def render_html(ranked: list[dict], recommendation: dict, constraints: Constraints, meta: dict) -> str:
    """Return the ranking as one self-contained HTML document (inline CSS and SVG, no scripts)."""
    recipe = str(meta.get("recipe") or "unnamed recipe")
    sections = [
        f"<h1>honed select: {esc(recipe)}</h1>",
        _meta_table(meta),
        "<h2>Constraints</h2>",
        _kv_table(_constraint_rows(constraints)),
        _recommendation_box(recommendation),
        "<h2>Ranking</h2>",
        _ranking_table(ranked),
        "<h2>Scores</h2>",
        score_chart_svg(ranked),
        "<h2>Examples</h2>",
        "".join(_examples_section(row) for row in ranked) or muted("No candidates."),
    ]
    return page(f"honed select: {recipe}", sections, extra_css=_SELECT_CSS)


def write_report(
    folder: Path, ranked: list[dict], recommendation: dict, constraints: Constraints, meta: dict
) -> Path:
    """Write `folder/select.json` and `folder/report.html` (creating `folder`) and return the HTML path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "meta": meta,
        "constraints": asdict(constraints),
        "recommendation": recommendation,
        "ranked": ranked,
    }
    (folder / "select.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    html_path = folder / "report.html"
    html_path.write_text(render_html(ranked, recommendation, constraints, meta), encoding="utf-8")
    return html_path


def _number(value: Any) -> float | None:
    """Return `value` as a float if it is a finite int or float (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def format_params(params: Any) -> str:
    """Return a parameter count as e.g. "135M" or "1.54B" (three significant digits), "-" if unknown."""
    value = _number(params)
    if value is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size * 0.9995:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def format_duration(seconds: Any) -> str:
    """Return a duration as e.g. "40 s", "58 min" or "2.1 h", "-" if unknown."""
    value = _number(seconds)
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min" if value < 3570 else f"{value / 3600:.1f} h"


def _fixed(value: Any, decimals: int) -> str:
    """Return a number with fixed decimals, or "-" when it is missing or not a number."""
    number = _number(value)
    return "-" if number is None else f"{number:.{decimals}f}"


def _status(row: dict) -> str:
    """Return "ok", "not run" (eligible, not evaluated) or "excluded"."""
    if not row.get("eligible"):
        return "excluded"
    return "ok" if row.get("score") is not None else "not run"


def _cells(row: dict) -> list[str]:
    """Return one candidate's table cells as unescaped strings, in `_COLUMNS` order."""
    scores = stage_scores(row)
    memory = _number(row.get("train_memory_bytes"))
    commercial = _COMMERCIAL.get(row.get("commercial_use"), "?")
    return [
        str(row.get("rank", "")),
        str(row.get("name")),
        _status(row),
        format_params(row.get("params")),
        *(_fixed(scores[stage], 3) for stage in STAGES),
        _fixed(row.get("latency_s"), 2),
        _fixed(row.get("tokens_per_s"), 1),
        "-" if memory is None else f"{memory / GIB:.1f}",
        format_duration(row.get("train_epoch_s")),
        str(row.get("license") or "?"),
        commercial,
    ]


def _text_line(cells: list[str] | tuple[str, ...], widths: list[int]) -> str:
    """Return one fixed-width line: text columns left-aligned, numbers right-aligned."""
    padded = [
        cell.ljust(width) if column in _TEXT_COLUMNS else cell.rjust(width)
        for cell, width, column in zip(cells, widths, _COLUMNS, strict=True)
    ]
    return "  ".join(padded).rstrip()


def _constraints_text(constraints: Constraints) -> str:
    """Return the active constraints in one line, e.g. "training memory <= 8.0 GiB; commercial use"."""
    parts = [f"{label} {value}" for label, value in _constraint_rows(constraints) if value != "no limit"]
    return "; ".join(parts) or "none"


def _constraint_rows(constraints: Constraints) -> list[tuple[str, str]]:
    """Return (label, value) rows describing each constraint, "no limit" where it is unset."""
    memory, latency = constraints.max_memory_gb, constraints.max_latency_s
    return [
        ("training memory <=", "no limit" if memory is None else f"{memory:.1f} GiB"),
        ("latency per answer <=", "no limit" if latency is None else f"{latency:g} s"),
        ("commercial use", "required" if constraints.commercial else "no limit"),
    ]


def _recommendation_text(recommendation: dict) -> str:
    """Return "recommendation: <name or none>" and, indented below, why."""
    return f"recommendation: {recommendation.get('name') or 'none'}\n  {recommendation.get('why', '')}"


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    """Return a two-column HTML table of (label, value) rows, all escaped."""
    return kv_table([(k, td(v)) for k, v in rows])


def _meta_table(meta: dict) -> str:
    """Return the header table: the known meta keys in a fixed order, then any others."""
    known = [(label, meta[key]) for key, label in _META_KEYS if meta.get(key) is not None]
    named = {key for key, _ in _META_KEYS}
    extra = [(key, value) for key, value in meta.items() if key not in named and value is not None]
    return _kv_table(
        known + [(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else v) for k, v in extra]
    )


def _recommendation_box(recommendation: dict) -> str:
    """Return the highlighted box naming the recommended candidate and why (or why none)."""
    name = recommendation.get("name")
    title = f"Recommended: {name}" if name else "No recommendation"
    css = "rec" if name else "rec none"
    return f'<div class="{css}"><b>{esc(title)}</b><p>{esc(recommendation.get("why", ""))}</p></div>'


def _ranking_table(ranked: list[dict]) -> str:
    """Return the ranked table with a reasons column; excluded rows are greyed."""
    if not ranked:
        return muted("No candidates.")
    return table([*_COLUMNS, "reasons"], [_ranking_row(row) for row in ranked])


def _ranking_row(row: dict) -> str:
    """Return one ranked candidate as a table row, numbers right-aligned, reasons as a list."""
    cells = [
        td(cell) if column in _TEXT_COLUMNS else td(cell, "num")
        for cell, column in zip(_cells(row), _COLUMNS, strict=True)
    ]
    reasons = "".join(f"<li>{esc(reason)}</li>" for reason in row.get("reasons", []))
    cells.append(f'<td><ul class="reasons">{reasons}</ul></td>')
    return tr(cells, "" if row.get("eligible") else "excluded")


def score_chart_svg(ranked: list[dict]) -> str:
    """Return an inline SVG with one horizontal bar per candidate and stage (zero-shot, few-shot, trial).

    The SVG leaves out its namespace URL (HTML does not need it), so the page holds no URL at all.
    """
    stages = [s for s in STAGES if s != "trial" or any(stage_scores(r)["trial"] is not None for r in ranked)]
    series = [(stage.replace("_", "-"), _STAGE_COLORS[stage]) for stage in stages]
    groups = []
    for row in ranked:
        scores = [stage_scores(row)[stage] for stage in stages]
        bars = [None if score is None else Bar(score) for score in scores]
        groups.append(BarGroup(str(row.get("name")), bars, muted=not row.get("eligible")))
    return bar_chart(series, groups, title="score per candidate", xmlns=False)


def _examples_section(row: dict) -> str:
    """Return one candidate's heading and up to three predictions side by side."""
    examples = [e for e in row.get("examples") or [] if isinstance(e, dict)][:_MAX_EXAMPLES]
    heading = f"<h3>{esc(row.get('name'))}</h3>"
    if not examples:
        return heading + muted("No examples recorded.")
    k = row.get("few_shot_k")
    few = f"few-shot answer (k={k})" if k is not None else "few-shot answer"
    header = ["prompt", "reference", "zero-shot answer", few]
    keys = ("prompt", "reference", "zero_shot", "few_shot")
    rows = [tr(_pre(e.get(key)) for key in keys) for e in examples]
    return heading + table(header, rows, css="examples")


def _pre(value: Any) -> str:
    """Return a table cell holding `value` escaped and pre-wrapped ("-" when missing)."""
    return pre_td("-" if value is None else value)
