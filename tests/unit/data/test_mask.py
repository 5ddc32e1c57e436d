"""The loss mask, token by token: exactly each assistant answer and its end-of-turn token are trained."""

from __future__ import annotations

import pytest

from honed.data.formats import RowError
from honed.data.tokenize import IGNORE, encode_example, render_conversation, render_masked, render_prompt

END = "<|im_end|>"

CONVERSATION = [
    {"role": "system", "content": "You answer in one short line."},
    {"role": "user", "content": "Say hi."},
    {"role": "assistant", "content": "hi"},  # also appears inside the user turn: position, not text, decides
    {"role": "user", "content": "Now list two drinks, one per line, and a café."},
    {"role": "assistant", "content": "latte\nmocha, café"},
]


def _labelled_runs(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) token index ranges of contiguous labelled tokens."""
    runs, start = [], None
    for index, label in enumerate([*labels, IGNORE]):
        if label != IGNORE and start is None:
            start = index
        elif label == IGNORE and start is not None:
            runs.append((start, index))
            start = None
    return runs


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _check_mask(tokenizer, messages: list[dict[str, str]]) -> None:
    encoded = encode_example(tokenizer, messages)
    ids, labels = encoded.input_ids, encoded.labels
    assert len(ids) == len(labels)
    # Every token is either trained on its own id or ignored.
    assert all(label in (IGNORE, token) for token, label in zip(ids, labels, strict=True))
    # The tokens are the rendered conversation, nothing added or lost.
    assert _decode(tokenizer, ids) == render_conversation(tokenizer, messages)

    runs = _labelled_runs(tokenizer, ids, labels)
    answers = [m["content"] + END for m in messages if m["role"] == "assistant"]
    assert [_decode(tokenizer, ids[a:b]) for a, b in runs] == answers
    assert encoded.num_labels == sum(b - a for a, b in runs)
    for _, end in runs:
        # What follows the end-of-turn token (the template's newline) is not trained.
        if end < len(ids):
            assert labels[end] == IGNORE
            assert _decode(tokenizer, ids[end : end + 1]) == "\n"


def _check_prompt_prefix(tokenizer, messages: list[dict[str, str]]) -> None:
    full = render_conversation(tokenizer, messages)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = render_prompt(tokenizer, messages[:i])
            assert full.startswith(prompt)
            assert full[len(prompt) :].startswith(message["content"] + END)


def test_mask_labels_exactly_the_answers_tiny(tiny_tokenizer) -> None:
    _check_mask(tiny_tokenizer, CONVERSATION)


def test_mask_single_turn_without_system_tiny(tiny_tokenizer) -> None:
    _check_mask(tiny_tokenizer, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])


def test_prompt_is_a_prefix_of_the_conversation_tiny(tiny_tokenizer) -> None:
    _check_prompt_prefix(tiny_tokenizer, CONVERSATION)
    prompt = render_prompt(tiny_tokenizer, CONVERSATION[:-1])
    assert prompt.endswith("<|im_start|>assistant\n")


def test_render_masked_brackets_the_answers(tiny_tokenizer) -> None:
    shown = render_masked(tiny_tokenizer, encode_example(tiny_tokenizer, CONVERSATION))
    assert shown.count("[[") == shown.count("]]") == 2
    assert f"[[hi{END}]]\n" in shown
    assert f"[[latte\nmocha, café{END}]]" in shown
    assert shown.replace("[[", "").replace("]]", "") == render_conversation(tiny_tokenizer, CONVERSATION)


def test_empty_answer_still_trains_the_end_of_turn(tiny_tokenizer) -> None:
    # The end-of-turn token alone is still trained, so an empty answer teaches the model to stop.
    encoded = encode_example(
        tiny_tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]
    )
    assert [
        _decode(tiny_tokenizer, [t])
        for t, lab in zip(encoded.input_ids, encoded.labels, strict=True)
        if lab != IGNORE
    ] == [END]


def test_non_prefix_template_is_a_row_error(tiny_tokenizer) -> None:
    class Reversing:
        """A chat template that writes the turns newest first, so the prompt is not a prefix."""

        eos_token = END

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            text = "".join(f"{m['role']}: {m['content']}{END}\n" for m in reversed(messages))
            return text + ("assistant: " if add_generation_prompt else "")

    with pytest.raises(RowError, match="growing prefix"):
        encode_example(Reversing(), CONVERSATION)


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from honed.models.load import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base("smollm2-135m-instruct").folder)


@pytest.mark.slow
def test_mask_labels_exactly_the_answers_embedded(embedded_tokenizer) -> None:
    _check_mask(embedded_tokenizer, CONVERSATION)
    _check_prompt_prefix(embedded_tokenizer, CONVERSATION)
    assert embedded_tokenizer.eos_token == END
