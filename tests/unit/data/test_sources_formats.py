"""Data files -> rows (with file:line) -> conversations -> tokenized examples, and the report of every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.config.schema import DataConfig
from honed.data.dataset import SplitReport, build_examples, iter_rows
from honed.data.formats import RowError, detect_format, fill_template, split_prompt, to_messages
from honed.data.sources import read_rows
from honed.errors import DataError

QA = [
    {"question": f"what is {i} + {i}?", "answer": str(2 * i), "topic": "sum" if i % 2 else "even"}
    for i in range(1, 6)
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _cfg(train: Path, **kwargs) -> DataConfig:
    return DataConfig(train=str(train), **kwargs)


def _pc(i: int, completion: str = "ok") -> dict:
    return {"prompt": f"question {i}", "completion": completion}


# --- sources -------------------------------------------------------------------------------------------


def test_jsonl_rows_carry_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    rows = list(read_rows(path))
    assert [(r.location, r.row, r.error) for r in rows] == [
        (f"{path}:1", {"a": 1}, None),
        (f"{path}:3", {"a": 2}, None),
    ]


def test_malformed_json_line_is_reported_with_its_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"a": 1}, {"a": 2}, '{"a": 3', "[1, 2]"])
    rows = list(read_rows(path))
    assert rows[2].row is None
    assert f"{rows[2].location}: {rows[2].error}".startswith(f"{path}:3: not valid JSON")
    assert rows[3].location == f"{path}:4"
    assert rows[3].error == "expected a JSON object per line, got list"


def test_csv_rows_carry_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\nhi,there\n"multi\nline",x\nshort,y,extra\n', encoding="utf-8")
    rows = list(read_rows(path))
    assert rows[0].location == f"{path}:2" and rows[0].row == {"prompt": "hi", "completion": "there"}
    assert rows[1].row == {"prompt": "multi\nline", "completion": "x"}
    assert rows[1].location == f"{path}:4"  # the line where the (multi-line) record ends
    assert rows[2].location == f"{path}:5"
    assert rows[2].row is None
    assert rows[2].error == "3 cells but the header has 2 columns"


def test_parquet_rows_are_numbered(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "completion": ["1", "2", "3"]}), path)
    rows = list(read_rows(path))
    assert [r.location for r in rows] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert rows[1].row == {"prompt": "b", "completion": "2"}


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        read_rows(tmp_path / "missing.jsonl")
    other = tmp_path / "d.txt"
    other.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'; use one of \.jsonl"):
        read_rows(other)


def test_unreadable_parquet_is_a_data_error(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        list(read_rows(path))


# --- formats -------------------------------------------------------------------------------------------


def test_chat_row_to_messages(tmp_path: Path) -> None:
    row = {
        "messages": [{"role": "user", "content": "hi", "name": "x"}, {"role": "assistant", "content": "yo"}]
    }
    assert to_messages(row, "chat", _cfg(tmp_path / "t.jsonl")) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0] must have role one of"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": "user", "content": "x"}]}, "the last message must be the assistant's answer"),
    ],
)
def test_bad_chat_rows(tmp_path: Path, row: dict, reason: str) -> None:
    with pytest.raises(RowError) as info:
        to_messages(row, "chat", _cfg(tmp_path / "t.jsonl"))
    assert str(info.value).startswith(reason)


def test_prompt_completion_row_to_messages(tmp_path: Path) -> None:
    messages = to_messages(
        {"prompt": "2+2?", "completion": "4"}, "prompt_completion", _cfg(tmp_path / "t.jsonl")
    )
    assert messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert split_prompt(messages) == ([{"role": "user", "content": "2+2?"}], "4")
    with pytest.raises(RowError, match="field 'completion' must be a non-empty string, got None"):
        to_messages({"prompt": "2+2?"}, "prompt_completion", _cfg(tmp_path / "t.jsonl"))


def test_template_row_to_messages(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path / "t.jsonl",
        format="template",
        prompt_template="Q: {question}",
        completion_template="{answer}",
    )
    assert to_messages(QA[0], "template", cfg) == [
        {"role": "user", "content": "Q: what is 1 + 1?"},
        {"role": "assistant", "content": "2"},
    ]


def test_template_missing_field_names_it() -> None:
    with pytest.raises(RowError) as info:
        fill_template("Q: {question} ({context})", {"question": "q", "answer": "a"})
    assert str(info.value) == "missing field 'context' used by the template (fields: answer, question)"


def test_system_prompt_is_inserted_unless_the_row_has_one(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "t.jsonl", system_prompt="Be brief.")
    messages = to_messages(_pc(1), "prompt_completion", cfg)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    chat = {
        "messages": [
            {"role": "system", "content": "Own."},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
        ]
    }
    assert to_messages(chat, "chat", cfg)[0]["content"] == "Own."


def test_detect_format() -> None:
    assert detect_format({"messages": []}, "f:1") == "chat"
    assert detect_format({"prompt": "a", "completion": "b", "x": 1}, "f:1") == "prompt_completion"
    with pytest.raises(DataError) as info:
        detect_format({"question": "q", "answer": "a"}, "f.jsonl:1")
    message = str(info.value)
    assert message.startswith("f.jsonl:1: cannot detect the data format from the fields [answer, question]")
    assert "data.format: template" in message and "data.prompt_template" in message


def test_auto_format_is_detected_from_the_first_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [_pc(1), _pc(2)])
    rows = list(iter_rows(_cfg(path), "train", SplitReport()))
    assert [r.location for r in rows] == [f"{path}:1", f"{path}:2"]
    assert rows[1].messages[-1] == {"role": "assistant", "content": "ok"}


def test_auto_format_failure_stops_even_with_skip(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", QA)
    with pytest.raises(DataError, match=rf"{path}:1: cannot detect the data format"):
        list(iter_rows(_cfg(path, on_bad_row="skip"), "train", SplitReport()))


# --- on_bad_row ----------------------------------------------------------------------------------------


def _with_bad_rows(tmp_path: Path) -> Path:
    return _jsonl(tmp_path / "t.jsonl", [_pc(1), "{broken", _pc(3), {"prompt": "only"}, _pc(5)])


def test_bad_row_error_names_file_and_line(tmp_path: Path) -> None:
    path = _with_bad_rows(tmp_path)
    with pytest.raises(DataError) as info:
        list(iter_rows(_cfg(path), "train", SplitReport()))
    lines = str(info.value).splitlines()
    # Every malformed row at once, each with file:line, what is wrong and what was expected; then the fix.
    assert lines[0] == f"{path}: 2 malformed rows:"
    assert lines[1].startswith(f"  {path}:2: not valid JSON")
    assert lines[2] == f"  {path}:4: field 'completion' must be a non-empty string, got None"
    assert lines[3] == 'A valid prompt_completion row: {"prompt": "Hi?", "completion": "Hello."}'
    assert "data.on_bad_row: skip" in lines[4]


def test_bad_row_errors_stop_at_a_cap(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [_pc(0)] + ["{"] * 50)
    with pytest.raises(DataError) as info:
        list(iter_rows(_cfg(path), "train", SplitReport()))
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: at least 20 malformed rows:"
    assert sum(line.startswith(f"  {path}:") for line in lines) == 20


def test_bad_rows_skipped_are_counted_and_listed(tmp_path: Path, tiny_tokenizer) -> None:
    path = _with_bad_rows(tmp_path)
    examples, report = build_examples(_cfg(path, on_bad_row="skip"), tiny_tokenizer, "train")
    assert len(examples) == report.examples == 3
    assert report.rows_read == 5
    assert report.skipped_bad_rows == 2
    assert report.problems[0].startswith(f"{path}:2: not valid JSON")
    assert report.problems[1] == f"{path}:4: field 'completion' must be a non-empty string, got None"
    assert report.as_dict()["skipped_bad_rows"] == 2


def test_template_missing_field_with_on_bad_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [QA[0], {"question": "no answer"}, QA[2]])
    kwargs = {"format": "template", "prompt_template": "{question}", "completion_template": "{answer}"}
    with pytest.raises(DataError, match=rf"{path}:2: missing field 'answer' used by the template"):
        list(iter_rows(_cfg(path, **kwargs), "train", SplitReport()))
    report = SplitReport()
    rows = list(iter_rows(_cfg(path, on_bad_row="skip", **kwargs), "train", report))
    assert [r.location for r in rows] == [f"{path}:1", f"{path}:3"]
    assert report.skipped_bad_rows == 1


def test_all_rows_bad_is_an_error(tmp_path: Path, tiny_tokenizer) -> None:
    path = _jsonl(tmp_path / "t.jsonl", ["{", "{"])
    with pytest.raises(DataError, match=r"train data: no usable examples out of 2 rows \(2 malformed"):
        build_examples(_cfg(path, on_bad_row="skip"), tiny_tokenizer, "train")


def test_max_train_rows_caps_usable_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [_pc(i) for i in range(10)])
    rows = list(iter_rows(_cfg(path, max_train_rows=3), "train", SplitReport()))
    assert len(rows) == 3


# --- on_too_long ---------------------------------------------------------------------------------------


def _mixed_lengths(tmp_path: Path) -> Path:
    # The tiny tokenizer is one token per byte: a 200-character answer is > 64 tokens, "ok" is not.
    return _jsonl(tmp_path / "t.jsonl", [_pc(1), _pc(2, "x" * 200), _pc(3), _pc(4, "y" * 300)])


def test_too_long_rows_are_skipped_and_counted(tmp_path: Path, tiny_tokenizer) -> None:
    path = _mixed_lengths(tmp_path)
    examples, report = build_examples(_cfg(path, max_seq_len=64), tiny_tokenizer, "train")
    assert len(examples) == 2
    assert all(len(e.input_ids) <= 64 for e in examples)
    assert (report.rows_read, report.too_long, report.too_long_action) == (4, 2, "skip")
    assert report.problems[0].startswith(f"{path}:2: ")
    assert report.problems[0].endswith("tokens > data.max_seq_len 64 (skipped)")
    assert len(report.token_lengths) == 4  # lengths are recorded before the cut


def test_too_long_rows_are_truncated_and_counted(tmp_path: Path, tiny_tokenizer) -> None:
    path = _mixed_lengths(tmp_path)
    examples, report = build_examples(
        _cfg(path, max_seq_len=64, on_too_long="truncate"), tiny_tokenizer, "train"
    )
    assert len(examples) == 4 and report.too_long == 2
    assert [len(e.input_ids) for e in examples][1::2] == [64, 64]
    assert all(len(e.labels) == len(e.input_ids) for e in examples)
    assert examples[1].labels[-1] == examples[1].input_ids[-1]  # the kept part of the answer is trained
    assert report.problems[0].endswith("(truncated)")


def test_too_long_error_names_the_row(tmp_path: Path, tiny_tokenizer) -> None:
    path = _mixed_lengths(tmp_path)
    with pytest.raises(DataError) as info:
        build_examples(_cfg(path, max_seq_len=64, on_too_long="error"), tiny_tokenizer, "train")
    assert str(info.value).startswith(f"{path}:2: ")
    assert "> data.max_seq_len 64; raise max_seq_len" in str(info.value)


def test_truncation_that_cuts_the_whole_answer_drops_the_row(tmp_path: Path, tiny_tokenizer) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [_pc(1), {"prompt": "p" * 100, "completion": "answer"}])
    examples, report = build_examples(
        _cfg(path, max_seq_len=64, on_too_long="truncate"), tiny_tokenizer, "train"
    )
    assert len(examples) == 1 and report.too_long == 1


# --- holdout -------------------------------------------------------------------------------------------


def test_holdout_splits_are_disjoint_deterministic_and_complete(tmp_path: Path) -> None:
    rows = [{"prompt": f"question number {i}", "completion": str(i)} for i in range(200)]
    path = _jsonl(tmp_path / "t.jsonl", rows)
    cfg = _cfg(path, holdout_fraction=0.2)

    def locations(split: str) -> list[str]:
        return [r.location for r in iter_rows(cfg, split, SplitReport())]

    train, validation = locations("train"), locations("validation")
    assert set(train).isdisjoint(validation)
    assert sorted(set(train) | set(validation)) == sorted(f"{path}:{i}" for i in range(1, 201))
    assert 20 <= len(validation) <= 60  # about 20% of 200
    assert locations("train") == train and locations("validation") == validation
    # The split depends on each row's content, not its position: a shuffled file keeps every row's side.
    shuffled = _jsonl(tmp_path / "s.jsonl", rows[::-1])
    again = [
        r.fields["completion"]
        for r in iter_rows(_cfg(shuffled, holdout_fraction=0.2), "validation", SplitReport())
    ]
    assert sorted(again) == sorted(
        r.fields["completion"] for r in iter_rows(cfg, "validation", SplitReport())
    )


def test_validation_without_a_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no validation data"):
        list(iter_rows(_cfg(tmp_path / "t.jsonl"), "validation", SplitReport()))
