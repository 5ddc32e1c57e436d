"""The HTML pieces every honed report is built from: one stylesheet, one escaping rule, inline-SVG charts.

This module owns the look shared by report.html, comparison.html and the `honed select` report: the CSS,
escaping, the page skeleton, tables, and two chart kinds drawn as inline SVG (a line chart for training
curves, a horizontal bar chart with optional interval whiskers for scores and confidence intervals). It
knows nothing about runs, comparisons or candidates; the renderers decide what goes in. Pages have inline
CSS, no scripts and no external assets. Text arguments are escaped here; `*_html` ones are markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2937;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #e5e7eb}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #e5e7eb;padding:.3rem .6rem;text-align:left;vertical-align:top}
td{white-space:pre-wrap;word-break:break-word}
th{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#15803d}.down{color:#b91c1c}.muted{color:#6b7280}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:16rem;overflow:auto;font-size:.8rem}
table.examples td{max-width:260px}
svg{max-width:100%;height:auto}
"""
PALETTE = ("#2563eb", "#dc2626", "#15803d", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")

_MUTED, _INK, _GRID = "#9ca3af", "#374151", "#e5e7eb"
_CHAR_W = 6.5  # average width in pixels of one character at the charts' 11px font
_LABEL_CHARS = 32  # longer bar and legend labels are cut
_LEGEND_ROW = 18  # pixels per legend line
_LINE_W, _LINE_H = 640, 300
_MARGIN_L, _MARGIN_R, _MARGIN_B = 56, 16, 40
_BAR_LABEL_W, _BAR_W, _BAR_H, _BAR_GAP = 220, 360, 12, 10


class Line(NamedTuple):
    """One series of a line chart: legend label, colour, and (x, y) points in data units."""

    label: str
    color: str
    points: Sequence[tuple[float, float]]


class Bar(NamedTuple):
    """One bar: its value and, optionally, the interval [low, high] drawn as a whisker over it."""

    value: float
    low: float | None = None
    high: float | None = None


class BarGroup(NamedTuple):
    """One labelled group of a bar chart: a bar per series (None: not measured); `muted` greys the label."""

    label: str
    bars: Sequence[Bar | None]
    muted: bool = False


def esc(value: Any) -> str:
    """Return `value` as text safe inside HTML (and SVG) elements and attribute values."""
    return html.escape(str(value), quote=True)


def page(title: str, body_html: Iterable[str], *, extra_css: str = "") -> str:
    """Return a complete HTML document titled `title`, its body the given fragments one per line."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}{extra_css}</style>\n</head>\n"
        "<body>\n" + "\n".join(body_html) + "\n</body>\n</html>\n"
    )


def muted(text: str) -> str:
    """Return a greyed paragraph, the note a section shows when it has nothing to show."""
    return f'<p class="muted">{esc(text)}</p>'


def th(text: Any) -> str:
    """Return a header cell holding `text`."""
    return f"<th>{esc(text)}</th>"


def td(text: Any, css: str = "") -> str:
    """Return a data cell holding `text`, with the CSS classes `css` (e.g. "num" right-aligns it)."""
    return f'<td class="{css}">{esc(text)}</td>' if css else f"<td>{esc(text)}</td>"


def pre_td(text: Any) -> str:
    """Return a data cell holding `text` pre-wrapped and scrollable, for prompts and model output."""
    return f"<td><pre>{esc(text)}</pre></td>"


def tr(cells_html: Iterable[str], css: str = "") -> str:
    """Return a table row of cells made by `th`, `td` or `pre_td`, with the CSS classes `css`."""
    attribute = f' class="{css}"' if css else ""
    return f"<tr{attribute}>{''.join(cells_html)}</tr>"


def table(header: Sequence[Any], rows_html: Iterable[str], *, css: str = "") -> str:
    """Return a table: `header` as its head row (none when empty), then rows made by `tr`."""
    attribute = f' class="{css}"' if css else ""
    head = f"<thead>{tr(th(h) for h in header)}</thead>" if header else ""
    return f"<table{attribute}>{head}<tbody>{''.join(rows_html)}</tbody></table>"


def kv_table(rows: Sequence[tuple[Any, str]]) -> str:
    """Return a two-column table of (label, value cell made by `td`) rows, or a note when there are none."""
    if not rows:
        return muted("Not recorded.")
    return table((), [tr([th(label), cell_html]) for label, cell_html in rows])


def line_chart(lines: Sequence[Line], *, title: str, x_label: str, y_label: str, empty: str) -> str:
    """Return an SVG plotting each non-empty line, with axes, round ticks and a legend (`empty` if none).

    Lines with at most 50 points also get a dot on each point, so one or two points stay visible.
    """
    drawn = [line for line in lines if line.points]
    if not drawn:
        middle = f'x="{_LINE_W / 2}" y="{_LINE_H / 2}" text-anchor="middle" fill="{_MUTED}"'
        return _svg(_LINE_W, _LINE_H, title, [f"<text {middle}>{esc(empty)}</text>"])
    legend, legend_rows = _legend([(ln.label, ln.color) for ln in drawn], _MARGIN_L, _LINE_W, 3)
    x_pixels = (_MARGIN_L, _LINE_W - _MARGIN_R)
    y_pixels = (_LINE_H - _MARGIN_B, legend_rows * _LEGEND_ROW + 10)  # SVG y grows downwards
    points = [p for line in drawn for p in line.points]
    x_range = _nice_range(*_padded_range([x for x, _ in points]))
    y_range = _nice_range(*_padded_range([y for _, y in points]))
    parts = [*legend, *_axes(x_range, y_range, x_pixels, y_pixels, (x_label, y_label))]
    for line in drawn:
        pixels = [(_scale(x, x_range, x_pixels), _scale(y, y_range, y_pixels)) for x, y in line.points]
        parts.append(_polyline(pixels, line.color))
    return _svg(_LINE_W, _LINE_H, title, parts)


def bar_chart(
    series: Sequence[tuple[str, str]],
    groups: Sequence[BarGroup],
    *,
    title: str,
    empty: str = "none",
    xmlns: bool = True,
) -> str:
    """Return an SVG with one row of horizontal bars per group, one bar per (label, colour) series.

    Each bar is labelled with its value to 3 decimals, and its interval when it has one. The axis starts
    at 0 (negative values draw no bar) and spans at least [0, 1], where most metrics live. `xmlns=False`
    leaves out the namespace URL, which HTML does not need for inline SVG.
    """
    legend, legend_rows = _legend(series, _BAR_LABEL_W, _BAR_LABEL_W + _BAR_W, 10)
    bars = [bar for group in groups for bar in group.bars if bar is not None]
    top = max([1.0, *(bar.value for bar in bars), *(bar.high for bar in bars if bar.high is not None)])
    width = _BAR_LABEL_W + _BAR_W + 8 + _CHAR_W * max((len(_bar_text(bar)) for bar in bars), default=1)
    y0, group_h = legend_rows * _LEGEND_ROW + 6, len(series) * _BAR_H + _BAR_GAP
    height = y0 + max(len(groups), 1) * group_h
    parts = legend
    for index, group in enumerate(groups):
        parts += _bar_group(group, [color for _, color in series], y0 + index * group_h, top)
    if not groups:
        parts.append(
            f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" fill="{_MUTED}">{esc(empty)}</text>'
        )
    return _svg(round(width), height, title, parts, xmlns=xmlns)


def _svg(width: float, height: float, title: str, parts: list[str], *, xmlns: bool = True) -> str:
    """Return an `<svg>` element of the given pixel size wrapping `parts`, labelled `title` for readers."""
    namespace = ' xmlns="http://www.w3.org/2000/svg"' if xmlns else ""
    return (
        f'<svg{namespace} width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}" font-size="11">' + "".join(parts) + "</svg>"
    )


def _cut(label: str) -> str:
    """Return `label` cut to _LABEL_CHARS characters, so long names do not run into the bars."""
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def _legend(
    entries: Sequence[tuple[str, str]], left: float, right: float, swatch_h: float
) -> tuple[list[str], int]:
    """Return (SVG elements, line count) of a legend flowing from `left` to `right` along the top.

    Each entry is a colour swatch `swatch_h` pixels high (3: a line, 10: a box) and its label.
    """
    out, x, baseline = [], left, 15
    for label, color in entries:
        text = _cut(label)
        entry_w = 30 + _CHAR_W * len(text)
        if x > left and x + entry_w > right:
            x, baseline = left, baseline + _LEGEND_ROW
        swatch_y = baseline - 4 - swatch_h / 2
        out.append(f'<rect x="{x}" y="{swatch_y}" width="12" height="{swatch_h}" fill="{color}"/>')
        out.append(f'<text x="{x + 16}" y="{baseline}">{esc(text)}</text>')
        x += entry_w
    return out, (baseline - 15) // _LEGEND_ROW + 1 if entries else 0


def _bar_text(bar: Bar) -> str:
    """Return a bar's label: "0.900", or "0.900 [0.767, 0.967]" when it has an interval."""
    if bar.low is None or bar.high is None:
        return f"{bar.value:.3f}"
    return f"{bar.value:.3f} [{bar.low:.3f}, {bar.high:.3f}]"


def _bar_group(group: BarGroup, colors: list[str], y: float, top: float) -> list[str]:
    """Return the label and bars of one group, its first bar starting at pixel row `y`."""
    fill = f' fill="{_MUTED}"' if group.muted else ""
    label = esc(_cut(group.label))
    out = [f'<text x="{_BAR_LABEL_W - 8}" y="{y + _BAR_H + 2}" text-anchor="end"{fill}>{label}</text>']
    for i, (bar, color) in enumerate(zip(group.bars, colors, strict=True)):
        bar_y = y + i * _BAR_H
        if bar is None:
            out.append(f'<text x="{_BAR_LABEL_W + 4}" y="{bar_y + _BAR_H - 2}" fill="{_MUTED}">-</text>')
            continue
        end = _BAR_LABEL_W + max(bar.value, 0.0) / top * _BAR_W
        out.append(
            f'<rect x="{_BAR_LABEL_W}" y="{bar_y + 1}" width="{end - _BAR_LABEL_W:.1f}" '
            f'height="{_BAR_H - 2}" fill="{color}"/>'
        )
        if bar.low is not None and bar.high is not None:
            low, high = (_BAR_LABEL_W + max(v, 0.0) / top * _BAR_W for v in (bar.low, bar.high))
            out += _whisker(low, high, bar_y + _BAR_H / 2)
            end = max(end, high)
        out.append(f'<text x="{end + 4:.1f}" y="{bar_y + _BAR_H - 2}">{esc(_bar_text(bar))}</text>')
    return out


def _whisker(low: float, high: float, y: float) -> list[str]:
    """Return an interval whisker from pixel `low` to `high` at row `y`, with a cap at each end."""
    line = f'<line x1="{low:.1f}" y1="{y}" x2="{high:.1f}" y2="{y}" stroke="{_INK}"/>'
    caps = [
        f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x:.1f}" y2="{y + 4}" stroke="{_INK}"/>' for x in (low, high)
    ]
    return [line, *caps]


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


