"""Scoring of GSM8K-style math answers: the final number of a prediction against the reference's.

This module owns answer extraction (the number after the last `####`, else the last number in the text)
and numeric comparison with a small tolerance, so `18`, `18.0` and `$18.00` are the same answer. It knows
nothing about prompts or chain-of-thought formats beyond that convention.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# A number: optional sign and "$", digits with optional thousands separators, optional decimals, and an
# optional "/denominator". The look-behind keeps "10-12" from reading as -12 and "v1.5" from reading 1.5.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>-)?\$?\s?(?P<sign2>-)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?"
)
_REL_TOL = 1e-6
_ABS_TOL = 1e-6


def _value(match: re.Match[str]) -> float | None:
    """Return the value of one `_NUMBER` match, or None when it holds no digits."""
    whole, frac = match.group("int"), match.group("frac")
    if whole is None and frac is None:
        return None
    value = float((whole or "0").replace(",", "") + (frac or ""))
    den = match.group("den")
    if den is not None and float(den) != 0:
        value /= float(den)
    return -value if match.group("sign") or match.group("sign2") else value


def _format(value: float) -> str:
    """Return `value` as a short canonical string: "18" for 18.0, "0.75", "-1234"."""
    if value.is_integer():
        return str(int(value))
    return f"{value:.10g}"


def _numbers(text: str) -> list[float]:
    """Return the values of all numbers in `text`, in order."""
    values = (_value(m) for m in _NUMBER.finditer(text))
    return [v for v in values if v is not None]


def extract_answer(text: str) -> str | None:
    """Return the final numeric answer of `text` in canonical form, or None when there is none.

    The answer is the first number after the last `####` when the text has one (GSM8K's convention),
    otherwise the last number in the text. Thousands separators, `$`, signs, decimals, units and simple
    fractions are understood: "#### 1,234" gives "1234", "costs $18.00." gives "18", "3/4 cup" gives "0.75".
    """
    if "####" in text:
        numbers = _numbers(text.rsplit("####", 1)[1])
        return _format(numbers[0]) if numbers else None
    numbers = _numbers(text)
    return _format(numbers[-1]) if numbers else None


def answers_match(prediction: str | None, reference: str | None) -> bool:
    """Return True when both answers exist and are numerically equal within a small tolerance."""
    if prediction is None or reference is None:
        return False
    return math.isclose(float(prediction), float(reference), rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


class MathTask:
    """Scores math word problems by the final number: accuracy and the rate of predictions with an answer."""

    name = "math"
    primary_metric = "accuracy"

    def score(
        self, prediction: str, reference: str, fields: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Return {"accuracy": 1/0, "extracted": 1/0}; the reference may be a full worked solution."""
        predicted = extract_answer(prediction)
        return {
            "accuracy": float(answers_match(predicted, extract_answer(reference))),
            "extracted": float(predicted is not None),
        }

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        """Return accuracy, the share of predictions with an extractable answer, and the row count."""
        n = len(scores)
        if not n:
            return {"accuracy": 0.0, "answer_rate": 0.0, "rows": 0}
        return {
            "accuracy": sum(float(s.get("accuracy", 0.0)) for s in scores) / n,
            "answer_rate": sum(float(s.get("extracted", 0.0)) for s in scores) / n,
            "rows": n,
        }
