"""Batched generation equals one-at-a-time greedy `model.generate`; stop strings and sampling behave."""

from __future__ import annotations

import pytest
import torch

from honed.models.decoding import Sampling, generate
from honed.models.load import load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir, torch.float32, torch.device("cpu"))


def _prompts(tokenizer):
    texts = ["hi", "a much longer prompt with several words in it", "mid size", "x" * 40, "two lattes", "?"]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]


def _one_at_a_time(model, tokenizer, prompt, max_new_tokens):
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out = model.generate(
        input_ids=ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.parametrize("batch_size", [1, 3, 6])
def test_batched_greedy_equals_one_at_a_time_generate(model, tiny_tokenizer, batch_size):
    prompts = _prompts(tiny_tokenizer)
    expected = [_one_at_a_time(model, tiny_tokenizer, p, 24) for p in prompts]
    assert generate(model, tiny_tokenizer, prompts, 24, batch_size=batch_size) == expected


def test_rows_that_finish_leave_the_batch_without_changing_the_others(model, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    full = generate(model, tiny_tokenizer, prompts, 24, batch_size=6)
    # A stop string taken from one row's output ends that row early; every other row is unchanged.
    stop = full[0][3:6]
    cut = generate(model, tiny_tokenizer, prompts, 24, batch_size=6, stop=[stop])
    assert cut[0] == full[0][: full[0].find(stop)].strip()
    for before, after in zip(full[1:], cut[1:], strict=True):
        assert after == (before[: before.find(stop)].strip() if stop in before else before)


def test_sampling_is_reproducible_for_a_seed(model, tiny_tokenizer):
    prompts = _prompts(tiny_tokenizer)
    first = generate(
        model, tiny_tokenizer, prompts, 12, sampling=Sampling(temperature=1.0, top_p=0.9, seed=3)
    )
    again = generate(
        model, tiny_tokenizer, prompts, 12, sampling=Sampling(temperature=1.0, top_p=0.9, seed=3)
    )
    other = generate(
        model, tiny_tokenizer, prompts, 12, sampling=Sampling(temperature=1.0, top_p=0.9, seed=4)
    )
    assert first == again and first != other
