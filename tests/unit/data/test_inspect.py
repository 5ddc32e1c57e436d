"""`inspect`: one pass over a file reports rows, format, malformed rows, token lengths, cleaning, duplicates,
PII and a rendered example with the trained tokens marked."""

from __future__ import annotations

import json
from pathlib import Path

from honed.cli.data import render_inspect
from honed.config.prepare import PrepareConfig
from honed.config.schema import DataConfig
from honed.data.inspect import BIN_EDGES, inspect_source


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


def _chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_inspect_reports_everything_at_once(tmp_path: Path, tiny_tokenizer) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [
            _chat("Reset my password please", "Use the reset link."),
            _chat("reset my   password PLEASE", "use the reset link."),  # exact duplicate after normalising
            _chat("Call me on +44 20 7946 0958", "Sure."),
            _chat("My card 4111 1111 1111 1112 is blocked", "Sorry."),  # fails Luhn: not a card
            {"messages": [{"role": "user", "content": "no answer"}]},
            "{broken",
            _chat("Tab\there", "x" * 300),  # cleaning changes it; long
        ],
    )
    report = inspect_source(
        str(path), DataConfig(train=str(path), max_seq_len=128), PrepareConfig(), tiny_tokenizer
    )
    assert report["rows"] == 7 and report["format"] == "chat"
    assert report["malformed"]["rows"] == 2
    assert (
        report["malformed"]["first"][0]
        == f"{path}:5: the last message must be the assistant's answer, got role 'user'"
    )
    assert report["malformed"]["first"][1].startswith(f"{path}:6: not valid JSON")
    assert report["duplicates"]["exact"] == 1
    assert report["duplicates"]["first"] == [{"row": f"{path}:2", "kind": "exact", "of": f"{path}:1"}]
    assert report["pii"]["found"] == {"phone": 1}
    assert report["pii"]["first"] == [{"row": f"{path}:3", "types": {"phone": 1}}]
    assert report["cleaning"]["rows_changed"] == 2  # rows 2 (spaces) and 7 (tab)
    tokens = report["tokens"]
    assert tokens["rows"] == 5 and tokens["longer_than_max_seq_len"] == 1
    assert sum(b["rows"] for b in tokens["histogram"]) == 5
    assert report["trained_tokens"]["max"] >= 300
    # The first example rendered as training sees it: the answer (and end of turn) trained, the prompt not.
    masked = report["example"]["masked"]
    assert masked == (
        "<|im_start|>user\nReset my password please<|im_end|>\n<|im_start|>assistant\n"
        "[[Use the reset link.<|im_end|>]]\n"
    )
    text = render_inspect({**report, "seconds": 0.1})
    assert "duplicates: 1 exact, 0 near" in text and "phone 1" in text and "[[Use the reset link." in text


def test_inspect_an_undetected_format_still_reports(tmp_path: Path, tiny_tokenizer) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl", [{"question": "q1?", "answer": "a1"}, {"question": "q2?", "answer": "a2"}]
    )
    report = inspect_source(str(path), DataConfig(train=str(path)), PrepareConfig(), tiny_tokenizer)
    assert report["format"] is None and "cannot detect the data format" in report["format_note"]
    assert report["tokens"]["rows"] == 2 and report["example"] is None
    templated = DataConfig(
        train=str(path), format="template", prompt_template="{question}", completion_template="{answer}"
    )
    report = inspect_source(str(path), templated, PrepareConfig(), tiny_tokenizer)
    assert report["format"] == "template" and "[[a1<|im_end|>]]" in report["example"]["masked"]


def test_inspect_preference_and_text(tmp_path: Path, tiny_tokenizer) -> None:
    pref = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}])
    report = inspect_source(str(pref), DataConfig(train=str(pref)), PrepareConfig(), tiny_tokenizer)
    assert (
        "[[Hello!<|im_end|>]]" in report["example"]["masked"] and report["example"]["rejected"] == "Go away."
    )
    text = _jsonl(tmp_path / "t.jsonl", [{"text": "A whole document."}])
    report = inspect_source(str(text), DataConfig(train=str(text)), PrepareConfig(), tiny_tokenizer)
    assert report["format"] == "text" and report["example"]["masked"] == "[[A whole document.]]"


def test_histogram_bins_cover_every_length(tmp_path: Path, tiny_tokenizer) -> None:
    rows = [_chat("q", "a" * n) for n in (1, 40, 100, 700, 20000)]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    report = inspect_source(str(path), DataConfig(train=str(path)), PrepareConfig(), tiny_tokenizer)
    bins = report["tokens"]["histogram"]
    assert sum(b["rows"] for b in bins) == 5
    assert bins[-1]["to"] is None and bins[-1]["from"] == BIN_EDGES[-1] + 1
