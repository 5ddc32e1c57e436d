"""Supervised fine-tuning (`method: sft`), the default method: chat rows rendered through the model's
template, the loss only on the assistant's answers (the completion loss, packed or padded batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from honed.config.schema import Recipe, TrainConfig
from honed.data.cache import cached_examples
from honed.data.tokenize import render_masked
from honed.methods.base import Examples, Splits, one_sequence_each, sft_check_split
from honed.runs.results import write_data_report
from honed.training import speed
from honed.training.loop import Collate, LossFn


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
    return speed.batching(cfg, tokenizer.pad_token_id, device)


# This module is a `methods.base.Method`: its hooks (mypy checks them in methods/registry.py).
data = sft_data
batching = sft_batching
sequences = one_sequence_each
check_split = sft_check_split


def before_training(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: Examples,
    validation: Examples | None,
    recipe: Recipe,
    run_dir: Path,
) -> None:
    """SFT needs no pass over the base model before training."""


def after_training(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    validation: Examples,
    recipe: Recipe,
    run_dir: Path,
) -> dict[str, Any] | None:
    """SFT's held-out metrics are the eval task's; it has none of its own."""
    return None
