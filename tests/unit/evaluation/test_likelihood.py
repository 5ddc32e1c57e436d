"""Likelihood tasks agree with transformers' own loss; choice picks the most likely answer."""

from __future__ import annotations

import math

import pytest
import torch

from honed.evaluation.likelihood import ChoiceTask, PerplexityTask
from honed.models.load import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, torch.float32, torch.device("cpu"))


def test_perplexity_equals_exp_of_transformers_loss(model, tiny_tokenizer):
    text = "The market square became the place for news and festivals."
    task = PerplexityTask()
    rows = task.run(model, tiny_tokenizer, [{"text": text}], batch_size=4)
    ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    metrics = task.aggregate([r["score"] for r in rows])
    assert metrics["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_perplexity_windows_long_texts_and_weighs_by_tokens(model, tiny_tokenizer):
    texts = [{"text": "abc " * 50}, {"text": "short one"}]
    whole = PerplexityTask(max_seq_len=1024).run(model, tiny_tokenizer, texts, batch_size=2)
    windowed = PerplexityTask(max_seq_len=32).run(model, tiny_tokenizer, texts, batch_size=2)
    assert windowed[0]["score"]["tokens"] < whole[0]["score"]["tokens"]  # each window loses its first token
    assert whole[1]["score"] == pytest.approx(windowed[1]["score"])


def test_choice_picks_the_choice_with_the_best_mean_logprob(model, tiny_tokenizer):
    rows = [
        {"question": "Pick one", "choices": ["aaaa", "zq", "hello"], "answer": 1},
        {"question": "Again", "choices": ["x", "yy"], "answer": "yy"},
    ]
    task = ChoiceTask()
    predictions = task.run(model, tiny_tokenizer, rows, batch_size=8)
    nll = ChoiceTask(length_normalize=False).run(model, tiny_tokenizer, rows, batch_size=8)
    for prediction in predictions + nll:
        assert prediction["prediction"] in ("aaaa", "zq", "hello", "x", "yy")
    assert predictions[1]["reference"] == "yy"
    metrics = task.aggregate([p["score"] for p in predictions])
    assert metrics["accuracy"] == sum(p["prediction"] == p["reference"] for p in predictions) / 2
