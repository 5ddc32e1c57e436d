"""A training run, top to bottom: build data and model, score the base, run the shared loop, save, score
the tuned model, write the summary and report; and supervised fine-tuning, the default method.

`finetune` is the same for every method (sft, cpt, dpo, distill): the recipe's `method` names a
`methods.Method` that supplies the examples, the batches and the loss, and optional passes before and
after training. SFT's own parts are its data (`sft_data`) and the completion loss (`speed.batching`).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from honed.config.schema import Recipe
from honed.data.cache import cached_examples
from honed.data.tokenize import Encoded, chat_template_digest, render_masked
from honed.data.versions import data_identity
from honed.errors import ConfigError, ResourceError
from honed.evaluation.evaluate import (
    BASE,
    FEW_SHOT,
    TUNED,
    build_eval,
    load_eval,
    probe_numbers,
    score_base,
    score_tuned,
)
from honed.evaluation.report import write_report
from honed.models.load import load_model, load_tokenizer, resolve_base, resolve_device, resolve_dtype
from honed.models.lora import apply_lora, continue_adapter, count_parameters, read_adapter_config
from honed.training.fit import check_fit
from honed.training.loop import LoopResult, OnValidation, train_loop
from honed.training.methods import Method, get_method
from honed.training.run_dir import create_run_dir, load_run_recipe
from honed.training.speed import accelerated, batching, resolve

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
        _check_adapter_backend(recipe)  # before the run directory exists: a refusal leaves nothing behind
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
    if method.before_training is not None:
        method.before_training(model, tokenizer, train, validation, recipe, run_dir)
    task, rows = build_eval(recipe, task_files)
    score_base(model, tokenizer, recipe, run_dir, task, rows, progress)
    model, result = train_model(
        model, tokenizer, train, validation, recipe, run_dir, resume is not None, progress, on_validation
    )
    _save_final(model, tokenizer, run_dir, recipe)
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
    if method.after_training is not None and validation:
        found = method.after_training(model, tokenizer, validation, recipe, run_dir)
        (run_dir / "eval" / f"{recipe.method}.json").write_text(json.dumps(found, indent=2))
    write_summary(run_dir, recipe, task)
    return run_dir


def _check_adapter_backend(recipe: Recipe) -> None:
    if recipe.lora.init_from and recipe.adapter != "full":
        read_adapter_config(Path(recipe.lora.init_from))  # a wrong folder fails now, not after base eval
    if recipe.adapter == "qlora":
        from honed.models.quantize import check_backend

        check_backend(resolve_device(recipe.train.device))


def load_training_model(folder: Path, recipe: Recipe, device):
    """The base model as training starts from it: in the recipe's dtype on `device`; for `adapter: qlora`
    with its linear layers quantised to 4-bit NF4 (models/quantize.py), computing in that dtype."""
    dtype = resolve_dtype(recipe.model.dtype, device)
    if recipe.adapter == "qlora":
        from honed.models.quantize import load_quantized

        return load_quantized(folder, dtype, device, recipe.model.trust_remote_code)
    return load_model(folder, dtype, device, recipe.model.trust_remote_code)


def train_model(
    model,
    tokenizer,
    train: list[Encoded],
    validation: list[Encoded] | None,
    recipe: Recipe,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    on_validation: OnValidation | None = None,
) -> tuple[Any, LoopResult]:
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


def sft_data(recipe: Recipe, tokenizer, run_dir: Path):
    """Tokenize both splits and write data/report.json and a rendered, mask-highlighted sample."""
    train, train_report = cached_examples(recipe.data, tokenizer, "train")
    report = {"train": train_report.as_dict()}
    validation = None
    if recipe.data.validation or recipe.data.holdout_fraction:
        validation, val_report = cached_examples(recipe.data, tokenizer, "validation")
        report["validation"] = val_report.as_dict()
    write_data_report(run_dir, recipe, report, render_masked(tokenizer, train[0]))
    return train, validation


def sft_batching(recipe: Recipe, cfg, tokenizer, device):
    """Packed or padded batches and the completion loss."""
    return batching(cfg, tokenizer.pad_token_id, device)


def write_data_report(run_dir: Path, recipe: Recipe, report: dict[str, Any], sample: str) -> None:
    """data/report.json (per split), data/dataset.json (source hashes) and data/sample.txt, and a log line
    per split. Every method writes its data report through here."""
    folder = run_dir / "data"
    folder.mkdir(exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "dataset.json").write_text(json.dumps(_data_sources(recipe), indent=2))
    (folder / "sample.txt").write_text(sample)
    for split, info in report.items():
        log.info(
            "%s data: %d examples from %d rows (%d malformed skipped, %d too long: %s)",
            split,
            info["examples"],
            info["rows_read"],
            info["skipped_bad_rows"],
            info["too_long"],
            info["too_long_action"],
        )


def _data_sources(recipe: Recipe) -> dict:
    """Which data the run trained and validated on: each source's hash and its prepared dataset's hash."""
    sources = {"train": recipe.data.train}
    if recipe.data.validation:
        sources["validation"] = recipe.data.validation
    return data_identity(sources)


def prepare_model(model, recipe: Recipe):
    """LoRA: wrap in a fresh PEFT adapter, or the one in `lora.init_from`; full: every weight trainable."""
    if recipe.adapter in ("lora", "qlora"):
        if recipe.lora.init_from:
            return continue_adapter(model, recipe.lora, recipe.train.seed)
        return apply_lora(model, recipe.lora, recipe.train.seed)
    model.requires_grad_(True)
    return model


def _save_final(model, tokenizer, run_dir: Path, recipe: Recipe) -> Path:
    """final/adapter (PEFT) or final/model (full weights), each with the tokenizer and chat template."""
    target = run_dir / "final" / ("model" if recipe.adapter == "full" else "adapter")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def load_tuned(run_dir: Path, recipe: Recipe):
    """The trained model of a finished run (base + adapter, or the full weights) and its tokenizer.

    A qlora run's adapter is put on the float base, not the 4-bit one it trained on: that is the model
    `honed export --merged` writes and a server loads the adapter onto, and it needs no bitsandbytes. It
    differs from the model the run scored at the end of training by the base's quantisation error."""

    device = resolve_device(recipe.train.device)
    dtype = resolve_dtype(recipe.model.dtype, device)
    final = run_dir / "final" / ("model" if recipe.adapter == "full" else "adapter")
    if not final.is_dir():
        raise ConfigError(
            f"{run_dir}: the run has no {final.relative_to(run_dir)} yet (unfinished? resume it "
            f"with: honed train --resume {run_dir})"
        )
    tokenizer = load_tokenizer(final, recipe.model.trust_remote_code)
    if recipe.adapter == "full":
        return load_model(final, dtype, device, recipe.model.trust_remote_code), tokenizer
    from peft import PeftModel

    folder = resolve_base(recipe.model.base, recipe.model.revision).folder
    base = load_model(folder, dtype, device, recipe.model.trust_remote_code)
    return PeftModel.from_pretrained(base, final).to(device), tokenizer


