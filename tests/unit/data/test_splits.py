"""Splits are deterministic, exact in size, stratified and grouped as asked, and stable as rows are added."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from honed.data.splits import SplitItem, assign_splits, split_counts


def rows(n: int, prefix: str = "row") -> list[SplitItem]:
    return [SplitItem(content_key=f"{prefix}-{i}") for i in range(n)]


def by_key(items: list[SplitItem], splits: list[str]) -> dict[SplitItem, str]:
    return dict(zip(items, splits, strict=True))


def test_same_input_same_split_and_seed_changes_it():
    items = rows(500)
    first = assign_splits(items, 0.1, 0.1, seed=0)
    assert assign_splits(items, 0.1, 0.1, seed=0) == first
    assert assign_splits(items, 0.1, 0.1, seed=1) != first


def test_counts_are_exact():
    assert split_counts(assign_splits(rows(1000), 0.1, 0.1, seed=3)) == {
        "train": 800,
        "validation": 100,
        "test": 100,
    }
    counts = split_counts(assign_splits(rows(1001), 0.15, 0.05, seed=3))
    assert counts == {"train": 801, "validation": 150, "test": 50}


def test_zero_fractions_give_empty_splits():
    assert split_counts(assign_splits(rows(300), 0.0, 0.0, seed=0)) == {
        "train": 300,
        "validation": 0,
        "test": 0,
    }
    assert split_counts(assign_splits(rows(300), 0.2, 0.0, seed=0))["test"] == 0
    assert split_counts(assign_splits(rows(300), 0.0, 0.2, seed=0))["validation"] == 0


def test_row_order_does_not_matter():
    items = [SplitItem(f"k{i}", stratum=f"s{i % 3}", group=f"g{i % 40}") for i in range(400)]
    expected = by_key(items, assign_splits(items, 0.1, 0.2, seed=5))
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    assert by_key(shuffled, assign_splits(shuffled, 0.1, 0.2, seed=5)) == expected


def test_each_stratum_keeps_its_proportion():
    items = [
        SplitItem(f"{name}-{i}", stratum=name)
        for name, n in (("a", 500), ("b", 300), ("c", 200))
        for i in range(n)
    ]
    per_stratum: dict[str, list[str]] = defaultdict(list)
    for item, split in zip(items, assign_splits(items, 0.1, 0.1, seed=0), strict=True):
        per_stratum[item.stratum].append(split)
    for name, n in (("a", 500), ("b", 300), ("c", 200)):
        assert split_counts(per_stratum[name]) == {
            "train": n * 8 // 10,
            "validation": n // 10,
            "test": n // 10,
        }


def test_largest_remainder_keeps_totals_right_across_small_strata():
    # 7 strata of 15: 1.5 units each per split, so rounding each stratum alone would give 14 or 7, not 10-11.
    items = [SplitItem(f"{s}-{i}", stratum=str(s)) for s in range(7) for i in range(15)]
    splits = assign_splits(items, 0.1, 0.1, seed=0)
    assert split_counts(splits) == {"train": 85, "validation": 10, "test": 10}
    per_stratum: dict[str, list[str]] = defaultdict(list)
    for item, split in zip(items, splits, strict=True):
        per_stratum[item.stratum].append(split)
    for splits_of_stratum in per_stratum.values():
        counts = split_counts(splits_of_stratum)
        assert counts["validation"] in (1, 2) and counts["test"] in (1, 2)


def test_a_stratum_of_one_unit_goes_to_train():
    items = rows(100) + [SplitItem("lonely", stratum="rare")]
    items = [SplitItem(i.content_key, stratum=i.stratum or "common") for i in items]
    assert assign_splits(items, 0.4, 0.4, seed=0)[-1] == "train"
    assert assign_splits([SplitItem("only")], 0.5, 0.4, seed=0) == ["train"]


def test_every_stratum_keeps_a_training_unit():
    items = [SplitItem(f"{s}-{i}", stratum=str(s)) for s in range(20) for i in range(2)]
    splits = assign_splits(items, 0.45, 0.45, seed=0)
    for s in range(20):
        assert "train" in splits[2 * s : 2 * s + 2]


def grouped_items(seed: int, n_groups: int = 200) -> list[SplitItem]:
    rng = random.Random(seed)
    items = []
    for g in range(n_groups):
        items += [SplitItem(f"g{g}-r{r}", group=f"g{g}") for r in range(rng.randint(1, 12))]
    return items


def splits_per_group(items: list[SplitItem], splits: list[str]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for item, split in zip(items, splits, strict=True):
        seen[item.group].add(split)
    return seen


def test_no_group_straddles_splits():
    items = grouped_items(seed=1)
    per_group = splits_per_group(items, assign_splits(items, 0.1, 0.1, seed=0))
    assert all(len(splits) == 1 for splits in per_group.values())
    group_counts = split_counts(next(iter(s)) for s in per_group.values())
    assert group_counts == {"train": 160, "validation": 20, "test": 20}


def test_rows_with_the_same_content_key_stay_together():
    items = rows(200) + rows(200)
    splits = assign_splits(items, 0.2, 0.2, seed=0)
    assert splits[:200] == splits[200:]


def test_stratified_and_grouped_together():
    rng = random.Random(2)
    items = []
    for g in range(300):
        home = ("a", "b", "c")[g % 3]
        for r in range(rng.randint(1, 6)):
            # Mostly the group's home stratum, sometimes another, so a group's stratum is a majority vote.
            stratum = home if r % 4 != 3 else "c"
            items.append(SplitItem(f"g{g}-r{r}", stratum=stratum, group=f"g{g}"))
    splits = assign_splits(items, 0.1, 0.2, seed=0)
    per_group = splits_per_group(items, splits)
    assert all(len(s) == 1 for s in per_group.values())
    per_stratum: dict[str, list[str]] = defaultdict(list)
    for g in range(300):
        per_stratum[("a", "b", "c")[g % 3]].append(next(iter(per_group[f"g{g}"])))
    for group_splits in per_stratum.values():
        assert split_counts(group_splits) == {"train": 70, "validation": 10, "test": 20}


def test_tied_group_stratum_is_chosen_the_same_in_any_order():
    items = [
        SplitItem("x", stratum="b", group="g"),
        SplitItem("y", stratum="a", group="g"),
        SplitItem("z", "a"),
    ]
    for order in (items, items[::-1]):
        splits = by_key(order, assign_splits(order, 0.5, 0.0, seed=0))
        # The tie goes to "a", making it a stratum of two units, one held out; had it gone to "b", both
        # strata would hold one unit and nothing could leave training.
        assert sorted(splits.values()) in (
            ["train", "validation", "validation"],
            ["train", "train", "validation"],
        )
        assert splits[items[0]] == splits[items[1]]


@pytest.mark.parametrize("stratified", [False, True])
def test_adding_a_row_keeps_almost_every_other_row_in_place(stratified):
    def item(i: int) -> SplitItem:
        return SplitItem(f"row-{i}", stratum=f"s{i % 3}" if stratified else None)

    before = [item(i) for i in range(1000)]
    after = [*before, item(1000)]
    old = assign_splits(before, 0.1, 0.1, seed=0)
    new = assign_splits(after, 0.1, 0.1, seed=0)[:1000]
    moved = sum(a != b for a, b in zip(old, new, strict=True))
    # Inserting one unit shifts each cut of its stratum by at most one place, and rounding may move one more.
    assert moved <= 4


def test_fractions_that_leave_no_training_rows_are_rejected():
    with pytest.raises(ValueError, match="below 1"):
        assign_splits(rows(10), 0.5, 0.5, seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        assign_splits(rows(10), 0.1, -0.1, seed=0)


def test_split_counts_lists_every_split():
    assert split_counts([]) == {"train": 0, "validation": 0, "test": 0}
    assert split_counts(["test", "train", "test"]) == {"train": 1, "validation": 0, "test": 2}
