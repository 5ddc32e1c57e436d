"""What each stored request with feedback becomes: an SFT example, a preference pair, or nothing (counted).

- a correction that differs from the served answer: an SFT example whose answer is the correction, and a
  preference pair (chosen: the correction, rejected: the served answer);
- otherwise a rating of at least `min_rating`: the served answer becomes an SFT example (unless it was cut
  off by max_tokens or is empty);
- anything else is dropped with a reason: unrated, rating below min_rating, a completion request (its
  prompt is raw text the model continued, not a conversation, so it cannot become a chat example without
  training a prompt the model was never served), malformed messages.

Duplicates are dropped with `data.dedup.Deduplicator`, comparing content: the conversation's text without
system messages and without the old run's template text (a templated run's prompts share their template,
which would make every row a near duplicate of every other). Held-out rows are never trained on: a
feedback row that repeats one is dropped. This module knows nothing about stores, files or recipes.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from honed.data.dedup import Deduplicator
from honed.data.formats import ROLES

# OpenAI's "developer" role is the newer name for "system".
_ROLE_ALIASES = {"developer": "system"}


@dataclass
class Example:
    """One SFT example from feedback: the request's messages followed by the answer to learn."""

    key: str  # "feedback:<request id>"
    messages: list[dict[str, str]]
    target: str  # "correction" or "response": where the answer came from
    entry: dict[str, Any]

    def row(self) -> dict[str, Any]:
        """The chat-format row, with where it came from under `feedback`."""
        return {"messages": self.messages, "feedback": _provenance(self.entry, self.target)}


@dataclass
class Pair:
    """One preference pair from feedback, in the row shape `formats.to_preference` reads."""

    key: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    entry: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "feedback": _provenance(self.entry, "correction"),
        }


@dataclass
class Sorted:
    """The examples and pairs the entries give, and why the rest gave nothing (reason -> count)."""

    examples: list[Example] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    pairs_dropped: Counter[str] = field(default_factory=Counter)


def sort_entries(entries: Iterable[dict[str, Any]], min_rating: int) -> Sorted:
    """Turn stored entries (`RequestStore.entries()`) into examples and pairs; corrections come first,
    so that among duplicates a human-written answer is the one kept."""
    found = Sorted()
    for entry in entries:
        reason = _use_entry(entry, min_rating, found)
        if reason:
            found.dropped[reason] += 1
    found.examples.sort(key=lambda e: e.target != "correction")  # stable: oldest first within each
    return found


def _use_entry(entry: dict[str, Any], min_rating: int, found: Sorted) -> str | None:
    """Add what one entry gives to `found`; return the reason it gives no SFT example, if any."""
    feedback = entry.get("feedback")
    if feedback is None:
        return "unrated"
    if entry["kind"] != "chat":
        return "completion_request"
    prompt = chat_prompt(entry.get("messages"))
    if prompt is None:
        return "malformed_messages"
    key, response = f"feedback:{entry['id']}", entry["response"]
    correction = feedback.get("correction")
    if correction and correction.strip() != response.strip():
        found.examples.append(Example(key, [*prompt, _answer(correction)], "correction", entry))
        if response.strip():
            found.pairs.append(Pair(key, prompt, correction, response, entry))
        else:
            found.pairs_dropped["empty_response"] += 1
        return None
    if feedback["rating"] < min_rating:
        return "below_min_rating"
    if entry["finish_reason"] == "length":
        return "truncated_answer"  # cut off by max_tokens: not an answer to learn
    if not response.strip():
        return "empty_answer"
    found.examples.append(Example(key, [*prompt, _answer(response)], "response", entry))
    return None


def chat_prompt(messages: Any) -> list[dict[str, str]] | None:
    """A request's messages as honed's {role, content} messages, or None when they cannot be: a role other
    than system/developer/user/assistant, content that is not text, or no user turn to answer last."""
    if not isinstance(messages, list) or not messages:
        return None
    out = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else None
        content = _text_content(message.get("content"))
        if role not in ROLES or content is None:
            return None
        out.append({"role": role, "content": content})
    return out if out[-1]["role"] == "user" else None


