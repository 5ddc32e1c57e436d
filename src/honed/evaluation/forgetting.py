"""A small general probe for forgetting: did fine-tuning on one task damage the model elsewhere?

Two numbers, each for base and tuned, on text honed ships itself (written for this project):
- `general_text_perplexity`: perplexity on a few paragraphs of everyday English prose;
- `chat_answer_perplexity`: perplexity of the *base* model's own greedy answers to general chat prompts.
  The base model scores its own answers low; a tuned model that has drifted away from general chat
  behaviour scores them higher.
A rise in either is a sign of forgetting; the report shows both next to the task metrics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from honed.data.tokenize import IGNORE, Encoded, render_prompt
from honed.evaluation.likelihood import sequence_nll
from honed.models.decoding import generate

GENERAL_TEXT = [
    "Most towns grew up where people could cross a river or meet a road. A bridge, a market and a well were "
    "enough to bring traders together, and once they came, bakers, smiths and innkeepers followed. Over the "
    "centuries the market square became the place for news, festivals and arguments about the weather.",
    "Bread is made from flour, water, salt and yeast. The yeast feeds on sugars in the dough and releases "
    "gas, which makes the dough rise. Kneading builds a network of gluten that traps the gas, and baking "
    "sets the structure so that the loaf keeps its shape when it cools.",
    "When you plan a long walk, check the weather, pack water and something to eat, and tell someone where "
    "you are going. Good shoes matter more than expensive clothes. If the path becomes unclear, it is "
    "usually wiser to turn back than to push on in the hope that it will improve.",
    "The moon takes about a month to go around the Earth. As it moves, we see different parts of its "
    "sunlit side, which is why it seems to grow from a thin crescent to a full disc and shrink again. The "
    "same side always faces us, because the moon turns once on its axis for every trip around the planet.",
    "A good letter of thanks is short and specific. Say what the person did, why it helped, and what you "
    "plan to do next. People remember a sincere sentence about a real detail far longer than a page of "
    "general praise.",
    "Libraries lend more than books. Many offer quiet rooms for study, computers for people who have none "
    "at home, classes for children and help with forms. For a small town, the library is often the only "
    "warm public place where nobody expects you to buy anything.",
]

CHAT_PROMPTS = [
    "What is a good way to start learning to cook?",
    "Explain in two sentences why the sky is blue.",
    "Give me three tips for a job interview.",
    "Write a short friendly message inviting a neighbour for tea.",
    "What should I pack for a weekend trip to the mountains?",
    "How do plants get their energy?",
    "Suggest a name for a small bakery.",
    "What is the difference between weather and climate?",
]


def base_answers(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int = 48, batch_size: int = 8
) -> list[str]:
    """The base model's greedy answers to the chat prompts (scored later under each model)."""
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in CHAT_PROMPTS]
    return generate(model, tokenizer, prompts, max_new_tokens, batch_size)


def run_probe(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, answers: list[str], batch_size: int = 8
) -> dict[str, Any]:
    """General-text and base-answer perplexity of `model`."""
    texts = [_plain(tokenizer, text) for text in GENERAL_TEXT]
    chats = [_answer(tokenizer, prompt, answer) for prompt, answer in zip(CHAT_PROMPTS, answers, strict=True)]
    return {
        "general_text_perplexity": _perplexity(sequence_nll(model, tokenizer, texts, batch_size)),
        "chat_answer_perplexity": _perplexity(sequence_nll(model, tokenizer, chats, batch_size)),
        "base_answers": answers,
    }


def _plain(tokenizer: PreTrainedTokenizerBase, text: str) -> Encoded:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return Encoded(ids, [IGNORE, *ids[1:]])


def _answer(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str) -> Encoded:
    context = tokenizer(
        render_prompt(tokenizer, [{"role": "user", "content": prompt}]), add_special_tokens=False
    )["input_ids"]
    reply = tokenizer(answer + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
    return Encoded(context + reply, [IGNORE] * len(context) + reply)


def _perplexity(results: list[tuple[float, int]]) -> float:
    nll = sum(total for total, _ in results)
    tokens = sum(count for _, count in results)
    return math.exp(nll / tokens) if tokens else float("nan")
