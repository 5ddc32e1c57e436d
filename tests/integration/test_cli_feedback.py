"""`honed feedback stats` and `honed feedback export` through the real command (needs `feedback` in
cli.main.COMMANDS): counts per model and rating, the exported files, one-line errors."""

from __future__ import annotations

import json

import pytest

from honed.cli.main import main
from honed.demo.data import DEMO_INSTRUCTION
from honed.pipeline.finetune import finetune
from honed.serve.store import RequestStore, ServedRequest


def _served(i: int, message: str, response: str, model: str = "demo") -> ServedRequest:
    content = f"{DEMO_INSTRUCTION}\n\nMessage: {message}"
    return ServedRequest(
        f"chatcmpl-{i}", 1000.0 + i, model, "runs/old", "chat", [{"role": "user", "content": content}],
        content, response, "stop", {"max_tokens": 48}, 40, 8, 0.1,
    )  # fmt: skip


@pytest.fixture
def store_path(tmp_path) -> str:
    path = tmp_path / "feedback.db"
    store = RequestStore(str(path))
    store.record(_served(1, "Two small lattes please.", "order(drink[latte], size[small], quantity[2])"))
    store.record(_served(2, "A mocha, hot.", "order(drink[latte])"))
    store.record(_served(3, "When do you open?", "ask_hours()", model="other"))
    store.add_feedback("chatcmpl-1", 1)
    store.add_feedback("chatcmpl-2", -1, correction="order(drink[mocha], temperature[hot])")
    store.close()
    return str(path)


def test_feedback_stats(capsys, store_path):
    assert main(["feedback", "stats", "--store", store_path]) == 0
    out = capsys.readouterr().out
    assert "3 requests, 2 feedback posts" in out
    demo = next(line for line in out.splitlines() if line.startswith("demo "))
    assert demo.split() == ["demo", "2", "2", "1", "0", "1", "1"]  # requests rated bad neutral good fixed

    assert main(["feedback", "stats", "--store", store_path, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["models"]["other"] == {
        "requests": 1,
        "rated": 0,
        "corrections": 0,
        "ratings": {"-1": 0, "0": 0, "1": 0},
    }


def test_feedback_export(capsys, tiny_recipe, store_path, tmp_path):
    run = finetune(tiny_recipe("train.max_steps=1", "eval.base=false"), progress=False)
    out = tmp_path / "export"
    code = main(
        ["feedback", "export", "--store", store_path, "--run", str(run), "--out", str(out), "--model", "demo"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "2 requests (2 rated): 2 examples, 1 preference pairs" in printed
    assert f"next: honed train {out / 'retrain.yaml'}" in printed
    assert f"then: honed compare {run} NEW_RUN" in printed
    assert {p.name for p in out.iterdir()} == {
        "train.jsonl",
        "validation.jsonl",
        "preference.jsonl",
        "report.json",
        "retrain.yaml",
    }


def test_feedback_errors_are_one_line(capsys, tiny_recipe, tmp_path):
    code = main(["feedback", "stats", "--store", str(tmp_path / "typo.db")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: store sqlite:///")
    assert "no such SQLite file" in err
    code = main(
        ["feedback", "export", "--store", "sqlite://", "--run", str(tmp_path), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not a honed run directory" in err