def _text_content(content: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of {"type": "text", "text"} parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    return None


def _answer(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _provenance(entry: dict[str, Any], target: str) -> dict[str, Any]:
    feedback = entry["feedback"]
    return {
        "request_id": entry["id"],
        "feedback_id": feedback["id"],
        "model": entry["model"],
        "rating": feedback["rating"],
        "target": target,
    }


# ---- duplicates ----


class ContentText:
    """The text duplicates are compared on: a conversation's non-system messages, with the old run's
    template text taken out of the last prompt and of the answer (`data.prompt_template`/
    `completion_template`), so templated rows compare on the fields they were filled with."""

    def __init__(self, prompt_template: str | None = None, completion_template: str | None = None) -> None:
        self.prompt_literals = _literals(prompt_template)
        self.answer_literals = _literals(completion_template)

    def __call__(self, messages: list[dict[str, str]]) -> str:
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        parts = []
        for i, message in enumerate(messages):
            if message["role"] == "system":
                continue
            text = message["content"]
            if i == last_user:
                text = _strip_literals(text, self.prompt_literals)
            elif i == len(messages) - 1 and message["role"] == "assistant":
                text = _strip_literals(text, self.answer_literals)
            parts.append(text)
        return "\n".join(parts)


def _literals(template: str | None) -> list[str]:
    """The fixed text pieces of a format string, in order (empty and blank pieces left out)."""
    if not template:
        return []
    return [literal for literal, _, _, _ in string.Formatter().parse(template) if literal.strip()]


def _strip_literals(text: str, literals: list[str]) -> str:
    """Cut each literal out of text where it occurs in order; the rest (the filled fields) stays."""
    kept, pos = [], 0
    for literal in literals:
        found = text.find(literal, pos)
        if found < 0:
            continue
        kept.append(text[pos:found])
        pos = found + len(literal)
    kept.append(text[pos:])
    return "\n".join(piece for piece in kept if piece.strip())


@dataclass
class Reference:
    """A row feedback is compared against: `origin` is "train" or "validation"."""

    key: str
    origin: str
    messages: list[dict[str, str]]


def deduplicate(
    found: Sorted, references: Iterable[Reference], text: ContentText, near_threshold: float
) -> Sorted:
    """Keep the examples that repeat (exactly or nearly) no reference row and no earlier kept example,
    and the pairs that repeat no held-out row and no earlier pair; count the rest by reason, e.g.
    `near_duplicate_of_validation`, `exact_duplicate_of_feedback`."""
    rows = Deduplicator(threshold=near_threshold)
    held_out = Deduplicator(threshold=near_threshold)
    for ref in references:
        rows.add(f"{ref.origin}:{ref.key}", text(ref.messages))
        if ref.origin == "validation":
            held_out.add(f"validation:{ref.key}", text(ref.messages))
    kept = Sorted(dropped=Counter(found.dropped), pairs_dropped=Counter(found.pairs_dropped))
    for example in found.examples:
        duplicate = rows.check_and_add(example.key, text(example.messages))
        if duplicate:
            kept.dropped[_reason(duplicate)] += 1
        else:
            kept.examples.append(example)
    pairs = Deduplicator(threshold=near_threshold)
    for pair in found.pairs:
        conversation = [*pair.prompt, _answer(pair.chosen)]
        duplicate = held_out.find(text(conversation)) or pairs.check_and_add(
            pair.key, text(conversation) + "\n" + pair.rejected
        )
        if duplicate:
            kept.pairs_dropped[_reason(duplicate)] += 1
        else:
            kept.pairs.append(pair)
    return kept


def _reason(duplicate: tuple[str, str]) -> str:
    kind, key = duplicate
    return f"{kind}_duplicate_of_{key.split(':', 1)[0]}"
