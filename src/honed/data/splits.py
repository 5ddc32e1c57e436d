"""Deterministic train/validation/test assignment for `honed data prepare`.

This module owns which split each row lands in, given a stable key per row and optional stratum and group
values. It knows nothing about files, fields or hashing row content: the caller builds a `SplitItem` per
row. Rows sharing a group (or, without a group, a content key) form one unit, and units are what get
assigned: each stratum's units are ordered by a seeded hash and cut at exact counts, so the same rows and
seed always give the same split, in any row order, and adding a row moves at most a few others.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitItem:
    """One row as the splitter sees it: a stable key, and its stratum and group values if any."""

    content_key: str  # a stable string for the row (e.g. a hash of its content); used when no group
    stratum: str | None = None  # value of split.stratify_by for this row
    group: str | None = None  # value of split.group_by for this row


def assign_splits(
    items: Sequence[SplitItem], validation_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Return 'train', 'validation' or 'test' for each item, in order."""
    _check_fractions(validation_fraction, test_fraction)
    unit_of = [_unit_key(item) for item in items]
    strata = _unit_strata(zip(unit_of, (item.stratum for item in items), strict=True))
    members: dict[str | None, list[str]] = defaultdict(list)
    for unit, stratum in strata.items():
        members[stratum].append(unit)
    sizes = {stratum: len(units) for stratum, units in members.items()}
    # A stratum always keeps one unit for training, so a stratum of one unit is never held out.
    test_counts = _quotas(sizes, {s: n - 1 for s, n in sizes.items()}, test_fraction)
    room = {s: n - 1 - test_counts[s] for s, n in sizes.items()}
    validation_counts = _quotas(sizes, room, validation_fraction)
    split_of: dict[str, str] = {}
    for stratum, units in members.items():
        split_of.update(_cut(units, test_counts[stratum], validation_counts[stratum], seed))
    return [split_of[unit] for unit in unit_of]


def split_counts(assignments: Iterable[str]) -> dict[str, int]:
    """Rows per split, with every split present (zero when empty)."""
    counts = Counter(assignments)
    return {split: counts.get(split, 0) for split in SPLITS}


def _cut(units: list[str], n_test: int, n_validation: int, seed: int) -> dict[str, str]:
    """Order one stratum's units by seeded hash: the first n_test go to test, the next to validation."""
    ordered = sorted(units, key=lambda unit: (_rank(seed, unit), unit))
    labels = ["test"] * n_test + ["validation"] * n_validation
    labels += ["train"] * (len(units) - len(labels))
    return dict(zip(ordered, labels, strict=True))


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    """Raise ValueError unless both fractions are in [0, 1) and leave some rows for training."""
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"validation_fraction + test_fraction must be below 1, got {validation_fraction + test_fraction}"
        )


def _unit_key(item: SplitItem) -> str:
    """The key of the unit an item is assigned with: its group, or its own content key when it has none."""
    # Prefixes keep a group value from colliding with some row's content key.
    return f"group:{item.group}" if item.group is not None else f"row:{item.content_key}"


def _unit_strata(pairs: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    """Each unit's stratum: the most common among its rows, ties going to the first in `_stratum_order`."""
    seen: dict[str, Counter[str | None]] = defaultdict(Counter)
    for unit, stratum in pairs:
        seen[unit][stratum] += 1
    return {
        unit: min(counts, key=lambda stratum: (-counts[stratum], _stratum_order(stratum)))
        for unit, counts in seen.items()
    }


def _stratum_order(stratum: str | None) -> tuple[bool, str]:
    """A sort key for strata that puts a missing stratum (None) last."""
    return (stratum is None, stratum or "")


def _rank(seed: int, key: str) -> bytes:
    """A seeded pseudo-random position for a key, the same in every process (unlike the salted `hash`)."""
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()


def _quotas(
    sizes: dict[str | None, int], room: dict[str | None, int], fraction: float
) -> dict[str | None, int]:
    """Units per stratum in one split: round(total * fraction) shared by largest remainder, capped by room."""
    exact = {stratum: size * fraction for stratum, size in sizes.items()}
    counts = {stratum: min(math.floor(share), room[stratum]) for stratum, share in exact.items()}
    leftover = round(sum(sizes.values()) * fraction) - sum(counts.values())
    by_remainder = sorted(exact, key=lambda s: (-(exact[s] - math.floor(exact[s])), _stratum_order(s)))
    for stratum in by_remainder:
        if leftover <= 0:
            break
        if counts[stratum] < room[stratum]:
            counts[stratum] += 1
            leftover -= 1
    return counts
