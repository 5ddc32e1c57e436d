"""`prepare`: hand-made files with every kind of problem go in; a versioned folder with every drop counted
and explained comes out, the same inputs give the same content hash, and a run records that hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.config.load import load_recipe
from honed.data.prepare import prepare
from honed.data.versions import data_identity
from honed.errors import ConfigError, DataError

WORDS = (
    "the quarterly report shows that revenue in the northern region grew faster than expected while costs "
    "in logistics and staffing stayed flat which lets the board approve the new warehouse plan and the "
    "hiring of twelve engineers for the platform team before the end of the fiscal year as agreed in march"
).split()
LONG = " ".join(WORDS)  # 60 words: one changed word keeps about 0.9 Jaccard over 3-word shingles
NEAR = LONG.replace("twelve", "eleven")
VALIDATION_ROW = {
    "prompt": "Which planet has the largest number of confirmed moons in the solar system as of this year?",
    "completion": "Saturn has the largest number of confirmed moons.",
}


def _pc(prompt: str, completion: str = "ok", **extra) -> dict:
    return {"prompt": prompt, "completion": completion, **extra}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    train = _jsonl(
        tmp_path / "train.jsonl",
        [
            _pc("What is the capital of France?", "Paris."),  # 1 kept
            _pc("what is the   capital of FRANCE?", "paris."),  # 2 exact duplicate of 1 (case, spaces)
            _pc(LONG, "Approved."),  # 3 kept
            _pc(NEAR, "Approved."),  # 4 near duplicate of 3
            _pc("Mail jane.doe@example.com about card 4111 1111 1111 1111", "Done."),  # 5 PII, redacted
            _pc("Order 4111 1111 1111 1112 shipped?", "Yes."),  # 6 fails Luhn: not a card, kept as is
            _pc("Tab\tand  spaces\u200b and a bell\x07 here", "Cleaned."),  # 7 cleaned
            _pc("   ", "   "),  # 8 empty after cleaning -> malformed (prompt must be non-empty)
            "{not json",  # 9 malformed
            VALIDATION_ROW,  # 10 exact copy of a validation row: dropped across splits
            _pc(VALIDATION_ROW["prompt"] + " Explain.", "Saturn has many moons."),  # 11 n-gram leakage
        ],
    )
    validation = _jsonl(
        tmp_path / "validation.jsonl", [VALIDATION_ROW, _pc("How many legs does a spider have?", "8")]
    )
    return train, validation


def _recipe(tmp_path: Path, train: Path, validation: Path | None, *overrides: str):
    raw = {
        "name": "toy",
        "data": {"train": str(train), "on_bad_row": "skip"},
        "eval": {"split": "train"},
        "prepare": {"output_dir": str(tmp_path / "datasets")},
    }
    if validation is not None:
        raw["data"]["validation"] = str(validation)
        raw["eval"]["split"] = "validation"
    return load_recipe(base=raw, overrides=list(overrides))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _step(manifest: dict, name: str) -> dict:
    return next(step for step in manifest["steps"] if step["step"] == name)


def test_every_drop_is_counted_with_its_reason(tmp_path: Path, files) -> None:
    train, validation = files
    prepared = prepare(_recipe(tmp_path, train, validation))
    manifest = prepared.manifest
    assert prepared.folder == tmp_path / "datasets" / f"toy-{prepared.content_hash[:12]}"
    assert manifest["format"] == "prompt_completion"
    assert _step(manifest, "read")["train"] == {"rows": 11, "malformed": 2}
    assert _step(manifest, "dedup")["train"] == {"exact": 1, "near": 1}
    assert _step(manifest, "dedup")["train_duplicates_of_held_out"] == {"exact": 1, "near": 0}
    pii = _step(manifest, "pii")["train"]
    assert pii["found"] == {"email": 1, "card": 1} and pii["rows_with_pii"] == 1
    leakage = _step(manifest, "leakage")
    assert leakage["flagged"] == 1 and leakage["dropped"] == 0
    assert leakage["rows"][0]["row"] == f"{train}:11"
    assert leakage["rows"][0]["held_out"] == [f"{validation}:1"]

    dropped = _rows(prepared.folder / "dropped.jsonl")
    reasons = {(d["at"].rsplit(":", 1)[1], d["reason"]) for d in dropped}
    assert reasons == {
        ("2", "duplicate_exact"),
        ("4", "duplicate_near"),
        ("8", "malformed"),
        ("9", "malformed"),
        ("10", "duplicate_exact_of_held_out"),
    }
    assert all("jane" not in json.dumps(d) for d in dropped)  # where and why, never the content

    kept = _rows(prepared.folder / "train.jsonl")
    prompts = [row["prompt"] for row in kept]
    assert len(kept) == manifest["outputs"]["train"]["rows"] == 6
    assert "Mail <EMAIL> about card <CARD>" in prompts
    assert "Order 4111 1111 1111 1112 shipped?" in prompts  # a 16-digit number failing Luhn is no card
    assert "Tab and spaces and a bell here" in prompts
    assert _rows(prepared.folder / "validation.jsonl")[0] == VALIDATION_ROW


def test_same_inputs_same_hash_and_folder_other_settings_new_version(tmp_path: Path, files) -> None:
    train, validation = files
    first = prepare(_recipe(tmp_path, train, validation))
    again = prepare(_recipe(tmp_path, train, validation))
    assert again.reused and again.content_hash == first.content_hash and again.folder == first.folder
    dropping = prepare(_recipe(tmp_path, train, validation, "prepare.leakage.action=drop"))
    assert dropping.content_hash != first.content_hash
    assert dropping.manifest["outputs"]["train"]["rows"] == 5
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == sorted(
        [first.folder.name, dropping.folder.name]
    )  # no temporary folders left behind


def test_pii_drop_and_off(tmp_path: Path, files) -> None:
    train, validation = files
    dropped = prepare(_recipe(tmp_path, train, validation, "prepare.pii.action=drop"))
    assert _step(dropped.manifest, "pii")["train"]["dropped"] == 1
    assert not any("Mail" in r["prompt"] for r in _rows(dropped.folder / "train.jsonl"))
    off = prepare(_recipe(tmp_path, train, validation, "prepare.pii.action=off"))
    assert any("jane.doe@example.com" in r["prompt"] for r in _rows(off.folder / "train.jsonl"))


def test_malformed_rows_stop_with_every_one_listed(tmp_path: Path, files) -> None:
    train, validation = files
    with pytest.raises(DataError) as info:
        prepare(_recipe(tmp_path, train, validation, "data.on_bad_row=error"))
    message = str(info.value)
    assert f"{train}:8: field 'prompt' must be a non-empty string" in message
    assert f"{train}:9: not valid JSON" in message
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


def test_benchmark_files_are_checked_for_leakage(tmp_path: Path) -> None:
    train = _jsonl(
        tmp_path / "t.jsonl", [_pc(LONG, "a"), _pc("Something unrelated to anything else here", "b")]
    )
    bench = _jsonl(tmp_path / "bench.jsonl", [{"question": LONG, "gold": "x"}])
    prepared = prepare(
        _recipe(tmp_path, train, None, f"prepare.leakage.against=[{bench}]", "prepare.leakage.action=drop")
    )
    leakage = _step(prepared.manifest, "leakage")
    assert leakage["flagged"] == leakage["dropped"] == 1
    assert leakage["rows"][0]["held_out"] == [f"{bench}:1"]
    assert prepared.manifest["benchmarks"] == {str(bench): 1}


def test_stratified_grouped_split_into_three_files(tmp_path: Path) -> None:
    rows = [
        _pc(f"ticket {i} about {topic} from customer {i % 40}", "answer", topic=topic, customer=i % 40)
        for i, topic in enumerate(["billing", "login", "shipping", "billing"] * 50)
    ]
    train = _jsonl(tmp_path / "t.jsonl", rows)
    recipe = _recipe(
        tmp_path,
        train,
        None,
        "prepare.split.validation_fraction=0.2",
        "prepare.split.test_fraction=0.1",
        "prepare.split.group_by=customer",
        "prepare.dedup.near=false",
    )
    prepared = prepare(recipe)
    splits = {name: _rows(prepared.folder / f"{name}.jsonl") for name in ("train", "validation", "test")}
    assert sum(len(v) for v in splits.values()) == 200
    customers = {name: {r["customer"] for r in v} for name, v in splits.items()}
    assert not customers["train"] & customers["validation"] and not customers["train"] & customers["test"]
    assert (len(customers["validation"]), len(customers["test"])) == (8, 4)  # 20% and 10% of 40 groups
    again = prepare(recipe)
    assert again.content_hash == prepared.content_hash


def test_stratify_by_a_missing_field_is_an_error(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "t.jsonl", [_pc(f"q{i}") for i in range(10)])
    recipe = _recipe(
        tmp_path, train, None, "prepare.split.test_fraction=0.2", "prepare.split.stratify_by=label"
    )
    with pytest.raises(DataError, match="prepare.split.stratify_by: no training row has a field 'label'"):
        prepare(recipe)


def test_validation_file_and_validation_fraction_conflict(tmp_path: Path, files) -> None:
    train, validation = files
    with pytest.raises(ConfigError, match="take validation rows from one place"):
        _recipe(tmp_path, train, validation, "prepare.split.validation_fraction=0.1")


def test_a_run_records_the_prepared_dataset_hash(tmp_path: Path, files) -> None:
    train, validation = files
    prepared = prepare(_recipe(tmp_path, train, validation))
    identity = data_identity(
        {
            "train": str(prepared.folder / "train.jsonl"),
            "validation": str(prepared.folder / "validation.jsonl"),
        }
    )
    assert identity["train"]["dataset"] == {"name": "toy", "content_hash": prepared.content_hash}
    assert identity["train"]["sha256"] == prepared.manifest["outputs"]["train"]["sha256"]
    raw = data_identity({"train": str(train)})
    assert raw["train"]["dataset"] is None and len(raw["train"]["sha256"]) == 64


def test_leakage_on_chosen_fields_only(tmp_path: Path) -> None:
    # Same question about different tables: not leaked as a whole row, leaked if questions are what matters.
    question = "What week was the opponent the San Diego Chargers in the regular season?"
    train = _jsonl(tmp_path / "t.jsonl", [{"question": question, "table": "CREATE TABLE a (week, opponent)"}])
    validation = _jsonl(
        tmp_path / "v.jsonl", [{"question": question, "table": "CREATE TABLE zz (w, opp, venue)"}]
    )
    args = (
        "data.format=template",
        "data.prompt_template='{table} {question}'",
        "data.completion_template='x'",
    )
    whole = prepare(_recipe(tmp_path, train, validation, *args, "prepare.dedup.across_splits=false"))
    assert _step(whole.manifest, "leakage")["flagged"] == 1  # 12 of its 14 8-grams are the question's
    spread = prepare(
        _recipe(
            tmp_path, train, validation, *args, "prepare.leakage.fields=[table]", "prepare.leakage.ngram=3"
        )
    )
    assert _step(spread.manifest, "leakage")["flagged"] == 0


def test_duplicates_can_be_kept(tmp_path: Path, files) -> None:
    train, validation = files
    recipe = _recipe(tmp_path, train, validation, "prepare.dedup.exact=false", "prepare.dedup.near=false")
    prepared = prepare(recipe)
    assert _step(prepared.manifest, "dedup")["train"] == {"exact": 0, "near": 0}
    assert prepared.manifest["outputs"]["train"]["rows"] == 9  # 11 read, 2 malformed


def test_nothing_left_is_an_error_that_counts_why(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "t.jsonl", [_pc("write to a@b.com", "x"), _pc("ok", "y")])
    recipe = _recipe(tmp_path, train, None, "prepare.pii.action=drop", "prepare.clean.min_chars=10")
    with pytest.raises(
        DataError,
        match=r"no training rows left after preparation \(2 read, 1 dropped for personal data, 1 too short\)",
    ):
        prepare(recipe)
