"""The formats beyond chat and prompt/completion: ShareGPT, Alpaca, preference (incl. HH-RLHF transcripts) and
raw text, their detection, their error messages, and the content text that dedup and leakage compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.config.schema import DataConfig
from honed.data.dataset import SplitReport, iter_rows
from honed.data.formats import (
    EXAMPLES,
    RowError,
    check_row,
    detect_format,
    row_text,
    to_messages,
    to_preference,
)
from honed.errors import DataError

CFG = DataConfig(train="t.jsonl")


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": []}, "chat"),
        ({"conversations": []}, "sharegpt"),
        ({"prompt": "a", "chosen": "b", "rejected": "c"}, "preference"),
        ({"chosen": "b", "rejected": "c"}, "preference"),
        ({"prompt": "a", "completion": "b"}, "prompt_completion"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"text": "a doc", "source": "x.md"}, "text"),
    ],
)
def test_each_format_is_detected(row: dict, fmt: str) -> None:
    assert detect_format(row, "f:1") == fmt


def test_every_example_row_is_valid_for_its_format() -> None:
    for fmt, example in EXAMPLES.items():
        if fmt != "template":
            row = json.loads(example)
            assert detect_format(row, "f:1") == fmt
            check_row(row, fmt, CFG)


def test_sharegpt_maps_speakers_to_roles() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
        ]
    }
    assert to_messages(row, "sharegpt", CFG) == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert row_text(row, "sharegpt", CFG) == "Hi\nHello"  # system prompts are boilerplate, not content


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"conversations": "hi"}, "'conversations' must be a non-empty list of {from, value} objects"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "conversations[0].from must be one of human"),
        ({"conversations": [{"from": "human", "value": 3}]}, "conversations[0].value must be a string"),
        ({"conversations": [{"from": "human", "value": "x"}]}, "the last turn must be the assistant's"),
    ],
)
def test_bad_sharegpt_rows(row: dict, reason: str) -> None:
    with pytest.raises(RowError) as info:
        to_messages(row, "sharegpt", CFG)
    assert str(info.value).startswith(reason)


def test_alpaca_joins_instruction_and_input() -> None:
    row = {"instruction": "Translate to French.", "input": "cat", "output": "chat"}
    assert to_messages(row, "alpaca", CFG)[0]["content"] == "Translate to French.\n\ncat"
    no_input = {"instruction": "Say hi.", "input": "", "output": "hi"}
    assert to_messages(no_input, "alpaca", CFG)[0]["content"] == "Say hi."
    with pytest.raises(RowError, match="field 'output' must be a non-empty string, got ''"):
        to_messages({"instruction": "x", "output": ""}, "alpaca", CFG)
    with pytest.raises(RowError, match="field 'input' must be a string"):
        to_messages({"instruction": "x", "input": 3, "output": "y"}, "alpaca", CFG)


def test_preference_with_prompt_and_with_message_lists() -> None:
    prompt, chosen, rejected = to_preference({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."})
    assert (prompt, chosen, rejected) == ([{"role": "user", "content": "Hi?"}], "Hello!", "No.")
    conversational = {
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}],
    }
    assert to_preference(conversational) == ([{"role": "user", "content": "Hi?"}], "Hello!", "No.")
    # sft on preference rows learns the chosen answer
    assert to_messages(conversational, "preference", CFG)[-1] == {"role": "assistant", "content": "Hello!"}


def test_hh_rlhf_transcripts_split_into_prompt_and_answers() -> None:
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hey.\n\nHuman: Help me?\n\nAssistant: Sure, how?",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hey.\n\nHuman: Help me?\n\nAssistant: No.",
    }
    prompt, chosen, rejected = to_preference(row)
    assert prompt == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey."},
        {"role": "user", "content": "Help me?"},
    ]
    assert (chosen, rejected) == ("Sure, how?", "No.")
    # The shipped HH-RLHF copy adds the shared transcript as `prompt`: the answers are what follows it.
    with_prompt = {**row, "prompt": "\n\nHuman: Hi\n\nAssistant: Hey.\n\nHuman: Help me?\n\nAssistant:"}
    assert to_preference(with_prompt) == (prompt, "Sure, how?", "No.")
    assert row_text(with_prompt, "preference", CFG) == "Hi\nHey.\nHelp me?\nSure, how?\nNo."
    diverging = {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}
    with pytest.raises(RowError, match="do not share a Human/Assistant transcript"):
        to_preference(diverging)


def test_text_rows_are_checked_but_not_trainable_by_sft(tmp_path: Path) -> None:
    check_row({"text": "a document"}, "text", CFG)
    with pytest.raises(RowError, match="field 'text' must be a string"):
        check_row({"text": None}, "text", CFG)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "doc"}) + "\n")
    with pytest.raises(DataError, match=r"t.jsonl:1: raw text rows .* continued pre-training"):
        list(iter_rows(DataConfig(train=str(path)), "train", SplitReport()))


def test_row_text_is_the_content_without_template_text() -> None:
    cfg = DataConfig(
        train="t.jsonl",
        format="template",
        prompt_template="Table: {context}\nQ: {question}",
        completion_template="{answer}",
    )
    row = {
        "question": "how many?",
        "context": "CREATE TABLE t (a)",
        "answer": "SELECT COUNT(a) FROM t",
        "id": 7,
    }
    assert row_text(row, "template", cfg) == "CREATE TABLE t (a)\nhow many?\nSELECT COUNT(a) FROM t"
    assert row_text({"prompt": "p", "completion": "c"}, "prompt_completion", CFG) == "p\nc"
    assert row_text({"a": "x", "b": 2}, None, CFG) == "x\n2"  # undetected: every field


def test_mixed_errors_across_formats_are_reported_together(tmp_path: Path) -> None:
    rows = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
        {"conversations": [{"from": "human", "value": "hi"}]},
        {"conversations": [{"from": "alien", "value": "hi"}]},
    ]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as info:
        list(iter_rows(DataConfig(train=str(path)), "train", SplitReport()))
    message = str(info.value)
    assert f"{path}:2: the last turn must be the assistant's" in message
    assert f"{path}:3: conversations[0].from must be one of" in message
    assert 'A valid sharegpt row: {"conversations"' in message
