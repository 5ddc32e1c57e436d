"""The run report: `summary.json` and a self-contained `report.html` written into a run directory.

This module owns the layout of the report: header, base-vs-tuned metric table, a loss chart drawn as
inline SVG, training and data tables, and side-by-side examples. It computes no metrics itself (tasks.py
does) and draws nothing itself: the look, escaping, tables and the chart come from `honed._utils.html`,
so the HTML has inline CSS, no scripts and no external assets, and every user or model string is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from honed._utils.html import Line, esc, kv_table, line_chart, muted, page, pre_td, table, td, th, tr
from honed.errors import HonedError
from honed.evaluation.compare_render import tables_html
from honed.evaluation.registry import build_task

_MAX_EXAMPLES = 20
_MAX_REGRESSIONS = 5
_TRAIN_COLOR, _VAL_COLOR = "#2563eb", "#dc2626"
_TRAIN_KEYS = ("steps", "wall_s", "tokens_per_s", "final_train_loss", "final_val_loss")


def write_report(
    run_dir: Path,
    summary: dict,
    metrics: list[dict],
    base_predictions: list[dict] | None,
    tuned_predictions: list[dict] | None,
) -> Path:
    """Write `run_dir/summary.json` and `run_dir/report.html` and return the path of the HTML file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summary or {}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    html_path = run_dir / "report.html"
    html_path.write_text(
        render_report(summary, metrics, base_predictions, tuned_predictions), encoding="utf-8"
    )
    return html_path


def render_report(
    summary: dict,
    metrics: list[dict] | None,
    base_predictions: list[dict] | None,
    tuned_predictions: list[dict] | None,
) -> str:
    """Return the report as one self-contained HTML document."""
    eval_info = _as_dict(summary.get("eval"))
    primary = _primary_metric(eval_info, base_predictions, tuned_predictions)
    run_id = str(summary.get("run_id") or "unnamed run")
    sections = [
        f"<h1>honed run {esc(run_id)}</h1>",
        _header_table(summary),
        "<h2>Evaluation</h2>",
        _metrics_table(eval_info, primary),
        _comparison_section(summary.get("comparison")),
        "<h2>Loss</h2>",
        loss_chart_svg(metrics or []),
        "<h2>Training</h2>",
        _training_table(_as_dict(summary.get("train"))),
        "<h2>Data</h2>",
        _data_tables(_as_dict(summary.get("data"))),
        "<h2>Examples</h2>",
        _examples_section(base_predictions, tuned_predictions, primary),
    ]
    return page(f"honed report {run_id}", sections)


def _comparison_section(comparison: dict | None) -> str:
    """Paired differences with confidence intervals (see comparison.html for charts and regressions)."""
    if not comparison:
        return ""
    return (
        "<h3>Paired differences (bootstrap confidence intervals)</h3>"
        + tables_html(comparison)
        + muted("Charts, slices and regressed examples: comparison.html")
    )


def _as_dict(value: Any) -> dict:
    """Return `value` if it is a dict, else an empty dict, so missing sections render as empty."""
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> TypeGuard[float]:
    """Return True for finite ints and floats (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    """Return a human-readable rendering of a table value (not yet escaped)."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def _dig(mapping: dict, dotted: str) -> Any:
    """Return the value at a dotted path in nested dicts (or under the flat dotted key), else None."""
    if dotted in mapping:
        return mapping[dotted]
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    """Return a two-column table of (label, value) rows, numbers right-aligned; a note when empty."""
    return kv_table([(k, td(_fmt(v), "num" if _is_number(v) else "")) for k, v in rows])


def _header_table(summary: dict) -> str:
    """Return the table naming the recipe, base model, adapter and eval task."""
    recipe = _as_dict(summary.get("recipe"))
    rows = [
        ("recipe", _dig(recipe, "name")),
        ("base model", _dig(recipe, "model.base")),
        ("adapter", recipe.get("adapter")),
        ("eval task", _dig(recipe, "eval.task") or _as_dict(summary.get("eval")).get("task")),
    ]
    return _kv_table([(k, v) for k, v in rows if v is not None])


