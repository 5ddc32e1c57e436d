"""A training run, top to bottom, the same for every method: build data and model, check it fits, score
the base, run the shared loop, save, score the tuned model, write the summary and report.

The recipe's `method` names a `methods.base.Method` that supplies the examples, the batches and the loss,
and optional passes before and after training; this module knows no method by name.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from honed.config.schema import Recipe
from honed.data.tokenize import chat_template_digest
from honed.errors import ResourceError
from honed.evaluation.evaluate import build_eval
from honed.evaluation.run import score_base, score_tuned
from honed.evaluation.summary import write_summary
from honed.methods.base import Examples
from honed.methods.registry import get_method
from honed.models.load import load_tokenizer, resolve_base, resolve_device
from honed.models.lora import count_parameters
from honed.models.prepare import check_adapter_backend, load_training_model, prepare_model
from honed.runs.directory import create_run_dir, load_run_recipe
from honed.runs.final import save_final
from honed.runs.results import save_method_metrics
from honed.sizing.fit import check_fit
from honed.training.loop import LoopResult, OnValidation, train_loop
from honed.training.speed import accelerated, resolve

log = logging.getLogger(__name__)


def finetune(
    recipe: Recipe | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    task_files: Sequence[str | Path] = (),
    force: bool = False,
    on_validation: OnValidation | None = None,
) -> Path:
    """Run a recipe (or continue the run in `resume`) end to end; return the run directory.

    `task_files` are local Python files defining custom evaluation tasks (see `evaluation.registry`).
    Before loading the model the run's peak memory is predicted; a run that will not fit the device is
    refused (ResourceError) unless `force`. `on_validation(step, val_loss)` is called after each
    validation during training (hyperparameter search prunes through it).
    """
    if resume is not None:
        run_dir = Path(resume)
        recipe = load_run_recipe(run_dir, task_files)
    elif recipe is None:
        raise ValueError("finetune needs a recipe or a run directory to resume")
    else:
        check_adapter_backend(recipe)  # before the run directory exists: a refusal leaves nothing behind
        run_dir = create_run_dir(recipe)
    log.info("run directory: %s", run_dir)
    _seed_everything(recipe)
    device = resolve_device(recipe.train.device)
    folder = resolve_base(recipe.model.base, recipe.model.revision).folder
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    method = get_method(recipe.method)
    train, validation = method.data(recipe, tokenizer, run_dir)
    if resume is None:
        try:
            sequences = method.sequences(train)
            per_example = max(1, len(sequences) // max(1, len(train)))  # a DPO pair runs 2 sequences
            fitted = check_fit(recipe, folder, sequences, device, force, per_example)
        except ResourceError:
            shutil.rmtree(run_dir, ignore_errors=True)  # a refused run leaves nothing behind
            raise
        (run_dir / "estimate.json").write_text(json.dumps(fitted.as_dict(), indent=2))
    model = load_training_model(folder, recipe, device)
    method.before_training(model, tokenizer, train, validation, recipe, run_dir)
    task, rows = build_eval(recipe, task_files)
    score_base(model, tokenizer, recipe, run_dir, task, rows, progress)
    model, result = train_model(
        model, tokenizer, train, validation, recipe, run_dir, resume is not None, progress, on_validation
    )
    save_final(model, tokenizer, run_dir, recipe)
    trainable, total = count_parameters(model)
    (run_dir / "train.json").write_text(
        json.dumps(
            {
                **result.__dict__,
                "trainable_params": trainable,
                "total_params": total,
                "chat_template_sha256": chat_template_digest(tokenizer),
            },
            indent=2,
        )
    )
    score_tuned(model, tokenizer, recipe, run_dir, task, rows, progress)
    if validation:
        found = method.after_training(model, tokenizer, validation, recipe, run_dir)
        if found is not None:
            save_method_metrics(run_dir, recipe.method, found)
    write_summary(run_dir, recipe, task)
    return run_dir


def train_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Examples,
    validation: Examples | None,
    recipe: Recipe,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    on_validation: OnValidation | None = None,
) -> tuple[torch.nn.Module, LoopResult]:
    """Attach the adapter (or unfreeze the weights) and run the shared loop with the method's batches and
    loss and the recipe's speed options; return the trained model and the loop's result. The part of
    `finetune` that bench/ times."""
    device = next(model.parameters()).device
    model = prepare_model(model, recipe)
    cfg = resolve(recipe.train, device)
    batcher, loss_fn = get_method(recipe.method).batching(recipe, cfg, tokenizer, device)
    with accelerated(model, cfg, device):
        result = train_loop(
            model, train, validation, cfg, run_dir, loss_fn, batcher, resume, progress, on_validation
        )
    return model, result


def _seed_everything(recipe: Recipe) -> None:
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    random.seed(recipe.train.seed)
    torch.manual_seed(recipe.train.seed)
