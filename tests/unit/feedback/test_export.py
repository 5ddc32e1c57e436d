"""Feedback -> training data: what each entry becomes, duplicates dropped and counted, the old run's
held-out rows kept exactly, and a retrain recipe that validates and continues the old adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import honed
from honed.config.load import load_recipe
from honed.data.dataset import SplitReport, iter_rows
from honed.data.formats import to_messages, to_preference
from honed.demo.data import DEMO_INSTRUCTION
from honed.errors import ConfigError, DataError
from honed.evaluation.evaluate import build_eval
from honed.feedback.examples import ContentText, sort_entries
from honed.feedback.export import export_feedback, feedback_stats
from honed.pipeline.finetune import finetune
from honed.runs.results import load_eval
from honed.serve.store import RequestStore, ServedRequest

# 60 words, so a one-word edit stays above the 0.85 near-duplicate threshold (see data/dedup.py).
LONG = (
    "Good morning, I would like to place a rather large order for the whole team meeting today, so "
    "please bear with me while I read it out slowly: we need twelve lattes with oat milk, four of them "
    "decaf, six cappuccinos with whole milk, three flat whites, two hot chocolates for the kids who are "
    "visiting, and finally one small espresso for me, thanks a lot"
)


def prompt(message: str) -> str:
    """The user turn a client sends for the demo task: the template the run trained on, filled."""
    return f"{DEMO_INSTRUCTION}\n\nMessage: {message}"


class Feedback:
    """Builds a store the way `honed serve` fills it."""

    def __init__(self, url: str) -> None:
        self.store, self.n = RequestStore(url), 0

    def add(
        self,
        message: str,
        response: str,
        rating: int | None,
        correction: str | None = None,
        kind: str = "chat",
        model: str = "demo",
        finish_reason: str = "stop",
    ) -> str:
        self.n += 1
        request_id = f"chatcmpl-{self.n:04x}"
        messages = [{"role": "user", "content": prompt(message)}] if kind == "chat" else None
        self.store.record(
            ServedRequest(
                request_id, 1000.0 + self.n, model, "runs/old", kind, messages, prompt(message), response,
                finish_reason, {"max_tokens": 48}, 40, 8, 0.1,
            )
        )  # fmt: skip
        if rating is not None:
            self.store.add_feedback(request_id, rating, correction)
        return request_id


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def old_run(make_tiny_run) -> Path:
    """A finished tiny run with a rank-4 adapter trained away from its zero-initialised B (one per module:
    the tests only read it)."""
    return make_tiny_run("old", "train.max_steps=2", "train.lr=1e-2", "lora.r=4")


@pytest.fixture
def store_url(tmp_path, demo_dir) -> str:
    """A store holding one entry of every kind, served as 'demo' (and one served as 'other')."""
    train = _rows(demo_dir / "train.jsonl")
    validation = _rows(demo_dir / "validation.jsonl")
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    fb = Feedback(url)
    fb.add("Two small lattes please.", "order(drink[latte], size[small], quantity[2])", 1)  # good answer
    fb.add("A mocha, hot.", "order(drink[latte])", -1, correction="order(drink[mocha], temperature[hot])")
    fb.add("When do you open?", "ask_hours()", 0)  # neutral, below min_rating 1
    fb.add(train[0]["message"], train[0]["representation"], 1)  # repeats a training row
    fb.add(validation[0]["message"], validation[0]["representation"], 1)  # repeats a held-out row
    fb.add("Two small lattes please.", "order(drink[latte], size[small], quantity[2])", 1)  # repeats #1
    fb.add(LONG, "order(drink[latte], quantity[12])", 1)
    fb.add(LONG.replace("rather large", "really large"), "order(drink[latte], quantity[12])", 1)  # near #7
    fb.add("Cancel order 12.", "cancel(order_id[12])", None)  # unrated
    fb.add("Price of a latte?", "ask_price(drink[latte])", 1, kind="completion")
    fb.add("One large latte", "order(drink[latte], si", 1, finish_reason="length")  # cut off
    fb.add("One chai latte", "order(drink[chai latte])", 1, model="other")
    fb.store.close()
    return url


def test_export_turns_feedback_into_examples_pairs_and_counts(old_run, store_url, tmp_path, demo_dir):
    out = tmp_path / "export"
    report = export_feedback(store_url, old_run, out, model="demo")

    assert report["entries"] == 11 and report["rated"] == 10
    assert report["used"] == {"sft": 3, "pairs": 1}
    assert report["by_kind"] == {"correction": 1, "response": 2}
    assert report["dropped"] == {
        "below_min_rating": 1,
        "completion_request": 1,
        "exact_duplicate_of_feedback": 1,
        "exact_duplicate_of_train": 1,
        "exact_duplicate_of_validation": 1,
        "near_duplicate_of_feedback": 1,
        "truncated_answer": 1,
        "unrated": 1,
    }
    assert json.loads((out / "report.json").read_text()) == report

    train = _rows(out / "train.jsonl")
    originals = _rows(demo_dir / "train.jsonl")
    assert report["replay_rows"] == len(originals) == len(train) - 3
    recipe = honed.load_recipe(old_run / "recipe.yaml")
    for original, row in zip(originals, train, strict=False):  # replay first, fields kept, chat format
        assert row == {**original, "messages": to_messages(original, "template", recipe.data)}
    feedback = train[len(originals) :]
    assert [row["feedback"]["target"] for row in feedback] == ["correction", "response", "response"]
    assert feedback[0]["messages"] == [
        {"role": "user", "content": prompt("A mocha, hot.")},
        {"role": "assistant", "content": "order(drink[mocha], temperature[hot])"},
    ]
    assert feedback[1]["messages"][-1]["content"] == "order(drink[latte], size[small], quantity[2])"
    assert "rather large" in feedback[2]["messages"][0]["content"]  # the first of the near pair is kept

    (pair,) = _rows(out / "preference.jsonl")
    assert to_preference(pair) == (
        [{"role": "user", "content": prompt("A mocha, hot.")}],
        "order(drink[mocha], temperature[hot])",
        "order(drink[latte])",
    )


def test_preference_rows_are_what_dpo_reads(old_run, store_url, tmp_path, tiny_tokenizer):
    from honed.methods.dpo import build_pairs

    export_feedback(store_url, old_run, tmp_path / "export")
    recipe = load_recipe(  # the overrides docs/feedback.md suggests
        tmp_path / "export" / "retrain.yaml",
        [
            "method=dpo",
            "data.train=preference.jsonl",
            "data.format=preference",
            "data.validation=null",
            "data.holdout_fraction=0.2",
        ],
    )
    assert recipe.data.train == str(tmp_path / "export" / "preference.jsonl")
    recipe.data.holdout_fraction = None  # one pair: keep it in the training split
    pairs, report = build_pairs(recipe, tiny_tokenizer, "train")
    assert len(pairs) == 1 and report.skipped_bad_rows == 0


def test_retrain_recipe_keeps_the_old_evaluation_rows_and_continues_the_adapter(
    old_run, store_url, tmp_path, monkeypatch
):
    out = tmp_path / "export"
    export_feedback(store_url, old_run, out)
    text = (out / "retrain.yaml").read_text()
    assert text.startswith("# Retrain") and f"honed train {out / 'retrain.yaml'}" in text
    assert f"honed compare {old_run} NEW_RUN" in text
    recipe = honed.load_recipe(out / "retrain.yaml")
    assert recipe.name == "demo-feedback" and recipe.data.format == "chat"
    assert recipe.data.prompt_template is None and recipe.data.holdout_fraction is None
    assert recipe.data.train == str(out / "train.jsonl")  # relative in the file, resolved on load
    assert recipe.lora.init_from == str(old_run / "final" / "adapter")
    assert yaml.safe_load(text)["data"]["train"] == "train.jsonl"
    assert set(honed.validate(recipe)) == {"train", "validation"}

    # The new run is scored on the old run's rows: same prompts, references and slices.
    old = load_eval(old_run, "tuned")[1]
    _, rows = build_eval(recipe)
    assert len(rows) == len(old) == 4
    for row, before in zip(rows, old, strict=True):
        assert (row.prompt[-1]["content"], row.reference, row.slice) == (
            before["prompt"],
            before["reference"],
            before["slice"],
        )
    assert len(_rows(out / "validation.jsonl")) == 8  # every held-out row, not only the scored ones

    # Training starts from the old adapter's weights.
    started = {}
    from honed.pipeline import finetune as pipeline

    real_loop = pipeline.train_loop

    def recording_loop(model, *args, **kwargs):
        started.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return real_loop(model, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train_loop", recording_loop)
    new_run = finetune(load_recipe(out / "retrain.yaml", ["train.max_steps=1"]), progress=False)
    saved = load_file(old_run / "final/adapter/adapter_model.safetensors")
    b = next(name for name in started if "lora_B" in name)
    assert saved[b.replace(".default.", ".")].abs().max() > 0  # trained, so not a fresh zero B
    torch.testing.assert_close(started[b], saved[b.replace(".default.", ".")], rtol=0, atol=0)

    from honed.evaluation.systems import compare

    result = compare([str(old_run), str(new_run)], tmp_path / "comparison", progress=False)
    assert result["rows"] == 4  # same references: the comparison's own check passed


def test_holdout_rows_are_the_ones_the_run_held_out(tiny_recipe, store_url, tmp_path):
    run = finetune(
        tiny_recipe(
            "data.validation=null", "data.holdout_fraction=0.25", "train.max_steps=1", "eval.base=false"
        ),
        progress=False,
    )
    out = tmp_path / "export"
    report = export_feedback(store_url, run, out)
    recipe = honed.load_recipe(run / "recipe.yaml")
    held_out = [row.fields for row in iter_rows(recipe.data, "validation", SplitReport())]
    kept = [row.fields for row in iter_rows(recipe.data, "train", SplitReport())]
    assert held_out and report["validation_rows"] == len(held_out)
    assert [
        {k: v for k, v in r.items() if k != "messages"} for r in _rows(out / "validation.jsonl")
    ] == held_out
    replay = _rows(out / "train.jsonl")[: report["replay_rows"]]
    assert [{k: v for k, v in r.items() if k != "messages"} for r in replay] == kept
    new = honed.load_recipe(out / "retrain.yaml")
    _, rows = build_eval(new)
    old = load_eval(run, "tuned")[1]
    assert [(r.prompt[-1]["content"], r.reference) for r in rows] == [
        (p["prompt"], p["reference"]) for p in old
    ]


def test_full_fine_tune_continues_from_its_final_model(tiny_recipe, store_url, tmp_path):
    run = finetune(tiny_recipe("adapter=full", "train.max_steps=1", "eval.base=false"), progress=False)
    export_feedback(store_url, run, tmp_path / "export")
    recipe = honed.load_recipe(tmp_path / "export" / "retrain.yaml")
    assert recipe.adapter == "full" and recipe.model.base == str(run / "final" / "model")
    assert recipe.lora.init_from is None


def test_nothing_usable_and_taken_folders_are_errors(old_run, tmp_path, store_url):
    fb = Feedback(f"sqlite:///{tmp_path / 'empty.db'}")
    fb.add("When do you open?", "ask_hours()", -1)
    fb.add("Cancel order 12.", "cancel(order_id[12])", None)
    fb.store.close()
    with pytest.raises(DataError, match=r"2 requests, none usable \(1 below_min_rating, 1 unrated\)"):
        export_feedback(f"sqlite:///{tmp_path / 'empty.db'}", old_run, tmp_path / "none")
    with pytest.raises(DataError, match="no requests served as 'nobody'"):
        export_feedback(store_url, old_run, tmp_path / "none", model="nobody")
    export_feedback(store_url, old_run, tmp_path / "export")
    with pytest.raises(ConfigError, match="already holds train.jsonl.*--overwrite"):
        export_feedback(store_url, old_run, tmp_path / "export")
    export_feedback(store_url, old_run, tmp_path / "export", overwrite=True)
    with pytest.raises(ConfigError, match="min_rating"):
        export_feedback(store_url, old_run, tmp_path / "other", min_rating=5)


def test_stats_count_by_model_and_rating(store_url):
    stats = feedback_stats(store_url)
    assert stats["requests"] == 12 and stats["feedback"] == 11
    assert stats["models"]["demo"] == {
        "requests": 11,
        "rated": 10,
        "corrections": 1,
        "ratings": {"-1": 1, "0": 1, "1": 8},
    }
    assert stats["models"]["other"]["ratings"] == {"-1": 0, "0": 0, "1": 1}


def test_template_text_is_not_compared():
    """Templated prompts share the instruction; compared whole, every row would be a near duplicate."""
    text = ContentText(DEMO_INSTRUCTION + "\n\nMessage: {message}", "{representation}")
    a = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt("Two lattes")}]
    assert text([*a, {"role": "assistant", "content": "order(x)"}]) == "Two lattes\norder(x)"
    assert ContentText()([{"role": "user", "content": "hi"}]) == "hi"  # chat runs: the text as it is


def test_what_each_entry_becomes_without_a_store():
    def entry(i, rating, correction=None, response="served", messages=None):
        return {
            "id": f"c{i}",
            "model": "m",
            "kind": "chat",
            "messages": messages
            or [{"role": "developer", "content": "sys"}, {"role": "user", "content": "q"}],
            "response": response,
            "finish_reason": "stop",
            "feedback": {"id": f"fb{i}", "rating": rating, "correction": correction},
        }

    found = sort_entries(
        [
            entry(1, 1),
            entry(2, 1, correction="served"),  # a "correction" equal to the answer confirms it
            entry(3, 1, correction="better"),  # any differing correction is a pair, whatever the rating
            entry(4, -1, correction="fixed", response=""),  # nothing to reject: an example, no pair
            entry(5, 1, messages=[{"role": "tool", "content": "x"}]),
            entry(6, 1, messages=[{"role": "user", "content": [{"type": "text", "text": "parts"}]}]),
        ],
        min_rating=1,
    )
    assert [(e.key, e.target) for e in found.examples] == [
        ("feedback:c3", "correction"),
        ("feedback:c4", "correction"),
        ("feedback:c1", "response"),
        ("feedback:c2", "response"),
        ("feedback:c6", "response"),
    ]
    assert found.examples[2].messages[0] == {"role": "system", "content": "sys"}
    assert found.examples[4].messages[0] == {"role": "user", "content": "parts"}
    assert [(p.chosen, p.rejected) for p in found.pairs] == [("better", "served")]
    assert found.dropped == {"malformed_messages": 1} and found.pairs_dropped == {"empty_response": 1}