def write_summary(run_dir: Path, recipe: Recipe, task) -> dict[str, Any]:
    """Gather the run's files into summary.json, comparison.* and report.html; return the summary."""
    from honed.evaluation.systems import run_comparison

    systems = {label: load_eval(run_dir, label) for label in (BASE, FEW_SHOT, TUNED)}
    metrics_path = run_dir / "metrics.jsonl"
    metrics = (
        [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    )
    tuned = systems[TUNED]
    summary = {
        "run_id": run_dir.name,
        "recipe": recipe.model_dump(mode="json"),
        "data": _read_json(run_dir / "data" / "report.json"),
        "dataset": _read_json(run_dir / "data" / "dataset.json"),
        "train": _read_json(run_dir / "train.json"),
        "eval": {
            "task": recipe.eval.task,
            "rows": len(tuned[1]) if tuned else None,
            **{label: found[0] if found else None for label, found in systems.items()},
            "probe": {label: probe_numbers(run_dir, label) for label in (BASE, TUNED)},
            recipe.method: _read_json(run_dir / "eval" / f"{recipe.method}.json"),
        },
        "comparison": run_comparison(run_dir, recipe, task),
    }
    base = systems[BASE]
    write_report(run_dir, summary, metrics, base[1] if base else None, tuned[1] if tuned else None)
    return summary


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


METHOD = Method("sft", sft_data, sft_batching)
