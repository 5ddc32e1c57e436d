"""The training methods a recipe's `method` names, each reduced to the parts that differ.

Every method runs through the same `sft.finetune` (run directory, memory check, base and tuned
evaluation, report) and the same `loop.train_loop`. A method only says how its examples are built, how
they are batched and what the loss is, and, where it needs them, a pass over the frozen model before
training (DPO's reference log-probabilities) and method metrics on held-out data afterwards.

Methods are found by name in `MODULES`, an explicit table (a recipe may arrive over HTTP and must never
name an import path). Each module defines `METHOD = Method(...)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from honed.data.tokenize import Encoded

MODULES = {
    "sft": "honed.training.sft",
    "cpt": "honed.training.cpt",
    "dpo": "honed.training.dpo",
    "distill": "honed.training.distill",
}


def _same(examples: list) -> list[Encoded]:
    return examples


@dataclass(frozen=True)
class Method:
    """What one training method contributes to a run.

    - `data(recipe, tokenizer, run_dir) -> (train, validation | None)`: tokenized examples (anything with
      `num_tokens`); writes the run's data/ report.
    - `batching(recipe, cfg, tokenizer, device) -> (collate, loss_fn)`: for `loop.train_loop`; `cfg` is
      the recipe's TrainConfig with `auto` resolved for the device; the method's own settings come from
      `recipe` (its `dpo` or `distill` section).
    - `before_training(model, tokenizer, train, validation, recipe, run_dir)`: runs on the loaded base
      model before the adapter is attached (DPO: cache the reference log-probabilities).
    - `after_training(model, tokenizer, validation, recipe, run_dir) -> dict`: method metrics on held-out
      data, written to eval/<method>.json and into summary.json.
    - `sequences(train) -> list[Encoded]`: the sequences the model runs per example, for the memory
      estimate (a preference pair is two).
    - `check_split(recipe, tokenizer, split) -> dict`: the split's data report without training or side
      effects (`honed validate`); default: SFT's view of the rows.
    """

    name: str
    data: Callable[..., tuple[list[Any], list[Any] | None]]
    batching: Callable[..., tuple[Callable, Callable]]
    before_training: Callable[..., None] | None = None
    after_training: Callable[..., dict[str, Any]] | None = None
    sequences: Callable[[list[Any]], list[Encoded]] = _same
    check_split: Callable[..., dict[str, Any]] | None = None


def get_method(name: str) -> Method:
    """The method `name` (a key of MODULES; the recipe schema only admits those)."""
    return importlib.import_module(MODULES[name]).METHOD


def validate(recipe, tokenizer=None) -> dict[str, Any]:
    """Check a recipe's data without training: read every row and tokenize it as the recipe's method
    will; return the data report per split (`honed validate`)."""
    from honed.data import dataset

    check_split = get_method(recipe.method).check_split
    if check_split is None:
        return dataset.validate(recipe, tokenizer)
    if tokenizer is None:
        from honed.models.load import load_tokenizer, resolve_base

        folder = resolve_base(recipe.model.base, recipe.model.revision).folder
        tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    splits = ["train"] + (["validation"] if recipe.data.validation or recipe.data.holdout_fraction else [])
    return {split: check_split(recipe, tokenizer, split) for split in splits}
