"""The teacher of `method: distill`: loaded, used and freed before the student loads, and the files its
results are kept in under the run directory (written atomically, so a half-written cache is never read)."""

from __future__ import annotations

import gc
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from honed.config.schema import DistillConfig, Recipe
from honed.errors import ConfigError
from honed.models.load import load_model, load_tokenizer, resolve_base, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

T = TypeVar("T")


DISTILLED = "distilled.jsonl"  # sequence mode: the teacher's answers, under run_dir/data/


TARGETS = "teacher_topk.safetensors"  # logit mode: the teacher's top-k, under run_dir/data/


SUMMARY = "distill.json"  # what the data step found, under run_dir/data/


BASE_KL = "distill_base.json"  # the base student's KL to the teacher, under run_dir/eval/


def distill_config(recipe: Recipe) -> DistillConfig:
    """The recipe's `distill` section. The schema requires one when `method` is distill, so None here means
    a recipe that skipped validation (built with `model_construct`, or changed after it)."""
    if recipe.distill is None:
        raise ConfigError("method 'distill' needs a distill section with at least distill.teacher")
    return recipe.distill


def load_teacher(recipe: Recipe) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The teacher model (on the run's device, in the recipe's dtype) and its tokenizer."""
    teacher = distill_config(recipe).teacher
    folder = resolve_base(teacher).folder
    device = resolve_device(recipe.train.device)
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    dtype = resolve_dtype(recipe.model.dtype, device)
    log.info("loading teacher %s", teacher)
    return load_model(folder, dtype, device, recipe.model.trust_remote_code), tokenizer


def with_teacher(recipe: Recipe, use: Callable[[PreTrainedModel, PreTrainedTokenizerBase], T]) -> T:
    """Load the teacher, return `use(model, tokenizer)`, and free the teacher's memory before returning
    (the student loads next; the two are never held together)."""
    model, tokenizer = load_teacher(recipe)
    device = next(model.parameters()).device
    try:
        return use(model, tokenizer)
    finally:
        del model  # the last reference: `use` has returned
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def interactive() -> bool:
    """Whether progress bars are shown: stderr is a terminal."""
    return sys.stderr.isatty()


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write `path` through a temporary file, so a half-written cache is never read."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
