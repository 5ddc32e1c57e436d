"""The training methods a recipe's `method` names, each reduced to the parts that differ.

Every method runs through the same `pipeline.finetune` (run directory, memory check, base and tuned
evaluation, report) and the same `training.loop.train_loop`. A method only says how its examples are
built, how they are batched and what the loss is, and, where it needs them, a pass over the frozen model
before training (DPO's reference log-probabilities) and method metrics on held-out data afterwards.

`Method` is the contract. Each method is a module (sft.py, cpt.py, dpo.py, distill.py) whose functions
satisfy it; mypy checks each module against it where methods/registry.py puts them in its name table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from honed.config.schema import Recipe, TrainConfig
from honed.data import dataset
from honed.data.tokenize import Encoded
from honed.training.loop import Collate, LossFn

# A method's examples: anything with `num_tokens` (Encoded, a DPO pair, a distillation example).
Examples = list[Any]
Splits = tuple[Examples, Examples | None]


class Method(Protocol):
    """What one training method contributes to a run (a method module's functions, without `self`)."""

    def data(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> Splits:
        """Tokenized (train, validation or None) examples; writes the run's data/ report."""
        ...

    def batching(
        self, recipe: Recipe, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device
    ) -> tuple[Collate, LossFn]:
        """(collate, loss_fn) for `loop.train_loop`; `cfg` is the recipe's TrainConfig with `auto` resolved
        for the device; the method's own settings come from `recipe` (its `dpo` or `distill` section)."""
        ...

    def before_training(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        train: Examples,
        validation: Examples | None,
        recipe: Recipe,
        run_dir: Path,
    ) -> None:
        """Runs on the loaded base model before the adapter is attached (DPO: cache the reference
        log-probabilities); most methods do nothing."""
        ...

    def after_training(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        validation: Examples,
        recipe: Recipe,
        run_dir: Path,
    ) -> dict[str, Any] | None:
        """Method metrics on held-out data, written to eval/<method>.json and into summary.json; None:
        the method has none."""
        ...

    def sequences(self, train: Examples) -> list[Encoded]:
        """The sequences the model runs per example, for the memory estimate (a preference pair is two)."""
        ...

    def check_split(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase, split: str) -> dict[str, Any]:
        """The split's data report without training or side effects (`honed validate`)."""
        ...


def one_sequence_each(train: Examples) -> list[Encoded]:
    """`sequences` of a method whose examples are the sequences the model runs (SFT, CPT)."""
    return train


def sft_check_split(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, split: str) -> dict[str, Any]:
    """SFT's view of a split's rows (read, render, tokenize, mask, length rule): the data report."""
    return dataset.check_split(recipe.data, tokenizer, split)
