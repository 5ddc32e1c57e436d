"""Score a run's systems on the same held-out rows and keep the results in its run directory: the base
zero-shot, the base k-shot and the forgetting probe before training (`score_base`), the tuned model after
(`score_tuned`), and `evaluate_run`, the public entry behind `honed eval RUN`.

Every system's results go to `eval/<label>/` (runs/results.py: metrics.json, predictions.jsonl, and
probe.json for the forgetting probe).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from honed.config.load import dump_recipe
from honed.config.schema import Recipe
from honed.data.dataset import EvalRow
from honed.errors import ConfigError
from honed.evaluation import forgetting
from honed.evaluation.evaluate import (
    EvalTask,
    build_eval,
    draw_shots,
    evaluate_model,
    is_model_task,
    with_shots,
)
from honed.evaluation.summary import write_summary
from honed.runs.directory import load_run_recipe
from honed.runs.final import load_tuned
from honed.runs.results import (
    BASE,
    FEW_SHOT,
    TUNED,
    forget_eval,
    load_eval,
    load_probe,
    save_eval,
    save_probe,
)

log = logging.getLogger(__name__)


def score_base(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    run_dir: Path,
    task: EvalTask,
    rows: list[EvalRow],
    progress: bool = True,
) -> None:
    """Before training: base zero-shot, base k-shot and the base probe, each skipped if already saved."""
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
        save_probe(run_dir, BASE, forgetting.run_probe(model, tokenizer, answers))


def score_tuned(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    run_dir: Path,
    task: EvalTask,
    rows: list[EvalRow],
    progress: bool = True,
) -> None:
    """After training: the tuned model on the same rows, and its probe against the base's answers."""
    save_eval(run_dir, TUNED, *evaluate_model(model, tokenizer, rows, recipe, task, TUNED, progress))
    base_probe = load_probe(run_dir, BASE)
    if recipe.eval.forgetting_probe and base_probe is not None:
        save_probe(run_dir, TUNED, forgetting.run_probe(model, tokenizer, base_probe["base_answers"]))


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
            forget_eval(run_dir, label)
        with model.disable_adapter():
            score_base(model, tokenizer, recipe, run_dir, task, rows, progress)
    elif base:
        log.info("full fine-tune: the base model keeps the scores from the training run")
    score_tuned(model, tokenizer, recipe, run_dir, task, rows, progress)
    return write_summary(run_dir, recipe, task)["eval"]