def _scale(value: float, value_range: tuple[float, float], pixel_range: tuple[float, float]) -> float:
    """Return `value` mapped linearly from `value_range` onto `pixel_range`."""
    (v0, v1), (p0, p1) = value_range, pixel_range
    return p0 + (value - v0) / (v1 - v0) * (p1 - p0)


def _axes(
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_pixels: tuple[float, float],
    y_pixels: tuple[float, float],
    labels: tuple[str, str],
) -> list[str]:
    """Return SVG elements for both axes, their ticks, horizontal grid lines and (x, y) titles."""
    (x0, x1), (y0, y1) = x_pixels, y_pixels
    out = [
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="{_INK}"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="{_INK}"/>',
    ]
    for tick in _nice_ticks(*x_range):
        px = _scale(tick, x_range, x_pixels)
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" stroke="{_INK}"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{tick:g}</text>')
    for tick in _nice_ticks(*y_range):
        py = _scale(tick, y_range, y_pixels)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="{_GRID}"/>')
        out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{tick:.4g}</text>')
    middle_x, middle_y = (x0 + x1) / 2, (y0 + y1) / 2
    out.append(f'<text x="{middle_x}" y="{_LINE_H - 6}" text-anchor="middle">{esc(labels[0])}</text>')
    out.append(
        f'<text x="12" y="{middle_y}" transform="rotate(-90 12 {middle_y})" '
        f'text-anchor="middle">{esc(labels[1])}</text>'
    )
    return out


def _polyline(pixels: list[tuple[float, float]], color: str) -> str:
    """Return an SVG polyline through `pixels`, with a dot on each point when there are few of them."""
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in pixels)
    line = f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
    if len(pixels) > 50:
        return line
    dots = "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>' for px, py in pixels)
    return line + dots
