"""Scoring of generated answers against references, one Task per answer format.

This module owns text normalization and the per-example scores and corpus metrics of the string tasks;
`registry` picks a task by name. It knows nothing about models, generation or reports, and imports no
torch: a Task sees only strings (and the data row, for tasks such as sql that need it).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

_ACT_START = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\(")


def normalize_text(text: str) -> str:
    """Return `text` in NFKC form, lowercased, with whitespace collapsed and one trailing period removed.

    Leading and trailing whitespace is stripped and every run of whitespace (including newlines and
    Unicode spaces) becomes one ASCII space, so "  Hello,\\n  World. " becomes "hello, world".
    """
    text = " ".join(unicodedata.normalize("NFKC", text).split()).lower()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text


@runtime_checkable
class Task(Protocol):
    """Scores one prediction against its reference and aggregates per-example scores into corpus metrics."""

    name: str
    primary_metric: str

    def score(
        self, prediction: str, reference: str, fields: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Return the per-example numbers for one prediction; `fields` is the data row (e.g. a schema)."""
        ...

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        """Return corpus metrics in [0, 1] computed from per-example scores, plus "rows": their count."""
        ...


def _mean(scores: list[dict[str, float]], key: str) -> float:
    """Return the mean of `key` over `scores`, 0.0 for an empty list."""
    if not scores:
        return 0.0
    return sum(float(s.get(key, 0.0)) for s in scores) / len(scores)


class ExactMatchTask:
    """A prediction is right when it equals the reference after normalisation.

    Options (`eval.task_options`): `lowercase` (default true), `strip_punctuation` (default false: remove
    every Unicode punctuation character), `collapse_whitespace` (default true) and `strip_trailing_period`
    (default true). NFKC Unicode normalisation always applies.
    """

    name = "exact_match"
    primary_metric = "exact_match"

    def __init__(
        self,
        lowercase: bool = True,
        strip_punctuation: bool = False,
        collapse_whitespace: bool = True,
        strip_trailing_period: bool = True,
    ) -> None:
        self.lowercase, self.strip_punctuation = lowercase, strip_punctuation
        self.collapse_whitespace, self.strip_trailing_period = collapse_whitespace, strip_trailing_period

    def normalize(self, text: str) -> str:
        """`text` under this task's normalisation options."""
        text = unicodedata.normalize("NFKC", text)
        if self.strip_punctuation:
            text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
        text = " ".join(text.split()) if self.collapse_whitespace else text.strip()
        text = text.lower() if self.lowercase else text
        if self.strip_trailing_period and text.endswith("."):
            text = text[:-1].rstrip()
        return text

    def score(
        self, prediction: str, reference: str, fields: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Return {"exact_match": 1.0} when the normalized texts are equal, else 0.0."""
        return {"exact_match": float(self.normalize(prediction) == self.normalize(reference))}

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        """Return the fraction of exact matches and the row count."""
        return {"exact_match": _mean(scores, "exact_match"), "rows": len(scores)}


def _read_bracket_value(text: str, start: int) -> tuple[str | None, int]:
    """Return the value inside the brackets opened just before `start` and the index after its `]`.

    Nested brackets are kept in the value; an unclosed value returns (None, len(text)).
    """
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return text[start:i], i + 1
    return None, len(text)


def _parse_slots(text: str, start: int) -> dict[str, str]:
    """Return the `slot[value]` pairs from `start` up to the closing parenthesis (or the end of text).

    Parsing goes by brackets, so values may hold commas, colons and parentheses; bare slots without
    brackets (e.g. `has_multiplayer`) and a truncated last value are ignored.
    """
    slots: dict[str, str] = {}
    token: list[str] = []
    i = start
    while i < len(text):
        char = text[i]
        if char == "[":
            value, i = _read_bracket_value(text, i + 1)
            name = "".join(token).strip().lower()
            if value is not None and name:
                slots[name] = normalize_text(value)
            token = []
            continue
        if char == ")":
            break
        if char == ",":
            token = []
        else:
            token.append(char)
        i += 1
    return slots


def parse_functional(text: str) -> tuple[str | None, dict[str, str]]:
    """Return the dialogue act and its slot->value map from a ViGGO-style functional representation.

    `inform(name[Dirt: Showdown], genres[driving/racing, sport])` gives
    ("inform", {"name": "dirt: showdown", "genres": "driving/racing, sport"}). Text before the first
    `word(` is skipped; text with no `word(` gives (None, {}).
    """
    match = _ACT_START.search(text)
    if match is None:
        return None, {}
    return match.group(1).lower(), _parse_slots(text, match.end())


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Return precision, recall and F1 with 0/0 = 0, except all three are 1.0 when there are no pairs."""
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class StructuredTask:
    """Scores ViGGO-style functional representations by act accuracy and slot precision/recall/F1."""

    name = "structured"
    primary_metric = "slot_f1"

    def score(
        self, prediction: str, reference: str, fields: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Return act correctness, slot pair counts, slot P/R/F1, exact match and parse success (1/0)."""
        pred_act, pred_slots = parse_functional(prediction)
        gold_act, gold_slots = parse_functional(reference)
        pred_pairs, gold_pairs = set(pred_slots.items()), set(gold_slots.items())
        tp = len(pred_pairs & gold_pairs)
        fp = len(pred_pairs - gold_pairs)
        fn = len(gold_pairs - pred_pairs)
        precision, recall, f1 = _prf(tp, fp, fn)
        act_correct = pred_act is not None and pred_act == gold_act
        return {
            "act_correct": float(act_correct),
            "slot_tp": float(tp),
            "slot_fp": float(fp),
            "slot_fn": float(fn),
            "slot_precision": precision,
            "slot_recall": recall,
            "slot_f1": f1,
            "exact_match": float(act_correct and pred_pairs == gold_pairs),
            "parsed": float(pred_act is not None),
        }

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        """Return act accuracy, micro-averaged slot P/R/F1, exact match and parse rate; all 0.0 when empty."""
        if not scores:
            keys = ("act_accuracy", "slot_precision", "slot_recall", "slot_f1", "exact_match", "parse_rate")
            return {**dict.fromkeys(keys, 0.0), "rows": 0}
        totals = {k: sum(float(s.get(k, 0.0)) for s in scores) for k in ("slot_tp", "slot_fp", "slot_fn")}
        precision, recall, f1 = _prf(totals["slot_tp"], totals["slot_fp"], totals["slot_fn"])
        return {
            "act_accuracy": _mean(scores, "act_correct"),
            "slot_precision": precision,
            "slot_recall": recall,
            "slot_f1": f1,
            "exact_match": _mean(scores, "exact_match"),
            "parse_rate": _mean(scores, "parsed"),
            "rows": len(scores),
        }
