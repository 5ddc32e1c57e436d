"""Score models on held-out rows: the base zero-shot, the base k-shot, and the tuned model, on the same rows.

`evaluate_model` is the component (render prompts, generate, score; or, for likelihood tasks, score with
the model directly). `score_base` and `score_tuned` are what a training run calls before and after
training; `evaluate_run` is the public entry behind `honed eval RUN`. Every system's results go to
`eval/<label>/` (metrics.json, predictions.jsonl, and probe.json for the forgetting probe).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from honed.config.schema import Recipe
from honed.data.dataset import EvalRow, SplitReport, iter_rows, load_eval_rows
from honed.data.formats import split_prompt
from honed.data.tokenize import render_prompt
from honed.evaluation.generate import generate
from honed.evaluation.registry import build_task

log = logging.getLogger(__name__)

BASE, FEW_SHOT, TUNED = "base", "few_shot", "tuned"


def is_model_task(task) -> bool:
    """Likelihood tasks (perplexity, choice) score with the model instead of generated text."""
    return hasattr(task, "run")


def build_eval(recipe: Recipe, task_files: Sequence[str | Path] = ()) -> tuple[Any, list[EvalRow]]:
    """The recipe's task and its evaluation rows."""
    task = build_task(recipe.eval.task, recipe.eval.task_options, task_files)
    return task, load_eval_rows(recipe, raw=is_model_task(task))


def evaluate_model(
    model, tokenizer, rows: list[EvalRow], recipe: Recipe, task, label: str, progress: bool = True
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
    metrics = task.aggregate([p["score"] for p in predictions])
    metrics["primary_metric"] = task.primary_metric
    metrics["timing"] = {"wall_s": round(time.perf_counter() - start, 2), "rows": len(rows)}
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


def load_probe(run_dir: Path, label: str) -> dict[str, Any] | None:
    """eval/<label>/probe.json (the forgetting probe), or None."""
    path = run_dir / "eval" / label / "probe.json"
    return json.loads(path.read_text()) if path.is_file() else None


def probe_numbers(run_dir: Path, label: str) -> dict[str, float] | None:
    """Only the probe's metrics (not the base answers it keeps)."""
    probe = load_probe(run_dir, label)
    return {k: v for k, v in probe.items() if isinstance(v, float)} if probe else None


def score_base(
    model, tokenizer, recipe: Recipe, run_dir: Path, task, rows: list[EvalRow], progress: bool = True
) -> None:
    """Before training: base zero-shot, base k-shot and the base probe, each skipped if already saved."""
    from honed.evaluation import forgetting

    if recipe.eval.base and load_eval(run_dir, BASE) is None:
        save_eval(run_dir, BASE, *evaluate_model(model, tokenizer, rows, recipe, task, BASE, progress))
    if recipe.eval.few_shot_k and load_eval(run_dir, FEW_SHOT) is None:
        if is_model_task(task):
            log.info(
                "eval.few_shot_k is ignored for the %s task (it scores likelihoods, not prompts)", task.name
            )
        else:
            shot_rows = with_shots(rows, draw_shots(recipe))
            save_eval(
                run_dir,
                FEW_SHOT,
                *evaluate_model(model, tokenizer, shot_rows, recipe, task, FEW_SHOT, progress),
            )
    if recipe.eval.forgetting_probe and load_probe(run_dir, BASE) is None:
        answers = forgetting.base_answers(model, tokenizer)
        _save_probe(run_dir, BASE, forgetting.run_probe(model, tokenizer, answers))


def score_tuned(
    model, tokenizer, recipe: Recipe, run_dir: Path, task, rows: list[EvalRow], progress: bool = True
) -> None:
    """After training: the tuned model on the same rows, and its probe against the base's answers."""
    from honed.evaluation import forgetting

    save_eval(run_dir, TUNED, *evaluate_model(model, tokenizer, rows, recipe, task, TUNED, progress))
    base_probe = load_probe(run_dir, BASE)
    if recipe.eval.forgetting_probe and base_probe is not None:
        _save_probe(run_dir, TUNED, forgetting.run_probe(model, tokenizer, base_probe["base_answers"]))


def _save_probe(run_dir: Path, label: str, probe: dict[str, Any]) -> None:
    folder = run_dir / "eval" / label
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.json").write_text(json.dumps(probe, indent=2))


def evaluate_run(
    run_dir: str | Path,
    base: bool = True,
    overrides: Sequence[str] = (),
    task_files: Sequence[str | Path] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Re-score a finished run: the tuned model, and (through the adapter switched off) the base.

    `overrides` change the run's `eval.*` settings (e.g. eval.few_shot_k=5 eval.max_rows=500); the run's
    recipe.yaml is updated so it always says what its eval/ folder holds.
    """
    from honed.config.load import dump_recipe
    from honed.errors import ConfigError
    from honed.training.run_dir import load_run_recipe
    from honed.training.sft import load_tuned, write_summary

    run_dir = Path(run_dir)
    if bad := [o for o in overrides if not o.startswith("eval.")]:
        raise ConfigError(f"honed eval only changes eval.* settings; not {', '.join(bad)}")
    recipe = load_run_recipe(run_dir, task_files, overrides)
    if overrides:
        (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
    task, rows = build_eval(recipe, task_files)
    model, tokenizer = load_tuned(run_dir, recipe)
    if base and hasattr(model, "disable_adapter"):
        for label in (BASE, FEW_SHOT):
            (run_dir / "eval" / label / "metrics.json").unlink(missing_ok=True)
            (run_dir / "eval" / label / "probe.json").unlink(missing_ok=True)
        with model.disable_adapter():
            score_base(model, tokenizer, recipe, run_dir, task, rows, progress)
    elif base:
        log.info("full fine-tune: the base model keeps the scores from the training run")
    score_tuned(model, tokenizer, recipe, run_dir, task, rows, progress)
    return write_summary(run_dir, recipe, task)["eval"]
