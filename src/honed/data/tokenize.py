"""Render conversations with the model's own chat template and build the loss mask.

`render_prompt` is the one function that turns prompt messages into the text a model continues: training,
evaluation and serving all call it, so the three can never drift apart. `encode_example` renders a whole
conversation and labels exactly the assistant answers plus their end-of-turn token; every other token
(system, user, role headers, padding) gets the label -100 and no loss.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from honed.data.formats import RowError

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass
class Encoded:
    """A tokenized training example: ids and labels of equal length (labels -100 where no loss)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_labels(self) -> int:
        return sum(label != IGNORE for label in self.labels)

    @property
    def num_tokens(self) -> int:
        """Tokens the example puts through the model (what batching groups and packing lays out by)."""
        return len(self.input_ids)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The text a model should continue to answer `messages` (chat template + generation prompt)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_template_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's chat template: training records it, export and serving check it, so a
    model is never served or exported with a template other than the one it was trained with."""
    import hashlib
    import json

    template = tokenizer.chat_template
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256((text or "").encode()).hexdigest()


def render_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The whole conversation, answers included, as the chat template writes it."""
    return tokenizer.apply_chat_template(messages, tokenize=False)


def answer_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant answer + end-of-turn token."""
    full = render_conversation(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = render_prompt(tokenizer, messages[:i])
        upto = render_conversation(tokenizer, messages[: i + 1])
        if not full.startswith(prefix) or not full.startswith(upto) or not upto.startswith(prefix):
            raise RowError(
                "the chat template does not render this conversation as a growing prefix, so the "
                "answer cannot be located for the loss mask"
            )
        start = len(prefix)
        spans.append((start, _end_of_turn(tokenizer, upto, start + len(message["content"]))))
    return full, spans


def _end_of_turn(tokenizer: PreTrainedTokenizerBase, upto: str, content_end: int) -> int:
    """Where the answer's end-of-turn token ends (the template's text after it, e.g. a newline, is not
    trained: the model stops at the token)."""
    eos = tokenizer.eos_token or ""
    found = upto.find(eos, content_end) if eos else -1
    return found + len(eos) if found >= 0 else len(upto)


def encode_example(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> Encoded:
    """Tokenize a conversation; label the assistant answers and their end-of-turn tokens only."""
    text, spans = answer_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoding["input_ids"]
    labels = [IGNORE] * len(ids)
    for index, (start, _end) in enumerate(encoding["offset_mapping"]):
        if any(span_start <= start < span_end for span_start, span_end in spans):
            labels[index] = ids[index]
    if all(label == IGNORE for label in labels):
        raise RowError("the answer is empty after tokenization; nothing to learn from this row")
    return Encoded(ids, labels)


def render_masked(tokenizer: PreTrainedTokenizerBase, encoded: Encoded) -> str:
    """The example's text with the trained (labelled) tokens wrapped in [[ ]]: the loss mask made visible."""
    parts = []
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    # Decode whole runs, not single tokens: a byte-level token may hold part of a multi-byte character.
    for trained, run in itertools.groupby(pairs, key=lambda pair: pair[1] != IGNORE):
        text = tokenizer.decode([token for token, _ in run])
        parts.append(f"[[{text}]]" if trained else text)
    return "".join(parts)


def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[dict[str, str]],
    chosen: str,
    rejected: str,
    max_prompt_len: int | None = None,
) -> tuple[Encoded, Encoded]:
    """The prompt followed by each answer, rendered with the chat template; only the final answer (and its
    end-of-turn token) is labelled, not earlier assistant turns of the prompt. With `max_prompt_len`, each
    keeps only its last that many prompt tokens."""
    pair = []
    for answer in (chosen, rejected):
        encoded = _final_answer_only(
            encode_example(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
        )
        pair.append(_keep_last_prompt_tokens(encoded, max_prompt_len))
    return pair[0], pair[1]


def _final_answer_only(encoded: Encoded) -> Encoded:
    """Unlabel every token before the last run of labels (the final answer): the prompt's earlier assistant
    turns are context here, shared by both answers, not what the preference is about."""
    start = max(i for i, label in enumerate(encoded.labels) if label != IGNORE)
    while start > 0 and encoded.labels[start - 1] != IGNORE:
        start -= 1
    return Encoded(encoded.input_ids, [IGNORE] * start + encoded.labels[start:])


def _keep_last_prompt_tokens(encoded: Encoded, max_prompt_len: int | None) -> Encoded:
    """Drop the oldest prompt tokens (those before the first label) beyond `max_prompt_len`."""
    start = next(i for i, label in enumerate(encoded.labels) if label != IGNORE)
    if max_prompt_len is None or start <= max_prompt_len:
        return encoded
    cut = start - max_prompt_len
    return Encoded(encoded.input_ids[cut:], encoded.labels[cut:])
