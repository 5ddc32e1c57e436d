"""Supervised fine-tuning (`method: sft`), the default method: chat rows rendered through the model's
template, the loss only on the assistant's answers (the completion loss, packed or padded batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from honed.config.schema import Recipe, TrainConfig
from honed.data.cache import cached_examples
from honed.data.tokenize import Encoded, render_masked
from honed.methods.base import Examples, Splits, sft_check_split
from honed.runs.results import write_data_report
from honed.training.loop import Collate, LossFn
from honed.training.speed import batching


def sft_data(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> Splits:
    """Tokenize both splits and write data/report.json and a rendered, mask-highlighted sample."""
    train, train_report = cached_examples(recipe.data, tokenizer, "train")
    report = {"train": train_report.as_dict()}
    validation = None
    if recipe.data.has_validation:
        validation, val_report = cached_examples(recipe.data, tokenizer, "validation")
        report["validation"] = val_report.as_dict()
    write_data_report(run_dir, recipe, report, render_masked(tokenizer, train[0]))
    return train, validation


def sft_batching(
    recipe: Recipe, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device
) -> tuple[Collate, LossFn]:
    """Packed or padded batches and the completion loss."""
    return batching(cfg, tokenizer.pad_token_id, device)


class Sft:
    """Supervised fine-tuning: no pass before or after training, one sequence per example."""

    name = "sft"

    def data(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> Splits:
        return sft_data(recipe, tokenizer, run_dir)

    def batching(
        self, recipe: Recipe, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device
    ) -> tuple[Collate, LossFn]:
        return sft_batching(recipe, cfg, tokenizer, device)

    def before_training(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        train: Examples,
        validation: Examples | None,
        recipe: Recipe,
        run_dir: Path,
    ) -> None:
        return None

    def after_training(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        validation: Examples,
        recipe: Recipe,
        run_dir: Path,
    ) -> dict[str, Any] | None:
        return None

    def sequences(self, train: Examples) -> list[Encoded]:
        return train

    def check_split(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase, split: str) -> dict[str, Any]:
        return sft_check_split(recipe, tokenizer, split)


METHOD = Sft()
