"""Continued pre-training: documents packed across block boundaries with end-of-document tokens, replay
mixing, the loss falling on domain text, and perplexity before/after in eval/cpt.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.config.load import load_recipe
from honed.errors import DataError
from honed.methods.cpt import blocks, cpt_data, document_end_id, token_stream

DOMAIN = [
    "The borrow checker makes sure every reference is valid. A value has one owner at a time.",
    "Traits define shared behaviour. A type implements a trait with an impl block.",
    "Pattern matching with match must cover every case; the compiler checks it.",
    "Iterators are lazy: nothing happens until a consumer such as collect runs them.",
]
GENERAL = ["The market square was busy on Saturday morning.", "Bread rises because yeast makes gas."]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def cpt_recipe(tiny_model_dir, tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": text * 3} for text in DOMAIN * 3])
    validation = _jsonl(tmp_path / "validation.jsonl", [{"text": DOMAIN[0] + " " + DOMAIN[2]}])
    general = _jsonl(tmp_path / "general.jsonl", [{"sentence": text} for text in GENERAL])

    def make(*overrides: str):
        base = {
            "name": "cpt-test",
            "method": "cpt",
            "model": {"base": str(tiny_model_dir)},
            "data": {"train": str(train), "validation": str(validation), "format": "text", "max_seq_len": 64},
            "cpt": {"general_eval": str(general), "general_eval_field": "sentence"},
            "train": {"max_steps": 12, "batch_size": 4, "lr": 3e-3, "threads": 1, "lr_warmup_steps": 0},
            "eval": {"task": "perplexity", "task_options": {"max_seq_len": 64}, "max_rows": 2},
            "output": {"runs_dir": str(tmp_path / "runs")},
        }
        return load_recipe(base=base, overrides=list(overrides))

    return make


def test_documents_are_joined_with_the_end_token_and_cut_into_full_blocks(tiny_tokenizer) -> None:
    end = document_end_id(tiny_tokenizer)
    assert tiny_tokenizer.convert_ids_to_tokens(end) == "<|endoftext|>"  # not the chat eos <|im_end|>
    stream = token_stream(["ab", "cde"], tiny_tokenizer, end)
    ids = tiny_tokenizer(["ab", "cde"], add_special_tokens=False)["input_ids"]
    assert stream == [*ids[0], end, *ids[1], end]
    assert len(stream) == 7
    cut = blocks(stream, 4)
    # "cde" starts in the first block and runs on into the second: nothing is padded or dropped.
    assert [b.input_ids for b in cut] == [stream[0:4], stream[4:7]]
    assert all(b.labels == b.input_ids for b in cut)  # every token is trained


def test_the_last_single_token_block_is_dropped(tiny_tokenizer) -> None:
    assert [len(b.input_ids) for b in blocks(list(range(7)), 3)] == [3, 3]


def test_cpt_data_mixes_the_replay_share(cpt_recipe, tiny_tokenizer, tmp_path) -> None:
    general = _jsonl(tmp_path / "replay.jsonl", [{"body": text * 20} for text in GENERAL])
    plain = cpt_recipe()
    train, validation = cpt_data(plain, tiny_tokenizer, _run(tmp_path / "a"))
    mixed = cpt_recipe(f"cpt.replay={general}", "cpt.replay_text_field=body", "cpt.replay_fraction=0.25")
    mixed_train, _ = cpt_data(mixed, tiny_tokenizer, _run(tmp_path / "b"))
    replayed = len(mixed_train) - len(train)
    assert replayed == round(len(train) * 0.25 / 0.75)
    assert replayed / len(mixed_train) == pytest.approx(0.25, abs=0.05)
    domain_ids = {tuple(b.input_ids) for b in train}
    assert sum(tuple(b.input_ids) not in domain_ids for b in mixed_train) == replayed
    report = json.loads((tmp_path / "b" / "data" / "report.json").read_text())
    assert report["train"]["replay_blocks"] == replayed
    assert report["train"]["documents"] == 12
    assert validation and all(len(b.input_ids) <= 64 for b in validation)


def test_rows_without_text_are_reported_with_their_line(cpt_recipe, tiny_tokenizer, tmp_path) -> None:
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": DOMAIN[0]}, {"body": "no text field"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: no text in field 'text'"):
        cpt_data(cpt_recipe(f"data.train={bad}"), tiny_tokenizer, _run(tmp_path / "r"))
    train, _ = cpt_data(
        cpt_recipe(f"data.train={bad}", "data.on_bad_row=skip"), tiny_tokenizer, _run(tmp_path / "s")
    )
    assert train


def test_replay_fraction_without_a_source_is_a_recipe_error(cpt_recipe) -> None:
    from honed.errors import ConfigError

    with pytest.raises(ConfigError, match="cpt.replay names no general-text source"):
        cpt_recipe("cpt.replay_fraction=0.1")


def test_cpt_run_lowers_domain_perplexity_and_reports_general_text(cpt_recipe) -> None:
    from honed.pipeline.finetune import finetune

    run_dir = finetune(cpt_recipe("adapter=full"), progress=False)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] * 0.9
    found = json.loads((run_dir / "eval" / "cpt.json").read_text())
    domain = found["domain_validation"]
    assert domain["tuned_perplexity"] < domain["base_perplexity"]
    assert found["general_text"]["tokens"] > 0 and found["general_text"]["base_perplexity"] > 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["cpt"] == found
    assert summary["eval"]["tuned"]["perplexity"] < summary["eval"]["base"]["perplexity"]


def _run(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_validate_reports_documents_and_blocks(cpt_recipe, tiny_tokenizer) -> None:
    from honed.methods.registry import validate

    report = validate(cpt_recipe(), tiny_tokenizer)
    assert report["train"]["documents"] == 12 and report["train"]["rows_read"] == 12
    assert report["train"]["examples"] == -(-report["train"]["document_tokens"] // 64)
    assert report["validation"]["documents"] == 1
