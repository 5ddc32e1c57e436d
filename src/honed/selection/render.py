"""Render a `honed select` ranking as a fixed-width text table and as a self-contained HTML report.

This module owns the layout only: the table columns and their number formats, the recommendation box,
an inline-SVG score chart and the example predictions. It decides nothing (selection/rank.py ranks and
recommends) and measures nothing. The HTML reuses the run report's look (evaluation/report.py's CSS),
has no scripts and no external assets, and passes every user or model string through `html.escape`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from honed.evaluation.report import _CSS, _esc
from honed.selection.rank import GIB, STAGES, Constraints, _number, stage_scores

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
_STAGE_COLORS = {"zero_shot": "#93c5fd", "few_shot": "#2563eb", "trial": "#15803d"}
_LABEL_W, _BAR_W, _VALUE_W, _BAR_H, _GAP, _LEGEND_H = 220, 360, 56, 12, 10, 24
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
    recipe = _esc(meta.get("recipe") or "unnamed recipe")
    sections = [
        f"<h1>honed select: {recipe}</h1>",
        _meta_table(meta),
        "<h2>Constraints</h2>",
        _kv_table(_constraint_rows(constraints)),
        _recommendation_box(recommendation),
        "<h2>Ranking</h2>",
        _ranking_table(ranked),
        "<h2>Scores</h2>",
        score_chart_svg(ranked),
        "<h2>Examples</h2>",
        "".join(_examples_section(row) for row in ranked) or '<p class="muted">No candidates.</p>',
    ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>honed select: {recipe}</title>\n<style>{_CSS}{_SELECT_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


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
    commercial = {True: "yes", False: "no"}.get(row.get("commercial_use"), "?")
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
    if not rows:
        return '<p class="muted">Not recorded.</p>'
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


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
    title = f"Recommended: {_esc(name)}" if name else "No recommendation"
    css = "rec" if name else "rec none"
    return f'<div class="{css}"><b>{title}</b><p>{_esc(recommendation.get("why", ""))}</p></div>'


def _ranking_table(ranked: list[dict]) -> str:
    """Return the ranked table with a reasons column; excluded rows are greyed."""
    if not ranked:
        return '<p class="muted">No candidates.</p>'
    head = "<tr>" + "".join(f"<th>{_esc(c)}</th>" for c in _COLUMNS) + "<th>reasons</th></tr>"
    return f"<table>{head}{''.join(_ranking_row(row) for row in ranked)}</table>"


def _ranking_row(row: dict) -> str:
    """Return one ranked candidate as a table row, numbers right-aligned, reasons as a list."""
    cells = "".join(
        f"<td>{_esc(cell)}</td>" if column in _TEXT_COLUMNS else f'<td class="num">{_esc(cell)}</td>'
        for cell, column in zip(_cells(row), _COLUMNS, strict=True)
    )
    reasons = "".join(f"<li>{_esc(reason)}</li>" for reason in row.get("reasons", []))
    css = "" if row.get("eligible") else ' class="excluded"'
    return f'<tr{css}>{cells}<td><ul class="reasons">{reasons}</ul></td></tr>'


def score_chart_svg(ranked: list[dict]) -> str:
    """Return an inline SVG with one horizontal bar per candidate and stage (zero-shot, few-shot, trial)."""
    stages = [s for s in STAGES if s != "trial" or any(stage_scores(r)["trial"] is not None for r in ranked)]
    values = [v for r in ranked for v in stage_scores(r).values() if v is not None]
    top = max([1.0, *values])  # metrics are mostly in [0, 1]; widen only when one is larger
    group_h = len(stages) * _BAR_H + _GAP
    width, height = _LABEL_W + _BAR_W + _VALUE_W, _LEGEND_H + max(len(ranked), 1) * group_h
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="score per candidate" font-size="11">',
        *_chart_legend(stages),
    ]
    for index, row in enumerate(ranked):
        parts += _chart_group(row, stages, _LEGEND_H + index * group_h, top)
    if not ranked:
        parts.append(
            f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" fill="#6b7280">none</text>'
        )
    return "".join(parts) + "</svg>"


def _chart_legend(stages: list[str]) -> list[str]:
    """Return SVG elements for a one-line legend above the bars."""
    out = []
    for i, stage in enumerate(stages):
        x = _LABEL_W + 90 * i
        out.append(f'<rect x="{x}" y="6" width="12" height="10" fill="{_STAGE_COLORS[stage]}"/>')
        out.append(f'<text x="{x + 16}" y="15">{_esc(stage.replace("_", "-"))}</text>')
    return out


def _chart_group(row: dict, stages: list[str], y: float, top: float) -> list[str]:
    """Return the label and bars of one candidate, starting at pixel row `y`."""
    name = str(row.get("name"))
    label = name if len(name) <= 32 else name[:31] + "…"
    fill = "" if row.get("eligible") else ' fill="#9ca3af"'
    out = [f'<text x="{_LABEL_W - 8}" y="{y + _BAR_H + 2}" text-anchor="end"{fill}>{_esc(label)}</text>']
    scores = stage_scores(row)
    for i, stage in enumerate(stages):
        bar_y, value = y + i * _BAR_H, scores[stage]
        if value is None:
            out.append(f'<text x="{_LABEL_W + 4}" y="{bar_y + _BAR_H - 2}" fill="#9ca3af">-</text>')
            continue
        length = max(value, 0.0) / top * _BAR_W
        out.append(
            f'<rect x="{_LABEL_W}" y="{bar_y + 1}" width="{length:.1f}" height="{_BAR_H - 2}" '
            f'fill="{_STAGE_COLORS[stage]}"/>'
        )
        out.append(f'<text x="{_LABEL_W + length + 4:.1f}" y="{bar_y + _BAR_H - 2}">{value:.3f}</text>')
    return out


def _examples_section(row: dict) -> str:
    """Return one candidate's heading and up to three predictions side by side."""
    examples = [e for e in row.get("examples") or [] if isinstance(e, dict)][:_MAX_EXAMPLES]
    heading = f"<h3>{_esc(row.get('name'))}</h3>"
    if not examples:
        return heading + '<p class="muted">No examples recorded.</p>'
    k = row.get("few_shot_k")
    few = f"few-shot answer (k={_esc(k)})" if k is not None else "few-shot answer"
    head = f"<tr><th>prompt</th><th>reference</th><th>zero-shot answer</th><th>{few}</th></tr>"
    cells = ("prompt", "reference", "zero_shot", "few_shot")
    body = "".join("<tr>" + "".join(_pre(e.get(key)) for key in cells) + "</tr>" for e in examples)
    return f'{heading}<table class="examples">{head}{body}</table>'


def _pre(value: Any) -> str:
    """Return a table cell holding `value` escaped and pre-wrapped ("-" when missing)."""
    return f"<td><pre>{_esc('-' if value is None else value)}</pre></td>"
