"""The run report: `summary.json` and a self-contained `report.html` written into a run directory.

This module owns the layout of the report: header, base-vs-tuned metric table, a loss chart drawn as
inline SVG, training and data tables, and side-by-side examples. It computes no metrics itself (tasks.py
does) and loads nothing from the network: the HTML has inline CSS, no scripts and no external assets.
Every string that came from the user or the model is passed through `html.escape`.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

_MAX_EXAMPLES = 20
_MAX_REGRESSIONS = 5
_CHART_W, _CHART_H = 640, 300
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 56, 16, 16, 40
_X_PIXELS = (_MARGIN_L, _CHART_W - _MARGIN_R)  # left, right of the plot area
_Y_PIXELS = (_CHART_H - _MARGIN_B, _MARGIN_T)  # bottom, top: SVG y grows downwards
_TRAIN_COLOR, _VAL_COLOR = "#2563eb", "#dc2626"
_TRAIN_KEYS = ("steps", "wall_s", "tokens_per_s", "final_train_loss", "final_val_loss")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2937;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #e5e7eb}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #e5e7eb;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#15803d}.down{color:#b91c1c}.muted{color:#6b7280}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:16rem;overflow:auto;font-size:.8rem}
table.examples td{max-width:260px}
"""


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
        f"<h1>honed run {_esc(run_id)}</h1>",
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
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>honed report {_esc(run_id)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _comparison_section(comparison: dict | None) -> str:
    """Paired differences with confidence intervals (see comparison.html for charts and regressions)."""
    if not comparison:
        return ""
    from honed.evaluation.compare_render import tables_html

    return (
        "<h3>Paired differences (bootstrap confidence intervals)</h3>"
        + tables_html(comparison)
        + '<p class="muted">Charts, slices and regressed examples: comparison.html</p>'
    )


def _esc(value: Any) -> str:
    """Return `value` as text safe to put inside HTML elements and attributes."""
    return html.escape(str(value), quote=True)


def _as_dict(value: Any) -> dict:
    """Return `value` if it is a dict, else an empty dict, so missing sections render as empty."""
    return value if isinstance(value, dict) else {}


def _is_number(value: Any) -> bool:
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
    """Return a two-column HTML table of (label, value) rows, or a muted note when there are none."""
    if not rows:
        return '<p class="muted">Not recorded.</p>'
    cells = [
        f'<tr><th>{_esc(k)}</th><td class="{"num" if _is_number(v) else ""}">{_esc(_fmt(v))}</td></tr>'
        for k, v in rows
    ]
    return "<table>" + "".join(cells) + "</table>"


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
        from honed.errors import HonedError
        from honed.evaluation.registry import build_task

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
        return '<p class="muted">No evaluation recorded.</p>'
    rows = "".join(_metric_row(name, base.get(name), tuned.get(name), name == primary) for name in names)
    caption = f"<p>{_esc(_fmt(eval_info['rows']))} rows</p>" if eval_info.get("rows") is not None else ""
    head = "<tr><th>metric</th><th>base</th><th>tuned</th><th>delta</th></tr>"
    return f"{caption}<table>{head}{rows}</table>"


def _metric_row(name: str, base: Any, tuned: Any, is_primary: bool) -> str:
    """Return one metric row with the delta coloured by its sign."""

    def cell(value: Any) -> str:
        return f'<td class="num">{f"{value:.3f}" if _is_number(value) else "—"}</td>'

    delta_cell = '<td class="num">—</td>'
    if _is_number(base) and _is_number(tuned):
        delta = tuned - base
        css = "up" if delta > 0 else "down" if delta < 0 else ""
        delta_cell = f'<td class="num {css}">{delta:+.3f}</td>'
    label = f"<b>{_esc(name)}</b>" if is_primary else _esc(name)
    return f"<tr><th>{label}</th>{cell(base)}{cell(tuned)}{delta_cell}</tr>"


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
        head = "<tr><th>split</th>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr>"
        body = "".join(
            f"<tr><th>{_esc(name)}</th>"
            + "".join(f'<td class="num">{_esc(_fmt(stats.get(c)))}</td>' for c in columns)
            + "</tr>"
            for name, stats in splits.items()
        )
        parts.append(f"<table>{head}{body}</table>")
    return "\n".join(parts) or '<p class="muted">Not recorded.</p>'


def _points(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    """Return the (step, value) pairs of rows that have a finite `key` and a finite step."""
    rows = [r for r in metrics if isinstance(r, dict)]
    return sorted(
        (float(r["step"]), float(r[key]))
        for r in rows
        if _is_number(r.get("step")) and _is_number(r.get(key))
    )


def _tick_step(lo: float, hi: float, count: int = 5) -> float:
    """Return a round tick spacing (1, 2, 2.5 or 5 times a power of ten) giving about `count` ticks."""
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    """Return [lo, hi] widened outwards to whole tick steps, so both axis ends carry a tick."""
    step = _tick_step(lo, hi)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """Return round tick values covering [lo, hi]."""
    step = _tick_step(lo, hi)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _padded_range(values: list[float]) -> tuple[float, float]:
    """Return (min, max) of `values`, widened when they are all equal so the axis has a span."""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def loss_chart_svg(metrics: list[dict]) -> str:
    """Return an inline SVG plotting train `loss` and `val_loss` against `step`, with axes and a legend."""
    series = [("train loss", _TRAIN_COLOR, _points(metrics, "loss"))]
    series.append(("val loss", _VAL_COLOR, _points(metrics, "val_loss")))
    series = [s for s in series if s[2]]
    svg_open = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_CHART_W}" height="{_CHART_H}" '
        f'viewBox="0 0 {_CHART_W} {_CHART_H}" role="img" aria-label="loss curves" font-size="11">'
    )
    if not series:
        mid = f'x="{_CHART_W / 2}" y="{_CHART_H / 2}" text-anchor="middle" fill="#6b7280"'
        return f"{svg_open}<text {mid}>no loss recorded</text></svg>"
    all_points = [p for _, _, pts in series for p in pts]
    x_range = _nice_range(*_padded_range([x for x, _ in all_points]))
    y_range = _nice_range(*_padded_range([y for _, y in all_points]))
    parts = [svg_open, *_axes(x_range, y_range)]
    for _, color, pts in series:
        parts.append(_polyline(pts, color, x_range, y_range))
    parts += _legend([(label, color) for label, color, _ in series])
    return "".join(parts) + "</svg>"


