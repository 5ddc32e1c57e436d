"""A run's trained model: `final/adapter` (PEFT) or `final/model` (full weights), each saved with the
tokenizer and chat template, and loaded back onto the base for evaluation, export and serving."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from honed.config.schema import Recipe
from honed.errors import ConfigError
from honed.models.load import load_model, load_tokenizer, resolve_base, resolve_device, resolve_dtype


def final_dir(run_dir: Path, recipe: Recipe) -> Path:
    """Where the run's trained model lives: final/model for a full fine-tune, final/adapter otherwise."""
    return Path(run_dir) / "final" / ("model" if recipe.adapter == "full" else "adapter")


def save_final(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, run_dir: Path, recipe: Recipe
) -> Path:
    """Write final/adapter (PEFT) or final/model (full weights), each with the tokenizer and chat template."""
    target = final_dir(run_dir, recipe)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def load_tuned(run_dir: Path, recipe: Recipe) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
    """The trained model of a finished run (base + adapter, or the full weights) and its tokenizer.

    A qlora run's adapter is put on the float base, not the 4-bit one it trained on: that is the model
    `honed export --merged` writes and a server loads the adapter onto, and it needs no bitsandbytes. It
    differs from the model the run scored at the end of training by the base's quantisation error."""
    device = resolve_device(recipe.train.device)
    dtype = resolve_dtype(recipe.model.dtype, device)
    final = final_dir(run_dir, recipe)
    if not final.is_dir():
        raise ConfigError(
            f"{run_dir}: the run has no {final.relative_to(run_dir)} yet (unfinished? resume it "
            f"with: honed train --resume {run_dir})"
        )
    tokenizer = load_tokenizer(final, recipe.model.trust_remote_code)
    if recipe.adapter == "full":
        return load_model(final, dtype, device, recipe.model.trust_remote_code), tokenizer
    folder = resolve_base(recipe.model.base, recipe.model.revision).folder
    base = load_model(folder, dtype, device, recipe.model.trust_remote_code)
    return PeftModel.from_pretrained(base, final).to(device), tokenizer
