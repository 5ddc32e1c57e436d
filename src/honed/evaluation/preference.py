"""The `preference` task: does the model give the chosen answer a higher log-probability than the rejected?

A likelihood task (`likelihood.ModelTask`) over preference rows (`chosen`, `rejected`, optional `prompt`;
every form `formats.to_preference` reads, HH-RLHF transcripts included). Each answer is scored as the
assistant's reply to the prompt, rendered with the chat template exactly as `method: dpo` trains it
(`dpo.encode_pair`), end-of-turn token included. Scoring base and tuned on the same rows gives the
before/after comparison of a preference run with the usual bootstrap intervals.

The primary metric, `accuracy`, compares per-token (length-normalised) log-probabilities, as `ChoiceTask`
does by default: summed log-probabilities favour whichever answer is shorter, which in preference data often
says more about length than preference. `accuracy_summed` compares the sums (DPO's own scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from honed.data.formats import RowError, to_preference
from honed.data.tokenize import Encoded, encode_pair
from honed.errors import DataError
from honed.evaluation.likelihood import sequence_nll

_MEANS = ("accuracy", "accuracy_summed", "margin_per_token", "margin")


class PreferenceTask:
    """Chosen-vs-rejected log-probability preference per row; higher accuracy is better.

    Per row: `accuracy` (chosen's per-token log-prob is higher), `accuracy_summed` (summed log-prob is
    higher), `margin_per_token` and `margin` (chosen minus rejected, per token and summed, in nats).
    `max_prompt_len` keeps only the last that many prompt tokens (set it to the recipe's
    `dpo.max_prompt_len` to score what training saw); `system_prompt` is put before every prompt.
    """

    name = "preference"
    primary_metric = "accuracy"
    lower_is_better: frozenset[str] = frozenset()

    def __init__(self, max_prompt_len: int | None = None, system_prompt: str | None = None) -> None:
        self.max_prompt_len, self.system_prompt = max_prompt_len, system_prompt

    def run(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        rows: list[Mapping[str, Any]],
        batch_size: int,
    ) -> list[dict[str, Any]]:
        sequences: list[Encoded] = []
        texts: list[tuple[str, str, str]] = []
        for index, row in enumerate(rows):
            try:
                prompt, chosen, rejected = to_preference(dict(row))
            except RowError as exc:
                raise DataError(f"preference: row {index + 1}: {exc}") from None
            if self.system_prompt and prompt[0]["role"] != "system":
                prompt = [{"role": "system", "content": self.system_prompt}, *prompt]
            sequences.extend(encode_pair(tokenizer, prompt, chosen, rejected, self.max_prompt_len))
            texts.append((prompt[-1]["content"], chosen, rejected))
        scored = sequence_nll(model, tokenizer, sequences, batch_size)
        return [
            self._prediction(*text, scored[2 * index], scored[2 * index + 1])
            for index, text in enumerate(texts)
        ]

    @staticmethod
    def _prediction(
        prompt: str,
        chosen: str,
        rejected: str,
        chosen_nll: tuple[float, int],
        rejected_nll: tuple[float, int],
    ) -> dict[str, Any]:
        (c_nll, c_tokens), (r_nll, r_tokens) = chosen_nll, rejected_nll
        per_token = -c_nll / max(c_tokens, 1) + r_nll / max(r_tokens, 1)
        return {
            "prompt": prompt,
            "reference": chosen,
            "prediction": chosen if per_token > 0 else rejected,
            "score": {
                "accuracy": float(per_token > 0),
                "accuracy_summed": float(r_nll > c_nll),
                "margin_per_token": per_token,
                "margin": r_nll - c_nll,
                "chosen_logp": -c_nll,
                "rejected_logp": -r_nll,
            },
        }

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        n = len(scores)
        return {key: sum(s[key] for s in scores) / max(1, n) for key in _MEANS} | {"rows": n}

    def aggregate_sums(self, sums: Mapping[str, Any], rows: int) -> dict[str, Any]:
        """The corpus metrics from per-key column sums (the comparison's fast bootstrap)."""
        return {key: sums[key] / max(1, rows) for key in _MEANS}