def _scale(value: float, value_range: tuple[float, float], pixel_range: tuple[float, float]) -> float:
    """Return `value` mapped linearly from `value_range` onto `pixel_range`."""
    (v0, v1), (p0, p1) = value_range, pixel_range
    return p0 + (value - v0) / (v1 - v0) * (p1 - p0)


def _axes(x_range: tuple[float, float], y_range: tuple[float, float]) -> list[str]:
    """Return SVG elements for both axes, their ticks, grid lines and titles."""
    (x0, x1), (y0, y1) = _X_PIXELS, _Y_PIXELS
    out = [
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#374151"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#374151"/>',
    ]
    for tick in _nice_ticks(*x_range):
        px = _scale(tick, x_range, (x0, x1))
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" stroke="#374151"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{tick:g}</text>')
    for tick in _nice_ticks(*y_range):
        py = _scale(tick, y_range, (y0, y1))
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{tick:.4g}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{_CHART_H - 6}" text-anchor="middle">step</text>')
    out.append(
        f'<text x="12" y="{(y0 + y1) / 2}" transform="rotate(-90 12 {(y0 + y1) / 2})" '
        'text-anchor="middle">loss</text>'
    )
    return out


def _polyline(
    points: list[tuple[float, float]], color: str, x_range: tuple[float, float], y_range: tuple[float, float]
) -> str:
    """Return an SVG polyline through `points`, with a dot on each point when there are few of them."""
    pixels = [(_scale(x, x_range, _X_PIXELS), _scale(y, y_range, _Y_PIXELS)) for x, y in points]
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pixels)
    line = f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
    if len(pixels) > 50:
        return line
    dots = "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>' for px, py in pixels)
    return line + dots


