"""Rank base-model candidates for `honed select` under the user's constraints and recommend one.

This module owns the pure decision: which score counts for a candidate, which constraints exclude it
(training memory, latency, commercial license), the ranking order and the plain-English reasons. It
measures nothing (selection/run.py does) and renders nothing (selection/render.py does); candidates
arrive as plain dicts and leave as new dicts, so the result can be written to JSON as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from honed.errors import ConfigError

GIB = 1024**3
TIE_TOLERANCE = 0.005  # scores closer than this are a tie on a sample of a few dozen rows
STAGES = ("zero_shot", "few_shot", "trial")
_MAX_BEATEN_NAMED = 3


@dataclass(frozen=True)
class Constraints:
    """Limits a candidate must meet to be recommended; None means no limit."""

    max_memory_gb: float | None = None
    """Largest predicted peak training memory allowed, in GiB (1024**3 bytes)."""
    max_latency_s: float | None = None
    """Largest mean seconds per generated answer allowed, measured on this machine."""
    commercial: bool = False
    """True: the license must allow commercial use; an unknown license fails."""

    def __post_init__(self) -> None:
        """Reject limits that are not positive numbers, naming the field and the value seen."""
        for key in ("max_memory_gb", "max_latency_s"):
            value = getattr(self, key)
            if value is not None and not (_number(value) is not None and value > 0):
                raise ConfigError(f"{key} must be a positive number, got {value!r}; omit it for no limit")


def stage_scores(candidate: dict) -> dict[str, float | None]:
    """Return the primary metric after each stage ("zero_shot", "few_shot", "trial"), None where not run."""
    primary = candidate.get("primary_metric")
    scores: dict[str, float | None] = {}
    for stage in STAGES:
        metrics = candidate.get(stage)
        scores[stage] = _number(metrics.get(primary)) if isinstance(metrics, dict) else None
    return scores


def score(candidate: dict) -> float | None:
    """Return the candidate's quality on the task: the trial metric, else the best of zero- and few-shot."""
    return _score_and_source(candidate)[0]


def rank(candidates: list[dict], constraints: Constraints) -> list[dict]:
    """Return new candidate dicts with rank, eligible, score, score_from and reasons, best first.

    Order: eligible evaluated candidates by score (ties within 0.005 go to lower latency, then lower
    training memory), then eligible candidates that were not evaluated, then excluded ones by score.
    """
    rows = [_annotate(dict(c), constraints) for c in candidates]
    scored = [r for r in rows if r["eligible"] and r["score"] is not None]
    unscored = [r for r in rows if r["eligible"] and r["score"] is None]
    excluded = [r for r in rows if not r["eligible"]]
    excluded.sort(key=lambda r: -r["score"] if r["score"] is not None else math.inf)
    ordered = _order_with_ties(scored) + unscored + excluded
    _add_score_reasons(ordered[: len(scored)])
    for position, row in enumerate(ordered, start=1):
        row["rank"] = position
    return ordered


def recommend(ranked: list[dict], constraints: Constraints) -> dict:
    """Return {"name", "why"}: the top eligible evaluated candidate and why, or None and why not."""
    best = next((r for r in ranked if r.get("eligible") and r.get("score") is not None), None)
    if best is None:
        return {"name": None, "why": _why_none(ranked, constraints)}
    beaten = [r for r in ranked if r is not best and r.get("eligible") and r.get("score") is not None]
    why = (
        f"{best['name']} has the best {_score_text(best)} of the eligible candidates "
        f"({_beaten_text(beaten)}), {_cost_text(best)}"
    )
    higher = [
        r for r in ranked if not r.get("eligible") and _or_inf(r.get("score"), -math.inf) > best["score"]
    ]
    if higher:
        blockers = ", and ".join(_violations(higher[0], constraints))
        why += f"; {higher[0]['name']} scored higher ({higher[0]['score']:.3f}) but is excluded ({blockers})"
    return {"name": best["name"], "why": why + "."}


def _number(value: Any) -> float | None:
    """Return `value` as a float if it is a finite int or float (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _score_and_source(candidate: dict) -> tuple[float | None, str | None]:
    """Return (score, stage it came from): trial if run, else the better of few-shot and zero-shot."""
    if candidate.get("evaluated") is False:
        return None, None
    scores = stage_scores(candidate)
    if scores["trial"] is not None:
        return scores["trial"], "trial"
    shots = [(value, s) for s in ("zero_shot", "few_shot") if (value := scores[s]) is not None]
    if not shots:
        return None, None
    return max(shots, key=lambda pair: pair[0])  # max keeps the first on a tie: zero-shot, no examples


def _annotate(row: dict, constraints: Constraints) -> dict:
    """Fill in score, score_from, eligible and the constraint reasons of one candidate (mutates `row`)."""
    row["score"], row["score_from"] = _score_and_source(row)
    violations = _violations(row, constraints)
    row["eligible"] = not violations
    row["reasons"] = []
    if row["score"] is None:
        row["reasons"].append(_not_evaluated_text(row))
    elif violations:
        row["reasons"].append(_score_text(row))
    row["reasons"] += violations + _notes(row, constraints)
    return row


def _violations(row: dict, constraints: Constraints) -> list[str]:
    """Return one plain-English reason per constraint the candidate fails; unknown memory/latency pass."""
    out = []
    memory = _number(row.get("train_memory_bytes"))
    if (
        constraints.max_memory_gb is not None
        and memory is not None
        and memory / GIB > constraints.max_memory_gb
    ):
        out.append(f"needs {memory / GIB:.1f} GiB to train; limit {constraints.max_memory_gb:.1f} GiB")
    latency = _number(row.get("latency_s"))
    if constraints.max_latency_s is not None and latency is not None and latency > constraints.max_latency_s:
        limit = _seconds_text(constraints.max_latency_s)
        out.append(f"{_seconds_text(latency)} per answer; limit {limit}")
    if constraints.commercial and row.get("commercial_use") is not True:
        out.append(_license_text(row))
    return out


def _license_text(row: dict) -> str:
    """Return why the candidate's license fails the commercial-use constraint."""
    name = row.get("license")
    if row.get("commercial_use") is False:
        return f"license {name or 'unnamed'} does not allow commercial use"
    declared = f" (declared: {name})" if name else ""
    return f"license unknown: check it yourself{declared}"