def _primary_metric(eval_info: dict, *prediction_lists: list[dict] | None) -> str | None:
    """Return the eval task's primary metric, falling back to the first score key of any prediction."""
    for label in ("tuned", "base"):
        primary = _as_dict(eval_info.get(label)).get("primary_metric")
        if isinstance(primary, str):
            return primary
    if isinstance(eval_info.get("task"), str):
        try:
            return build_task(eval_info["task"]).primary_metric
        except HonedError:
            pass
    for predictions in prediction_lists:
        for row in predictions or []:
            score = _as_dict(row.get("score"))
            if score:
                return next(iter(score))
    return None


def _metrics_table(eval_info: dict, primary: str | None) -> str:
    """Return the base vs tuned vs delta table of corpus metrics, primary metric first, 3 decimals."""
    base, tuned = _as_dict(eval_info.get("base")), _as_dict(eval_info.get("tuned"))
    names = [
        k
        for k in dict.fromkeys([*base, *tuned])
        if k != "rows" and (_is_number(base.get(k)) or _is_number(tuned.get(k)))
    ]
    if primary in names:
        names.remove(primary)
        names.insert(0, primary)
    if not names:
        return muted("No evaluation recorded.")
    rows = [_metric_row(name, base.get(name), tuned.get(name), name == primary) for name in names]
    caption = f"<p>{esc(_fmt(eval_info['rows']))} rows</p>" if eval_info.get("rows") is not None else ""
    return caption + table(["metric", "base", "tuned", "delta"], rows)


def _metric_row(name: str, base: Any, tuned: Any, is_primary: bool) -> str:
    """Return one metric row with the delta coloured by its sign."""

    def cell(value: Any) -> str:
        return td(f"{value:.3f}" if _is_number(value) else "—", "num")

    delta_cell = td("—", "num")
    if _is_number(base) and _is_number(tuned):
        delta = tuned - base
        css = " up" if delta > 0 else " down" if delta < 0 else ""
        delta_cell = td(f"{delta:+.3f}", "num" + css)
    label = f"<th><b>{esc(name)}</b></th>" if is_primary else th(name)
    return tr([label, cell(base), cell(tuned), delta_cell])


def _training_table(train: dict) -> str:
    """Return the training numbers table, known keys first, with the trainable-parameter share."""
    rows = [(k, train[k]) for k in _TRAIN_KEYS if k in train]
    trainable, total = train.get("trainable_params"), train.get("total_params")
    if _is_number(trainable) and _is_number(total) and total > 0:
        share = f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
        rows.append(("trainable params", share))
    else:
        rows += [(k, train[k]) for k in ("trainable_params", "total_params") if k in train]
    known = {*_TRAIN_KEYS, "trainable_params", "total_params"}
    rows += [(k, v) for k, v in train.items() if k not in known]
    return _kv_table(rows)


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """Return nested dicts flattened to dotted keys, e.g. {"tokens": {"min": 3}} -> {"tokens.min": 3}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _data_tables(data: dict) -> str:
    """Return one table with a row per data split and a column per (flattened) statistic."""
    splits = {name: _flatten(stats) for name, stats in data.items() if isinstance(stats, dict)}
    extras = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    parts = [_kv_table(extras)] if extras else []
    if splits:
        columns = list(dict.fromkeys(col for stats in splits.values() for col in stats))
        rows = [
            tr([th(name), *(td(_fmt(stats.get(c)), "num") for c in columns)])
            for name, stats in splits.items()
        ]
        parts.append(table(["split", *columns], rows))
    return "\n".join(parts) or muted("Not recorded.")


def _points(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    """Return the (step, value) pairs of rows that have a finite `key` and a finite step."""
    rows = [r for r in metrics if isinstance(r, dict)]
    return sorted(
        (float(r["step"]), float(r[key]))
        for r in rows
        if _is_number(r.get("step")) and _is_number(r.get(key))
    )


def loss_chart_svg(metrics: list[dict]) -> str:
    """Return an inline SVG plotting train `loss` and `val_loss` against `step`, with axes and a legend."""
    lines = [
        Line("train loss", _TRAIN_COLOR, _points(metrics, "loss")),
        Line("val loss", _VAL_COLOR, _points(metrics, "val_loss")),
    ]
    return line_chart(lines, title="loss curves", x_label="step", y_label="loss", empty="no loss recorded")


def _score_of(row: dict, primary: str | None) -> float:
    """Return the row's primary score, 0.0 when missing."""
    value = _as_dict(row.get("score")).get(primary) if primary else None
    return float(value) if _is_number(value) else 0.0