def _legend(entries: list[tuple[str, str]]) -> list[str]:
    """Return SVG elements for a legend in the top-right corner of the plot."""
    out = []
    for i, (label, color) in enumerate(entries):
        y = _MARGIN_T + 8 + 16 * i
        x = _CHART_W - _MARGIN_R - 90
        out.append(f'<rect x="{x}" y="{y - 5}" width="14" height="3" fill="{color}"/>')
        out.append(f'<text x="{x + 20}" y="{y}">{_esc(label)}</text>')
    return out


def _score_of(row: dict, primary: str | None) -> float:
    """Return the row's primary score, 0.0 when missing."""
    value = _as_dict(row.get("score")).get(primary) if primary else None
    return float(value) if _is_number(value) else 0.0


def _pre(value: Any) -> str:
    """Return a table cell holding `value` escaped and pre-wrapped."""
    return f"<td><pre>{_esc('' if value is None else value)}</pre></td>"


def _changed_pairs(base: list[dict], tuned: list[dict]) -> list[tuple[dict, dict]]:
    """Return the (base, tuned) rows, paired in order, whose predictions differ."""
    pairs = [(b, t) for b, t in zip(base, tuned, strict=False) if isinstance(b, dict)]
    return [(b, t) for b, t in pairs if str(b.get("prediction")).strip() != str(t.get("prediction")).strip()]


def _examples_section(base: list[dict] | None, tuned: list[dict] | None, primary: str | None) -> str:
    """Return the examples: changed predictions (improvements first) and regressions, or tuned only."""
    tuned_rows = [r for r in tuned or [] if isinstance(r, dict)]
    if not tuned_rows:
        return '<p class="muted">No predictions recorded.</p>'
    if base is None:
        return _pair_table([(None, t) for t in tuned_rows[:_MAX_EXAMPLES]], primary)
    changed = _changed_pairs(base, tuned_rows)
    gains = [_score_of(t, primary) - _score_of(b, primary) for b, t in changed]
    ranked = sorted(range(len(changed)), key=lambda i: (-gains[i], i))  # biggest gain first, then order
    shown = [changed[i] for i in ranked if gains[i] >= 0][:_MAX_EXAMPLES]
    worse = [changed[i] for i in sorted(ranked, key=lambda i: (gains[i], i)) if gains[i] < 0]
    note = (
        f"<p>{len(changed)} of {min(len(base), len(tuned_rows))} predictions changed; "
        f"{sum(g > 0 for g in gains)} improved and {len(worse)} got worse on {_esc(primary or 'score')}.</p>"
    )
    return (
        f"{note}<h3>Changed (improvements first)</h3>{_pair_table(shown, primary)}"
        f"<h3>Got worse</h3>{_pair_table(worse[:_MAX_REGRESSIONS], primary)}"
    )


def _pair_table(pairs: list[tuple[dict | None, dict]], primary: str | None) -> str:
    """Return a table of (base, tuned) predictions and primary scores side by side; base may be None."""
    if not pairs:
        return '<p class="muted">None.</p>'
    has_base = any(b is not None for b, _ in pairs)
    metric = _esc(primary or "score")
    names = ["base prediction", "tuned prediction", f"base {metric}", f"tuned {metric}"]
    names = names if has_base else ["prediction", metric]
    head = (
        "<tr><th>#</th><th>prompt</th><th>reference</th>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    )
    rows = "".join(_pair_row(b if has_base else None, t, primary) for b, t in pairs)
    return f'<table class="examples">{head}{rows}</table>'


def _pair_row(base: dict | None, tuned: dict, primary: str | None) -> str:
    """Return one example row: prompt, reference, predictions and primary scores, all escaped."""
    rows = [tuned] if base is None else [base, tuned]
    predictions = "".join(_pre(r.get("prediction")) for r in rows)
    scores = "".join(f'<td class="num">{_score_of(r, primary):.3f}</td>' for r in rows)
    context = (
        f"<td>{_esc(tuned.get('index', ''))}</td>{_pre(tuned.get('prompt'))}{_pre(tuned.get('reference'))}"
    )
    return f"<tr>{context}{predictions}{scores}</tr>"
