"""Distillation (`method: distill`): a student learns from a larger teacher, in one of two modes.

- sequence: the teacher writes a greedy answer to every training prompt (rendered with its own chat
  template); answers can be filtered by the eval task's score against the row's reference
  (`distill.min_score`); they are written to data/distilled.jsonl and the student is fine-tuned on them
  with SFT's completion loss.
- logit: the teacher's top-k next-token log-probabilities (at `distill.temperature`) are computed once at
  every labelled position of every example and cached in data/teacher_topk.safetensors; the loss mixes
  KL(teacher top-k || student) with the reference cross-entropy. Teacher and student must share the
  vocabulary (checked).

Either way the teacher is loaded, used and freed inside `data`, before the student is loaded, so the two
are never in memory together and training runs through the shared loop unchanged. Validation examples
keep the real references. This module is the method and sequence mode; logit mode is distill_logits.py,
the teacher distill_teacher.py, the loss distill_loss.py. It knows nothing of the loop, checkpoints or the
run's evaluation.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from honed.config.schema import DataConfig, Recipe, TrainConfig
from honed.data.cache import cached_examples
from honed.data.dataset import Row, SplitReport, iter_rows, keep_example
from honed.data.formats import RowError, split_prompt
from honed.data.tokenize import Encoded, encode_example, render_masked, render_prompt
from honed.errors import ConfigError, DataError
from honed.evaluation.evaluate import is_model_task
from honed.evaluation.registry import build_task
from honed.evaluation.tasks import Task
from honed.methods.base import Examples, Splits, sft_check_split
from honed.methods.distill_logits import LogitExample, collate_targets, logit_data, mean_kl, mix_of
from honed.methods.distill_loss import distill_loss
from honed.methods.distill_teacher import (
    BASE_KL,
    DISTILLED,
    SUMMARY,
    atomic_write,
    distill_config,
    interactive,
    with_teacher,
)
from honed.models.decoding import generate
from honed.runs.results import write_data_report
from honed.training import speed
from honed.training.loop import Collate, LossFn

log = logging.getLogger(__name__)


def distill_data(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> Splits:
    """Training and validation examples for `distill.mode`; writes data/ (report, distill.json, cache)."""
    if distill_config(recipe).mode == "sequence":
        return sequence_data(recipe, tokenizer, run_dir)
    return logit_data(recipe, tokenizer, run_dir)


# ---------------------------------------------------------------- sequence mode


def sequence_data(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path
) -> tuple[list[Encoded], list[Encoded] | None]:
    """The student's examples: training prompts with the teacher's (kept) answers; real validation."""
    report = SplitReport(too_long_action=recipe.data.on_too_long)
    rows = list(iter_rows(recipe.data, "train", report))
    path = run_dir / "data" / DISTILLED
    answers = _cached_answers(path, rows, distill_config(recipe).teacher)
    reused = answers is not None
    if answers is None:
        answers = teacher_answers(recipe, [split_prompt(row.messages)[0] for row in rows])
    records = score_answers(recipe, rows, answers)
    _write_jsonl(path, records)
    stats = _sequence_stats(recipe, records, reused)
    train = _encode_answers(recipe.data, tokenizer, records, report)
    data_report = {"train": {**report.as_dict(), "distill": stats}}
    validation = None
    if recipe.data.has_validation:
        validation, val_report = cached_examples(recipe.data, tokenizer, "validation")
        data_report["validation"] = val_report.as_dict()
    write_data_report(run_dir, recipe, data_report, render_masked(tokenizer, train[0]))
    (run_dir / "data" / SUMMARY).write_text(json.dumps(stats, indent=2))
    return train, validation


def teacher_answers(recipe: Recipe, prompts: list[list[dict[str, str]]]) -> list[str]:
    """The teacher's greedy answers to `prompts` (its own chat template, cut at eval.stop), in order."""

    max_new_tokens = distill_config(recipe).max_new_tokens

    def answer(teacher: PreTrainedModel, teacher_tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return generate(
            teacher,
            teacher_tokenizer,
            [render_prompt(teacher_tokenizer, prompt) for prompt in prompts],
            max_new_tokens,
            recipe.eval.batch_size,
            stop=recipe.eval.stop,
            progress=interactive(),
            desc="teacher answers",
        )

    return with_teacher(recipe, answer)


def _cached_answers(path: Path, rows: list[Row], teacher: str) -> list[str] | None:
    """The answers in an earlier data/distilled.jsonl when it was written for these rows by this teacher."""
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    same = len(records) == len(rows) and all(
        r["teacher"] == teacher and r["prompt"] == split_prompt(row.messages)[0]
        for r, row in zip(records, rows, strict=False)
    )
    if not same:
        log.info("%s does not match the training rows; the teacher answers again", path)
        return None
    log.info("reusing the teacher's %d answers in %s", len(records), path)
    return [r["answer"] for r in records]


def score_answers(recipe: Recipe, rows: list[Row], answers: list[str]) -> list[dict[str, Any]]:
    """One record per row: prompt, reference, teacher answer, its score against the reference (None
    when the eval task cannot score text) and whether it is kept for training."""
    cfg = distill_config(recipe)
    task = _scoring_task(recipe)
    threshold = cfg.min_score
    records = []
    for row, answer in zip(rows, answers, strict=True):
        prompt, reference = split_prompt(row.messages)
        score = None if task is None else task.score(answer, reference, row.fields)[task.primary_metric]
        # A score is None only without a threshold: _scoring_task refuses a min_score it cannot apply.
        low = threshold is not None and score is not None and score < threshold
        records.append(
            {
                "location": row.location,
                "teacher": cfg.teacher,
                "prompt": prompt,
                "reference": reference,
                "answer": answer,
                "score": score,
                "metric": None if task is None else task.primary_metric,
                "kept": bool(answer.strip()) and not low,
                "dropped": "empty" if not answer.strip() else "low_score" if low else None,
            }
        )
    return records


def _scoring_task(recipe: Recipe) -> Task | None:
    """The eval task, when it scores generated text; None otherwise (an error if min_score needs it)."""
    try:
        task = build_task(recipe.eval.task, recipe.eval.task_options)
    except ConfigError:  # a custom task from --task-file: not known to the data step
        task = None
    if task is not None and not is_model_task(task):
        return task
    if distill_config(recipe).min_score is not None:
        raise ConfigError(
            f"distill.min_score: eval.task {recipe.eval.task!r} cannot score the teacher's answers here "
            "(a likelihood task, or a task from --task-file); use a built-in text task (exact_match, "
            "structured, sql, math) or set distill.min_score: null"
        )
    return None


def _sequence_stats(recipe: Recipe, records: list[dict[str, Any]], reused: bool) -> dict[str, Any]:
    cfg = distill_config(recipe)
    scores = [r["score"] for r in records if r["score"] is not None]
    kept = sum(r["kept"] for r in records)
    stats = {
        "mode": "sequence",
        "teacher": cfg.teacher,
        "rows": len(records),
        "kept": kept,
        "dropped": len(records) - kept,
        "dropped_low_score": sum(r["dropped"] == "low_score" for r in records),
        "dropped_empty": sum(r["dropped"] == "empty" for r in records),
        "min_score": cfg.min_score,
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
        "metric": records[0]["metric"] if records else None,
        "reused_cache": reused,
    }
    log.info(
        "teacher answers: %d kept, %d dropped (%d below distill.min_score, %d empty); mean score %s",
        kept,
        stats["dropped"],
        stats["dropped_low_score"],
        stats["dropped_empty"],
        stats["mean_score"],
    )
    if not kept:
        raise DataError(
            f"distill: no teacher answer kept out of {len(records)} (mean score {stats['mean_score']}, "
            f"distill.min_score {cfg.min_score}); lower distill.min_score, raise "
            "distill.max_new_tokens or use a stronger teacher. The answers are in data/" + DISTILLED
        )
    return stats


def _encode_answers(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, records: list[dict[str, Any]], report: SplitReport
) -> list[Encoded]:
    """The kept records as student examples (prompt + teacher answer), with data.on_too_long applied."""
    examples = []
    for record in filter(lambda r: r["kept"], records):
        messages = [*record["prompt"], {"role": "assistant", "content": record["answer"]}]
        try:
            encoded = encode_example(tokenizer, messages)
        except RowError as exc:
            report.skipped_bad_rows += 1
            report.note(f"{record['location']}: {exc}")
            continue
        kept = keep_example(cfg, report, record["location"], encoded)
        if kept is not None:
            examples.append(kept)
    report.examples = len(examples)
    if not examples:
        raise DataError(
            f"distill: none of the kept teacher answers made a usable example ({report.problems})"
        )
    return examples


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda out: out.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def distill_batching(
    recipe: Recipe, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device
) -> tuple[Collate, LossFn]:
    """Packed or padded batches (with teacher targets in logit mode) and the distillation loss."""
    loss = functools.partial(distill_loss, mix=mix_of(recipe))
    collate_fn, loss_fn = speed.batching(cfg, tokenizer.pad_token_id, device, loss=loss)
    return functools.partial(collate_targets, collate=collate_fn, device=device), loss_fn


# ---------------------------------------------------------------- before and after training


def distill_before(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: Examples,
    validation: Examples | None,
    recipe: Recipe,
    run_dir: Path,
) -> None:
    """Logit mode: the base student's KL to the teacher on validation, for the after-training report."""
    if distill_config(recipe).mode != "logit" or not validation:
        return
    rows = validation[: recipe.train.max_eval_loss_rows]
    kl = mean_kl(model, rows, tokenizer.pad_token_id, mix_of(recipe), recipe.train.batch_size)
    log.info("base student's KL to the teacher on %d validation rows: %.4f", len(rows), kl)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    (run_dir / "eval" / BASE_KL).write_text(json.dumps({"kl_to_teacher": kl, "rows": len(rows)}))


def distill_after(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    validation: Examples,
    recipe: Recipe,
    run_dir: Path,
) -> dict[str, Any]:
    """What the data step found (kept/dropped answers, or top-k coverage) and, in logit mode, the
    student's mean KL to the teacher on validation before and after training."""
    found = json.loads((run_dir / "data" / SUMMARY).read_text())
    if distill_config(recipe).mode != "logit":
        return found
    rows = validation[: recipe.train.max_eval_loss_rows]
    tuned = mean_kl(model, rows, tokenizer.pad_token_id, mix_of(recipe), recipe.train.batch_size)
    base_path = run_dir / "eval" / BASE_KL
    base = json.loads(base_path.read_text())["kl_to_teacher"] if base_path.is_file() else None
    log.info("KL to the teacher on %d validation rows: base %s, tuned %.4f", len(rows), base, tuned)
    return {**found, "validation_rows": len(rows), "kl_to_teacher": {"base": base, "tuned": tuned}}


# This module is a `methods.base.Method`: its hooks (mypy checks them in methods/registry.py).
data = distill_data
batching = distill_batching
before_training = distill_before
after_training = distill_after
check_split = sft_check_split


def sequences(train: Examples) -> list[Encoded]:
    """The student's sequences: logit examples carry theirs inside."""
    return [e.example if isinstance(e, LogitExample) else e for e in train]
