"""Score a model on held-out rows: render prompts, generate, score (or, for likelihood tasks, score with the
model directly); the task and rows a recipe names; the few-shot prompts.

Scoring a run's systems (base, few-shot, tuned) and writing them into the run directory is
`evaluation/run.py`; this module knows nothing about run directories.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase
from typing_extensions import TypeIs

from honed.config.schema import Recipe
from honed.data.dataset import EvalRow, SplitReport, iter_rows, load_eval_rows
from honed.data.formats import split_prompt
from honed.data.tokenize import render_prompt
from honed.evaluation.likelihood import ModelTask
from honed.evaluation.registry import build_task
from honed.evaluation.tasks import Task
from honed.models.decoding import generate

log = logging.getLogger(__name__)


# What `eval.task` builds: a task that scores generated text, or one that scores with the model itself.
EvalTask = Task | ModelTask


def is_model_task(task: EvalTask) -> TypeIs[ModelTask]:
    """Likelihood tasks (perplexity, choice) score with the model instead of generated text."""
    return hasattr(task, "run")


def build_eval(recipe: Recipe, task_files: Sequence[str | Path] = ()) -> tuple[EvalTask, list[EvalRow]]:
    """The recipe's task and its evaluation rows."""
    task = build_task(recipe.eval.task, recipe.eval.task_options, task_files)
    return task, load_eval_rows(recipe, raw=is_model_task(task))


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[EvalRow],
    recipe: Recipe,
    task: EvalTask,
    label: str,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score `model` on `rows`; return (corpus metrics, per-row predictions)."""
    start = time.perf_counter()
    if is_model_task(task):
        outputs = task.run(model, tokenizer, [row.fields for row in rows], recipe.eval.batch_size)
    else:
        prompts = [render_prompt(tokenizer, row.prompt) for row in rows]
        answers = generate(
            model,
            tokenizer,
            prompts,
            recipe.eval.max_new_tokens,
            recipe.eval.batch_size,
            stop=recipe.eval.stop,
            progress=progress,
            desc=f"eval {label}",
        )
        outputs = [
            {
                "prompt": row.prompt[-1]["content"],
                "reference": row.reference,
                "prediction": answer,
                "score": task.score(answer, row.reference, row.fields),
            }
            for row, answer in zip(rows, answers, strict=True)
        ]
    predictions = [
        {"index": index, "location": row.location, "slice": row.slice, **output}
        for index, (row, output) in enumerate(zip(rows, outputs, strict=True))
    ]
    metrics: dict[str, Any] = dict(task.aggregate([p["score"] for p in predictions]))
    metrics["primary_metric"] = task.primary_metric
    metrics["timing"] = {"wall_s": round(time.perf_counter() - start, 2), "rows": len(rows)}
    by_slice = _by_slice(task, predictions)
    if by_slice:
        metrics["by_slice"] = by_slice
    return metrics, predictions


def _by_slice(task: EvalTask, predictions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, float]]] = {}
    for p in predictions:
        if p["slice"] is not None:
            groups.setdefault(p["slice"], []).append(p["score"])
    return {name: task.aggregate(scores) for name, scores in sorted(groups.items())}


def draw_shots(recipe: Recipe) -> list[list[dict[str, str]]]:
    """`eval.few_shot_k` training conversations, drawn with `eval.few_shot_seed` (reservoir sampling)."""
    k, rng = recipe.eval.few_shot_k, random.Random(recipe.eval.few_shot_seed)
    chosen: list[list[dict[str, str]]] = []
    for seen, row in enumerate(iter_rows(recipe.data, "train", SplitReport())):
        if len(chosen) < k:
            chosen.append(row.messages)
        elif (slot := rng.randrange(seen + 1)) < k:
            chosen[slot] = row.messages
    return chosen


def with_shots(rows: list[EvalRow], shots: list[list[dict[str, str]]]) -> list[EvalRow]:
    """Each row's prompt preceded by the example conversations, as earlier user/assistant turns."""
    turns = []
    for shot in shots:
        prompt, answer = split_prompt(shot)
        turns += [m for m in prompt if m["role"] != "system"] + [{"role": "assistant", "content": answer}]
    result = []
    for row in rows:
        system = [m for m in row.prompt[:1] if m["role"] == "system"]
        result.append(replace(row, prompt=system + turns + row.prompt[len(system) :]))
    return result
