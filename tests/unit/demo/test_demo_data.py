"""The synthetic demo dataset: deterministic, disjoint splits, well-formed representations, a valid recipe."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from honed.config.load import load_recipe
from honed.demo.data import ACTS, DEMO_INSTRUCTION, demo_recipe_dict, write_demo_data
from honed.evaluation.tasks import parse_functional


def _rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_writes_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = write_demo_data(tmp_path / "a", seed=3)
    second = write_demo_data(tmp_path / "b", seed=3)
    other = write_demo_data(tmp_path / "c", seed=4)
    for one, two in zip(first, second, strict=True):
        assert one.read_bytes() == two.read_bytes()
    assert first[0].read_bytes() != other[0].read_bytes()


def test_files_have_the_requested_row_counts_and_fields(tmp_path: Path) -> None:
    train, validation = write_demo_data(tmp_path, n_train=120, n_validation=30)
    assert (train.name, validation.name) == ("train.jsonl", "validation.jsonl")
    assert len(_rows(train)) == 120
    assert len(_rows(validation)) == 30
    assert all(set(row) == {"message", "representation", "act"} for row in _rows(train))


def test_no_message_is_in_both_files_or_twice_in_one(tmp_path: Path) -> None:
    train, validation = write_demo_data(tmp_path)
    train_messages = [row["message"] for row in _rows(train)]
    validation_messages = [row["message"] for row in _rows(validation)]
    assert len(set(train_messages)) == len(train_messages)
    assert len(set(validation_messages)) == len(validation_messages)
    assert not set(train_messages) & set(validation_messages)


def test_every_representation_is_act_with_bracketed_slots_in_canonical_order(tmp_path: Path) -> None:
    train, validation = write_demo_data(tmp_path)
    for row in _rows(train) + _rows(validation):
        text = row["representation"]
        assert re.match(r"^\w+\(.*\)$", text), text
        act, slots = parse_functional(text)
        assert act == row["act"]
        canonical = [name for name in ACTS[act][1] if name in slots]
        assert list(slots) == canonical, text
        assert slots, text


def test_orders_always_carry_a_digit_quantity_and_a_drink(tmp_path: Path) -> None:
    train, _ = write_demo_data(tmp_path)
    orders = [parse_functional(row["representation"])[1] for row in _rows(train) if row["act"] == "order"]
    assert orders
    assert all(slots["quantity"].isdigit() and slots["drink"] for slots in orders)


def test_every_act_is_present_in_both_files_in_fair_shares(tmp_path: Path) -> None:
    train, validation = write_demo_data(tmp_path)
    for path in (train, validation):
        counts = Counter(row["act"] for row in _rows(path))
        assert set(counts) == set(ACTS)
        assert min(counts.values()) >= 0.1 * sum(counts.values())


def test_messages_are_varied(tmp_path: Path) -> None:
    train, _ = write_demo_data(tmp_path)
    openings = {" ".join(row["message"].split()[:3]) for row in _rows(train)}
    assert len(openings) > 100


def test_completions_stay_short(tmp_path: Path) -> None:
    train, _ = write_demo_data(tmp_path)
    # About 4 characters a token for this text: 120 characters keeps a completion under ~40 tokens.
    assert max(len(row["representation"]) for row in _rows(train)) < 120


def test_demo_recipe_validates_and_points_at_the_written_files(tmp_path: Path) -> None:
    train, validation = write_demo_data(tmp_path)
    recipe = load_recipe(base=demo_recipe_dict(tmp_path))
    assert recipe.name == "demo"
    assert Path(recipe.data.train) == train.resolve()
    assert Path(recipe.data.validation) == validation.resolve()
    assert recipe.data.slice_field == "act"
    assert recipe.eval.task == "structured"
    row = _rows(train)[0]
    prompt = recipe.data.prompt_template.format_map(row)
    assert prompt == f"{DEMO_INSTRUCTION}\n\nMessage: {row['message']}"
    assert recipe.data.completion_template.format_map(row) == row["representation"]


def test_instruction_has_no_braces_so_format_map_leaves_it_alone() -> None:
    assert "{" not in DEMO_INSTRUCTION and "}" not in DEMO_INSTRUCTION
