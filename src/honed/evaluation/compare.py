"""Compare evaluated systems on the same rows: corpus metrics, paired bootstrap tests, slices, regressions.

This module owns the statistics of a comparison (`compare_render` draws it). It reads the per-row score
dicts that `evaluate.py` writes to predictions.jsonl and knows nothing about models or generation; it
imports no torch.

Statistics. Each bootstrap resample draws n row indices with replacement from a numpy Generator seeded
with `seed`; every system is resampled with the same indices (a paired bootstrap), and the corpus metrics
are recomputed on each resample with the task's own aggregate, so non-linear metrics such as micro-averaged
slot F1 (summed tp/fp/fn) are resampled correctly rather than averaged per row.

- `ci_low`, `ci_high`: the percentile interval of the resampled deltas (b - a) at `confidence`.
- `p_value`: the two-sided percentile-bootstrap p-value, 2 * (fraction of resampled deltas on the other
  side of 0 from the observed delta, 0 included), capped at 1; it is 1 when the observed delta is 0, and 0
  when no resample reaches 0, which means p < 2 / resamples (the renderings say so).
- `significant`: the interval excludes 0 (equivalently, up to resampling granularity, p < 1 - confidence).

Fast path. Recomputing aggregate in Python for 1000 resamples x 1000 rows takes seconds, so a task whose
corpus metrics are functions of per-key column sums and the row count gets them for all resamples at once
with numpy (a resample's sums are its bootstrap count vector times the row x key score matrix). Such a
task either defines `aggregate_sums(sums: Mapping[str, ndarray], rows: int) -> dict[str, ndarray]`, or is
listed in `_SUM_AGGREGATES` below. The fast result on the full sample is checked against
`task.aggregate`; on a mismatch honed logs a warning and uses the generic loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from honed.errors import ConfigError, DataError
from honed.evaluation.likelihood import ModelTask
from honed.evaluation.tasks import ExactMatchTask, StructuredTask, Task

log = logging.getLogger(__name__)

MAX_REGRESSIONS = 20
_CHUNK_ELEMENTS = 2_000_000  # resampled indices held at once (16 MB of int64)
_ZERO = 1e-12  # deltas closer to 0 than this are float noise and count as 0

SumAggregate = Callable[[Mapping[str, np.ndarray], int], Mapping[str, Any]]


@dataclass
class System:
    """One evaluated system: a display label and its predictions.jsonl rows (with "index" and "score")."""

    label: str
    predictions: list[dict]


# ---- corpus metrics from column sums (the fast path) ----


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Return numerator / denominator elementwise, 0.0 where the denominator is 0."""
    out = np.zeros(np.shape(numerator))
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _exact_match_sums(sums: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """ExactMatchTask.aggregate over resamples: the mean of per-row exact_match."""
    return {"exact_match": sums["exact_match"] / rows}


def _structured_sums(sums: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """StructuredTask.aggregate over resamples: means, and slot P/R/F1 micro-averaged from summed counts."""
    tp, fp, fn = sums["slot_tp"], sums["slot_fp"], sums["slot_fn"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    no_pairs = tp + fp + fn == 0  # _prf: all three are 1.0 when neither side has slots
    return {
        "act_accuracy": sums["act_correct"] / rows,
        "slot_precision": np.where(no_pairs, 1.0, precision),
        "slot_recall": np.where(no_pairs, 1.0, recall),
        "slot_f1": np.where(no_pairs, 1.0, f1),
        "exact_match": sums["exact_match"] / rows,
        "parse_rate": sums["parsed"] / rows,
    }


_SUM_AGGREGATES: dict[type, SumAggregate] = {
    ExactMatchTask: _exact_match_sums,
    StructuredTask: _structured_sums,
}


# ---- resampling ----


def _index_chunks(rows: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield the bootstrap row indices as (chunk, rows) int arrays; a seed always gives the same indices."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_ELEMENTS // rows)
    for start in range(0, resamples, step):
        yield rng.integers(0, rows, size=(min(step, resamples - start), rows))


def _resample_generic(
    task: Task | ModelTask, scores: list[dict], names: list[str], resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Return {metric: (resamples,) array} by calling task.aggregate on every resample."""
    out = {name: np.empty(resamples) for name in names}
    done = 0
    for chunk in _index_chunks(len(scores), resamples, seed):
        for indices in chunk:
            metrics = task.aggregate([scores[i] for i in indices])
            for name in names:
                out[name][done] = metrics[name]
            done += 1
    return out


def _resample_sums(
    task: Task | ModelTask,
    aggregate_sums: SumAggregate,
    scores: list[dict],
    names: list[str],
    resamples: int,
    seed: int,
) -> dict[str, np.ndarray] | None:
    """Return {metric: (resamples,) array} from per-resample column sums; None if the hook disagrees.

    A resample's column sums are its bootstrap count vector (how often each row was drawn) times the
    (rows, keys) score matrix, so one matrix product per chunk replaces a Python loop per resample.
    """
    keys = sorted({key for row in scores for key in row})
    values = np.array([[float(row.get(key, 0.0)) for key in keys] for row in scores])  # (rows, keys)
    n = len(scores)
    full = aggregate_sums(dict(zip(keys, values.sum(axis=0)[:, None], strict=True)), n)
    expected = task.aggregate(scores)
    if not np.allclose([np.asarray(full[k])[0] for k in names], [expected[k] for k in names], atol=1e-9):
        return None
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for chunk in _index_chunks(n, resamples, seed):
        m = chunk.shape[0]
        flat = (chunk + n * np.arange(m)[:, None]).ravel()
        counts = np.bincount(flat, minlength=m * n).reshape(m, n).astype(float)
        metrics = aggregate_sums(dict(zip(keys, (counts @ values).T, strict=True)), n)
        for name in names:
            parts[name].append(np.asarray(metrics[name], dtype=float))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _bootstrap(
    task: Task | ModelTask, scores: list[dict], names: list[str], resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Return {metric: (resamples,) array} of the corpus metrics recomputed on bootstrap resamples."""
    hook = getattr(task, "aggregate_sums", None)
    aggregate_sums = hook if callable(hook) else _SUM_AGGREGATES.get(type(task))
    if aggregate_sums is not None:
        try:
            draws = _resample_sums(task, aggregate_sums, scores, names, resamples, seed)
        except (KeyError, TypeError, ValueError) as error:
            draws, reason = None, f"failed ({error!r})"
        else:
            reason = "disagrees with aggregate on the full sample"
        if draws is not None:
            return draws
        log.warning("task %s: fast bootstrap %s; using the generic loop", task.name, reason)
    return _resample_generic(task, scores, names, resamples, seed)


def _metric_names(metrics: Mapping[str, Any]) -> list[str]:
    """Return the numeric corpus metric names of an aggregate, without "rows"."""
    numeric = (int, float, np.integer, np.floating)
    return [
        k for k, v in metrics.items() if k != "rows" and isinstance(v, numeric) and not isinstance(v, bool)
    ]


# ---- paired differences ----


def _check_settings(rows: int, resamples: int, confidence: float) -> None:
    """Raise ConfigError for an empty sample, a non-positive resample count or a confidence outside (0, 1)."""
    problems = []
    if rows < 1:
        problems.append("there are no rows to resample; evaluate at least one row")
    if resamples < 1:
        problems.append(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        problems.append(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}")
    if problems:
        raise ConfigError("bootstrap: " + "; ".join(problems) + ".")


def _p_value(delta: float, deltas: np.ndarray) -> float:
    """Return 2 x the fraction of resampled deltas on the other side of 0 from `delta` (0 included), <= 1."""
    if delta > 0:
        other = np.mean(deltas <= 0)
    elif delta < 0:
        other = np.mean(deltas >= 0)
    else:
        return 1.0
    return float(min(1.0, 2 * other))


def _difference(a: float, b: float, a_draws: np.ndarray, b_draws: np.ndarray, confidence: float) -> dict:
    """Return the observed delta b - a with its percentile CI, p-value and significance."""
    deltas = b_draws - a_draws
    deltas[np.abs(deltas) < _ZERO] = 0.0
    delta = b - a if abs(b - a) >= _ZERO else 0.0
    tail = (1 - confidence) / 2 * 100
    low, high = (float(v) for v in np.percentile(deltas, [tail, 100 - tail]))
    return {
        "a": a,
        "b": b,
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "p_value": _p_value(delta, deltas),
        "significant": bool(low > 0 or high < 0),
    }


def paired_bootstrap(
    task: Task | ModelTask,
    a: list[dict],
    b: list[dict],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict]:
    """Return {metric: {a, b, delta, ci_low, ci_high, p_value, significant}} for each corpus metric.

    `a` and `b` are per-example score dicts of the same rows in the same order; both are resampled with
    the same row indices and `task.aggregate` is recomputed on each resample (see the module docstring).
    """
    if len(a) != len(b):
        raise ConfigError(
            f"paired_bootstrap: a has {len(a)} rows and b has {len(b)}; pass scores of the same rows "
            "in the same order (compare_systems aligns systems by index)."
        )
    _check_settings(len(a), resamples, confidence)
    point_a, point_b = task.aggregate(a), task.aggregate(b)
    names = _metric_names(point_a)
    draws_a = _bootstrap(task, a, names, resamples, seed)
    draws_b = _bootstrap(task, b, names, resamples, seed)
    return {
        name: _difference(
            float(point_a[name]), float(point_b[name]), draws_a[name], draws_b[name], confidence
        )
        for name in names
    }


# ---- comparing systems ----


def _index_rows(system: System) -> dict[Any, dict]:
    """Return the system's rows by their "index", raising DataError for a row without one or a repeat."""
    rows: dict[Any, dict] = {}
    for position, row in enumerate(system.predictions):
        if "index" not in row or not isinstance(row.get("score"), Mapping):
            raise DataError(
                f"system {system.label!r}: prediction row {position} has no 'index' or no 'score' dict; "
                "pass the rows of an eval predictions.jsonl."
            )
        if row["index"] in rows:
            raise DataError(
                f"system {system.label!r}: index {row['index']!r} appears twice; drop the repeat."
            )
        rows[row["index"]] = row
    return rows


def _align(systems: Sequence[System]) -> list[list[dict]]:
    """Return each system's rows restricted to the indices all systems share, in ascending index order."""
    by_index = [_index_rows(system) for system in systems]
    shared = sorted(set.intersection(*(set(rows) for rows in by_index)))
    if not shared:
        raise DataError(
            "compare: the systems share no row index ("
            + ", ".join(f"{s.label!r}: {len(s.predictions)} rows" for s in systems)
            + "); compare systems evaluated on the same eval rows."
        )
    for system, rows in zip(systems, by_index, strict=True):
        if len(rows) > len(shared):
            log.warning(
                "compare: %d rows of %r are not in every system; left out",
                len(rows) - len(shared),
                system.label,
            )
    aligned_rows = [[rows[i] for i in shared] for rows in by_index]
    for system, aligned in zip(systems[1:], aligned_rows[1:], strict=True):
        for a_row, b_row in zip(aligned_rows[0], aligned, strict=True):
            if a_row.get("reference") != b_row.get("reference"):
                raise DataError(
                    f"compare: row index {a_row['index']!r} has reference {a_row.get('reference')!r} in "
                    f"{systems[0].label!r} but {b_row.get('reference')!r} in {system.label!r}; compare "
                    "systems evaluated on the same eval rows."
                )
    return aligned_rows


def _row_key(task: Task | ModelTask, scores: list[dict]) -> str:
    """Return the per-row score key that stands for the primary metric: its own name, the task's
    `row_metric` (perplexity is a corpus number; per row it is nll_per_token), else the first key."""
    first = scores[0]
    if task.primary_metric in first or not first:
        return task.primary_metric
    row_metric = getattr(task, "row_metric", None)
    return row_metric if isinstance(row_metric, str) and row_metric in first else next(iter(first))


def _changes(
    key: str, a_rows: list[dict], b_rows: list[dict], lower_is_better: bool = False
) -> tuple[list[dict], int, int]:
    """Return (up to MAX_REGRESSIONS worst regressions, improvements count, regressions count)."""
    sign = -1.0 if lower_is_better else 1.0
    worse, improved = [], 0
    for a_row, b_row in zip(a_rows, b_rows, strict=True):
        a_score, b_score = float(a_row["score"].get(key, 0.0)), float(b_row["score"].get(key, 0.0))
        if sign * b_score > sign * a_score:
            improved += 1
        elif sign * b_score < sign * a_score:
            worse.append((sign * (a_score - b_score), a_row, b_row, a_score, b_score))
    worse.sort(key=lambda item: -item[0])  # stable: ties keep index order
    listed = [
        {
            "index": a_row["index"],
            "prompt": a_row.get("prompt"),
            "reference": a_row.get("reference"),
            "a_prediction": a_row.get("prediction"),
            "b_prediction": b_row.get("prediction"),
            "a_score": a_score,
            "b_score": b_score,
        }
        for _, a_row, b_row, a_score, b_score in worse[:MAX_REGRESSIONS]
    ]
    return listed, improved, len(worse)


def _by_slice(task: Task | ModelTask, labels: list[str], aligned: list[list[dict]]) -> dict[str, dict]:
    """Return {slice: {label: {primary: value, "rows": n}}} grouped by the reference system's row slices."""
    groups: dict[str, list[int]] = {}
    for position, row in enumerate(aligned[0]):
        if row.get("slice") is not None:
            groups.setdefault(str(row["slice"]), []).append(position)
    primary = task.primary_metric
    return {
        name: {
            label: {
                primary: float(task.aggregate([rows[p]["score"] for p in positions])[primary]),
                "rows": len(positions),
            }
            for label, rows in zip(labels, aligned, strict=True)
        }
        for name, positions in sorted(groups.items())
    }


def _interval(draws: np.ndarray, confidence: float) -> dict[str, float]:
    """Return the percentile interval of one system's resampled metric."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return {"ci_low": float(low), "ci_high": float(high)}


def compare_systems(
    task: Task | ModelTask,
    systems: list[System],
    slice_field: bool = True,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Compare every system with systems[0] on the rows all of them share; return a JSON-ready dict.

    Keys: task, primary_metric, rows, systems (labels), resamples, seed, confidence, metrics
    ({label: {metric: value}}), intervals ({label: CI of the primary metric}), differences
    ({label_b: paired_bootstrap result}), by_slice (only when `slice_field` and rows carry a slice),
    regressions ({label_b: up to 20 rows where b's per-row primary score is below a's, worst first}),
    improvements_count and regressions_count ({label_b: rows}).
    """
    labels = [system.label for system in systems]
    if len(systems) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"compare: need at least two systems with distinct labels, got {labels}.")
    aligned = _align(systems)
    _check_settings(len(aligned[0]), resamples, confidence)
    scores = [[row["score"] for row in rows] for rows in aligned]
    points = [task.aggregate(s) for s in scores]
    names = _metric_names(points[0])
    draws = [_bootstrap(task, s, names, resamples, seed) for s in scores]
    primary, key = task.primary_metric, _row_key(task, scores[0])
    result: dict[str, Any] = {
        "task": task.name,
        "primary_metric": primary,
        "rows": len(aligned[0]),
        "systems": labels,
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
        "metrics": {label: {n: float(p[n]) for n in names} for label, p in zip(labels, points, strict=True)},
        "intervals": {},
        "differences": {},
        "regressions": {},
        "improvements_count": {},
        "regressions_count": {},
    }
    if primary in names:
        result["intervals"] = {
            label: _interval(d[primary], confidence) for label, d in zip(labels, draws, strict=True)
        }
    for k in range(1, len(systems)):
        result["differences"][labels[k]] = {
            n: _difference(float(points[0][n]), float(points[k][n]), draws[0][n], draws[k][n], confidence)
            for n in names
        }
        lower = key in getattr(task, "lower_is_better", ())
        listed, improved, worse = _changes(key, aligned[0], aligned[k], lower)
        result["regressions"][labels[k]] = listed
        result["improvements_count"][labels[k]] = improved
        result["regressions_count"][labels[k]] = worse
    by_slice = _by_slice(task, labels, aligned) if slice_field else {}
    if by_slice:
        result["by_slice"] = by_slice
    return result