def _notes(row: dict, constraints: Constraints) -> list[str]:
    """Return warnings about limits that could not be checked because a number was not measured."""
    out = []
    if constraints.max_memory_gb is not None and _number(row.get("train_memory_bytes")) is None:
        out.append(f"training memory not predicted; check it fits {constraints.max_memory_gb:.1f} GiB")
    if constraints.max_latency_s is not None and _number(row.get("latency_s")) is None:
        out.append(f"latency not measured; check it meets {_seconds_text(constraints.max_latency_s)}")
    return out


def _order_with_ties(rows: list[dict]) -> list[dict]:
    """Return rows by score descending, breaking ties within TIE_TOLERANCE by latency then memory."""
    remaining = sorted(rows, key=lambda r: -r["score"])
    ordered: list[dict] = []
    while remaining:
        top = remaining[0]["score"]
        tied = [r for r in remaining if top - r["score"] <= TIE_TOLERANCE]
        tied.sort(
            key=lambda r: (_or_inf(r.get("latency_s")), _or_inf(r.get("train_memory_bytes")), -r["score"])
        )
        ordered += tied
        remaining = [r for r in remaining if top - r["score"] > TIE_TOLERANCE]
    return ordered


def _or_inf(value: Any, unknown: float = math.inf) -> float:
    """Return `value` as a float, or `unknown` (infinity: unknowns sort last) when not a number."""
    number = _number(value)
    return unknown if number is None else number


def _add_score_reasons(ordered: list[dict]) -> None:
    """Put each eligible evaluated row's score, relative to the best, first in its reasons."""
    if not ordered:
        return
    best = ordered[0]["score"]
    for position, row in enumerate(ordered):
        gap = best - row["score"]
        if position == 0:
            relation = "best of the eligible"
        elif abs(gap) <= TIE_TOLERANCE:
            relation = "tied with the best; ranked by latency, then training memory"
        else:
            relation = f"{gap:.3f} below the best"
        row["reasons"].insert(0, f"{_score_text(row)} ({relation})")


def _score_text(row: dict) -> str:
    """Return e.g. "few-shot slot_f1 0.412" or "trial (20 steps) slot_f1 0.530"."""
    stage = str(row.get("score_from")).replace("_", "-")
    if row.get("score_from") == "trial" and row.get("trial_steps"):
        stage = f"trial ({row['trial_steps']} steps)"
    return f"{stage} {row.get('primary_metric') or 'score'} {row['score']:.3f}"


def _not_evaluated_text(row: dict) -> str:
    """Return why a candidate has no score."""
    if row.get("evaluated") is False:
        return f"not evaluated: {row.get('not_evaluated_reason') or 'no reason recorded'}"
    return "not evaluated: no primary metric was measured"


def _beaten_text(beaten: list[dict]) -> str:
    """Return e.g. "ahead of b at 0.300 and c at 0.250", or that it was the only candidate evaluated."""
    if not beaten:
        return "the only eligible candidate evaluated"
    named = [f"{r['name']} at {r['score']:.3f}" for r in beaten[:_MAX_BEATEN_NAMED]]
    if len(beaten) > _MAX_BEATEN_NAMED:
        named.append(f"{len(beaten) - _MAX_BEATEN_NAMED} more")
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + f" and {named[-1]}"
    return f"ahead of {listed}"


def _cost_text(row: dict) -> str:
    """Return e.g. "needs 2.0 GiB to train and takes 0.35 s per answer"."""
    latency = _number(row.get("latency_s"))
    takes = (
        "its latency was not measured" if latency is None else f"takes {_seconds_text(latency)} per answer"
    )
    return f"needs {_gib_text(row.get('train_memory_bytes'))} to train and {takes}"


def _why_none(ranked: list[dict], constraints: Constraints) -> str:
    """Return one sentence naming what kept each candidate from being recommended."""
    if not ranked:
        return "No candidates were given."
    parts = []
    for row in ranked:
        blockers = _violations(row, constraints)
        if row.get("score") is None:
            blockers.insert(0, _not_evaluated_text(row))
        parts.append(f"{row.get('name')} ({', and '.join(blockers)})")
    return "No candidate qualifies: " + ", ".join(parts) + "."


def _gib_text(memory_bytes: Any) -> str:
    """Return bytes as e.g. "2.1 GiB", or "an unknown amount of memory"."""
    number = _number(memory_bytes)
    return "an unknown amount of memory" if number is None else f"{number / GIB:.1f} GiB"


def _seconds_text(seconds: Any) -> str:
    """Return seconds as e.g. "0.35 s", "1.8 s" or "12 s"; "unknown" when not measured."""
    value = _number(seconds)
    if value is None:
        return "unknown"
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"
