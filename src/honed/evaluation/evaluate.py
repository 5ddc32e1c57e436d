"""Score a model on held-out rows: render prompts, generate, score with the recipe's task, save.

`evaluate_model` is the component; `evaluate_run` is the public entry behind `honed eval RUN`, which
re-scores a finished run's tuned model (and the base, on the same rows with the same prompts) and rewrites
the run's eval/, summary.json and report.html.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from honed.config.schema import Recipe
from honed.data.dataset import EvalRow, load_eval_rows
from honed.data.tokenize import render_prompt
from honed.evaluation.generate import generate
from honed.evaluation.tasks import get_task

log = logging.getLogger(__name__)


def evaluate_model(
    model, tokenizer, rows: list[EvalRow], recipe: Recipe, label: str, progress: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate answers for `rows` and return (corpus metrics, per-row predictions)."""
    task = get_task(recipe.eval.task)
    prompts = [render_prompt(tokenizer, row.prompt) for row in rows]
    answers = generate(
        model,
        tokenizer,
        prompts,
        recipe.eval.max_new_tokens,
        recipe.eval.batch_size,
        progress=progress,
        desc=f"eval {label}",
    )
    predictions = []
    for index, (row, answer) in enumerate(zip(rows, answers, strict=True)):
        predictions.append(
            {
                "index": index,
                "location": row.location,
                "prompt": row.prompt[-1]["content"],
                "reference": row.reference,
                "prediction": answer,
                "slice": row.slice,
                "score": task.score(answer, row.reference),
            }
        )
    metrics = task.aggregate([p["score"] for p in predictions])
    metrics["primary_metric"] = task.primary_metric
    by_slice = _by_slice(task, predictions)
    if by_slice:
        metrics["by_slice"] = by_slice
    return metrics, predictions


def _by_slice(task, predictions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, float]]] = {}
    for p in predictions:
        if p["slice"] is not None:
            groups.setdefault(p["slice"], []).append(p["score"])
    return {name: task.aggregate(scores) for name, scores in sorted(groups.items())}


def save_eval(run_dir: Path, label: str, metrics: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
    """Write eval/<label>/metrics.json and predictions.jsonl."""
    folder = run_dir / "eval" / label
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with (folder / "predictions.jsonl").open("w") as handle:
        for p in predictions:
            handle.write(json.dumps(p) + "\n")


def load_eval(run_dir: Path, label: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """Read back eval/<label>/, or None if that evaluation has not run."""
    folder = run_dir / "eval" / label
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    return metrics, predictions


def evaluate_run(run_dir: str | Path, base: bool = True, progress: bool = True) -> dict[str, Any]:
    """Re-score a finished run's tuned model (and the base) and rewrite its report; return eval summary."""
    from honed.training.run_dir import load_run_recipe
    from honed.training.sft import load_tuned, write_summary

    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    rows = load_eval_rows(recipe)
    model, tokenizer = load_tuned(run_dir, recipe)
    save_eval(run_dir, "tuned", *evaluate_model(model, tokenizer, rows, recipe, "tuned", progress))
    if base:
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                save_eval(run_dir, "base", *evaluate_model(model, tokenizer, rows, recipe, "base", progress))
        else:
            log.info("full fine-tune: the base model is scored by the training run, not re-scored here")
    return write_summary(run_dir, recipe)["eval"]