def _changed_pairs(base: list[dict], tuned: list[dict]) -> list[tuple[dict, dict]]:
    """Return the (base, tuned) rows, paired in order, whose predictions differ."""
    pairs = [(b, t) for b, t in zip(base, tuned, strict=False) if isinstance(b, dict)]
    return [(b, t) for b, t in pairs if str(b.get("prediction")).strip() != str(t.get("prediction")).strip()]


def _examples_section(base: list[dict] | None, tuned: list[dict] | None, primary: str | None) -> str:
    """Return the examples: changed predictions (improvements first) and regressions, or tuned only."""
    tuned_rows = [r for r in tuned or [] if isinstance(r, dict)]
    if not tuned_rows:
        return muted("No predictions recorded.")
    if base is None:
        return _pair_table([(None, t) for t in tuned_rows[:_MAX_EXAMPLES]], primary)
    changed = _changed_pairs(base, tuned_rows)
    gains = [_score_of(t, primary) - _score_of(b, primary) for b, t in changed]
    ranked = sorted(range(len(changed)), key=lambda i: (-gains[i], i))  # biggest gain first, then order
    shown = [changed[i] for i in ranked if gains[i] >= 0][:_MAX_EXAMPLES]
    worse = [changed[i] for i in sorted(ranked, key=lambda i: (gains[i], i)) if gains[i] < 0]
    note = (
        f"<p>{len(changed)} of {min(len(base), len(tuned_rows))} predictions changed; "
        f"{sum(g > 0 for g in gains)} improved and {len(worse)} got worse on {esc(primary or 'score')}.</p>"
    )
    return (
        f"{note}<h3>Changed (improvements first)</h3>{_pair_table(shown, primary)}"
        f"<h3>Got worse</h3>{_pair_table(worse[:_MAX_REGRESSIONS], primary)}"
    )


def _pair_table(pairs: Sequence[tuple[dict | None, dict]], primary: str | None) -> str:
    """Return a table of (base, tuned) predictions and primary scores side by side; base may be None."""
    if not pairs:
        return muted("None.")
    has_base = any(b is not None for b, _ in pairs)
    metric = primary or "score"
    names = ["base prediction", "tuned prediction", f"base {metric}", f"tuned {metric}"]
    names = names if has_base else ["prediction", metric]
    rows = [_pair_row(b if has_base else None, t, primary) for b, t in pairs]
    return table(["#", "prompt", "reference", *names], rows, css="examples")


def _pair_row(base: dict | None, tuned: dict, primary: str | None) -> str:
    """Return one example row: prompt, reference, predictions and primary scores, all escaped."""
    rows = [tuned] if base is None else [base, tuned]
    predictions = [_pre(r.get("prediction")) for r in rows]
    scores = [td(f"{_score_of(r, primary):.3f}", "num") for r in rows]
    return tr(
        [
            td(tuned.get("index", "")),
            _pre(tuned.get("prompt")),
            _pre(tuned.get("reference")),
            *predictions,
            *scores,
        ]
    )


def _pre(value: Any) -> str:
    """Return a table cell holding `value` escaped and pre-wrapped (empty when missing)."""
    return pre_td("" if value is None else value)
