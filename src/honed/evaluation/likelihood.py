"""Tasks scored from the model's log-likelihoods instead of generated text: perplexity and multiple choice.

A `ModelTask` reads raw data rows and the model; it returns per-row predictions with a `score` dict, and
aggregates them like a string task does, so comparisons and confidence intervals treat both kinds alike.
Log-likelihoods come from `honed.models.nll.row_nll`, the same code that computes the training loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import PreTrainedTokenizerBase

from honed.data.tokenize import IGNORE, Encoded, render_prompt
from honed.errors import DataError
from honed.models.nll import collate, row_nll


@runtime_checkable
class ModelTask(Protocol):
    """A task that scores rows with the model itself (no generation)."""

    name: str
    primary_metric: str
    lower_is_better: frozenset[str]

    def run(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        rows: list[Mapping[str, Any]],
        batch_size: int,
    ) -> list[dict[str, Any]]:
        """Per-row predictions: {"reference", "prediction", "prompt", "score": {...}}."""
        ...

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        """Corpus metrics from per-row scores, plus "rows"."""
        ...


def sequence_nll(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sequences: list[Encoded], batch_size: int
) -> list[tuple[float, int]]:
    """(summed NLL, token count) of the labelled tokens of each sequence, batched, no gradients."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            sums, counts = row_nll(model, collate([sequences[i] for i in chosen], pad, device))
            for i, total, count in zip(chosen, sums, counts, strict=True):
                results[i] = (total, count)
    model.train(was_training)
    return results


class PerplexityTask:
    """Perplexity of raw text (`text_field`), in windows of `max_seq_len` tokens; lower is better.

    Per row: summed negative log-likelihood and token count; corpus perplexity is exp(total NLL / total
    tokens), so long documents weigh by their length.
    """

    name = "perplexity"
    primary_metric = "perplexity"
    row_metric = "nll_per_token"  # what stands for perplexity per row (regressions, by row)
    lower_is_better = frozenset({"perplexity", "nll_per_token"})

    def __init__(self, text_field: str = "text", max_seq_len: int = 1024) -> None:
        self.text_field, self.max_seq_len = text_field, max_seq_len

    def run(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        rows: list[Mapping[str, Any]],
        batch_size: int,
    ) -> list[dict[str, Any]]:
        windows, owner = [], []
        for index, row in enumerate(rows):
            text = row.get(self.text_field)
            if not isinstance(text, str) or not text:
                raise DataError(f"perplexity: row {index + 1} has no text in field {self.text_field!r}")
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            for start in range(0, len(ids), self.max_seq_len):
                chunk = ids[start : start + self.max_seq_len]
                if len(chunk) > 1:
                    windows.append(Encoded(chunk, [IGNORE, *chunk[1:]]))
                    owner.append(index)
        totals = [[0.0, 0] for _ in rows]
        for index, (nll, count) in zip(
            owner, sequence_nll(model, tokenizer, windows, batch_size), strict=True
        ):
            totals[index][0] += nll
            totals[index][1] += count
        return [
            {
                "prompt": str(row.get(self.text_field))[:200],
                "reference": "",
                "prediction": "",
                "score": {"nll": nll, "tokens": float(count), "nll_per_token": nll / max(count, 1)},
            }
            for row, (nll, count) in zip(rows, totals, strict=True)
        ]

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        nll = sum(s["nll"] for s in scores)
        tokens = sum(s["tokens"] for s in scores)
        per_token = nll / tokens if tokens else float("nan")
        return {
            "perplexity": math.exp(per_token) if tokens else float("nan"),
            "nll_per_token": per_token,
            "tokens": tokens,
            "rows": len(scores),
        }


class ChoiceTask:
    """Multiple choice by log-likelihood: the choice the model finds most likely after the prompt.

    Rows hold `prompt_field` (the question), `choices_field` (a list of strings) and `answer_field` (the
    index of the right choice, or its text). The prompt is rendered with the chat template, as in
    training; each choice is scored as the assistant's answer including the end-of-turn token. With
    `length_normalize` (default), choices compare by mean log-probability per token.
    """

    name = "choice"
    primary_metric = "accuracy"
    lower_is_better: frozenset[str] = frozenset()

    def __init__(
        self,
        prompt_field: str = "question",
        choices_field: str = "choices",
        answer_field: str = "answer",
        length_normalize: bool = True,
    ) -> None:
        self.prompt_field, self.choices_field, self.answer_field = prompt_field, choices_field, answer_field
        self.length_normalize = length_normalize

    def run(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        rows: list[Mapping[str, Any]],
        batch_size: int,
    ) -> list[dict[str, Any]]:
        sequences, owners = [], []
        for index, row in enumerate(rows):
            prompt = render_prompt(tokenizer, [{"role": "user", "content": str(row[self.prompt_field])}])
            context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for choice in self._choices(row, index):
                answer = tokenizer(choice + (tokenizer.eos_token or ""), add_special_tokens=False)[
                    "input_ids"
                ]
                sequences.append(Encoded(context + answer, [IGNORE] * len(context) + answer))
                owners.append(index)
        scores: list[list[float]] = [[] for _ in rows]
        for index, (nll, count) in zip(
            owners, sequence_nll(model, tokenizer, sequences, batch_size), strict=True
        ):
            scores[index].append(-nll / max(count, 1) if self.length_normalize else -nll)
        return [self._prediction(row, index, scores[index]) for index, row in enumerate(rows)]

    def _choices(self, row: Mapping[str, Any], index: int) -> list[str]:
        choices = row.get(self.choices_field)
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError(
                f"choice: row {index + 1} needs a list of at least 2 choices in {self.choices_field!r}"
            )
        return [str(c) for c in choices]

    def _prediction(self, row: Mapping[str, Any], index: int, scores: list[float]) -> dict[str, Any]:
        choices = self._choices(row, index)
        answer = row.get(self.answer_field)
        gold = (
            answer
            if isinstance(answer, int)
            else choices.index(str(answer))
            if str(answer) in choices
            else -1
        )
        best = max(range(len(scores)), key=scores.__getitem__)
        return {
            "prompt": str(row[self.prompt_field]),
            "reference": choices[gold] if gold >= 0 else str(answer),
            "prediction": choices[best],
            "score": {"accuracy": float(best == gold)},
        }

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        return {"accuracy": sum(s["accuracy"] for s in scores) / max(1, len(scores)), "rows": len(scores)}
