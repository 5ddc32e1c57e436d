"""Hyperparameter search over a recipe (`honed tune-hp`): Optuna proposes values for the keys named in
`tune.space`, each trial is a real `finetune` run of the recipe with those values, and the study lives in
an SQLite file in the output folder, so running the same command again resumes it.

    <output>/ study.db tune.json tune.md best.yaml trial-000/ trial-001/ ...

This module owns the study, the objective (final validation loss, or the eval task's primary metric in
its own direction), pruning on the validation losses the loop reports, and the result files. The space
and each trial's recipe are tuning/space.py. It does not train or score: `pipeline.finetune` does, once
per trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from honed.config.load import dump_recipe
from honed.config.schema import Recipe
from honed.errors import ConfigError, HonedError, TrainingInterrupted
from honed.evaluation.registry import build_task
from honed.methods.registry import get_method
from honed.models.load import load_tokenizer, resolve_base
from honed.pipeline.finetune import finetune
from honed.training.loop import OnValidation, total_steps
from honed.tuning.report import TrialRecord, TuneResult, fmt, render_markdown
from honed.tuning.space import build_trial_recipe, flatten_space, validate_space

log = logging.getLogger(__name__)

STUDY_NAME = "honed-tune-hp"
STUDY_FILE = "study.db"
# Random trials before TPE models the results; small because a fine-tuning budget is a handful of trials.
SAMPLER_STARTUP_TRIALS = 5
# Finished trials before the median pruner stops anyone: it needs a median to compare with.
PRUNER_STARTUP_TRIALS = 2
_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


@dataclass(frozen=True)
class _Plan:
    """What every trial of one invocation shares."""

    recipe: Recipe
    space: dict[str, BaseDistribution]
    output: Path
    objective: str
    metric: str
    direction: str
    eval_every_steps: int | None
    task_files: tuple[str | Path, ...]
    progress: bool


def tune_hp(
    recipe: Recipe,
    trials: int | None = None,
    timeout_min: float | None = None,
    output: str | Path | None = None,
    progress: bool = True,
    task_files: Sequence[str | Path] = (),
) -> TuneResult:
    """Search `recipe.tune.space` with `trials` / `timeout_min` (None: the recipe's `tune` values); return
    every trial of the study and the best.

    Writes study.db, tune.json, tune.md, best.yaml and one run directory per trial under `output`
    (default <runs_dir>/<name>-tune-<time>). An `output` that already holds a study resumes it: trials
    count towards `trials` in total. Ctrl-C stops the search; the result (with `interrupted`) and the
    files still cover every finished trial.
    """
    space = validate_space(recipe, task_files)
    trials = recipe.tune.trials if trials is None else trials
    timeout_min = recipe.tune.timeout_min if timeout_min is None else timeout_min
    _check_budget(trials, timeout_min)
    _require_validation(recipe)
    metric, direction = objective_metric(recipe, task_files)
    folder = Path(output) if output else _default_output(recipe)
    folder.mkdir(parents=True, exist_ok=True)
    plan = _Plan(
        recipe,
        space,
        folder,
        recipe.tune.objective,
        metric,
        direction,
        _eval_cadence(recipe),
        tuple(task_files),
        progress,
    )
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the per-trial line below says what matters
    try:
        study = open_study(folder, recipe, metric, direction)
        interrupted = _search(study, plan, trials, timeout_min)
    finally:
        optuna.logging.set_verbosity(previous)
    result = collect_result(study, plan, interrupted)
    write_results(result, recipe)
    return result


# --- objective and budget ------------------------------------------------------------------------------


def objective_metric(recipe: Recipe, task_files: Sequence[str | Path] = ()) -> tuple[str, str]:
    """(metric name, "minimize" | "maximize") of the recipe's `tune.objective`."""
    if recipe.tune.objective == "val_loss":
        return "val_loss", "minimize"
    task = build_task(recipe.eval.task, recipe.eval.task_options, task_files)
    lower = task.primary_metric in getattr(task, "lower_is_better", frozenset())
    return task.primary_metric, "minimize" if lower else "maximize"


def _check_budget(trials: int | None, timeout_min: float | None) -> None:
    if trials is None and timeout_min is None:
        raise ConfigError("tune-hp needs a budget: set tune.trials or tune.timeout_min (or --trials N)")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials / tune.trials must be at least 1, got {trials}")
    if timeout_min is not None and timeout_min <= 0:
        raise ConfigError(f"--timeout-min / tune.timeout_min must be above 0, got {timeout_min}")


def _require_validation(recipe: Recipe) -> None:
    if not recipe.data.has_validation:
        raise ConfigError(
            "tune-hp compares trials on held-out data but the recipe has none: set data.validation "
            "(a file) or data.holdout_fraction (e.g. 0.1)"
        )


def _default_output(recipe: Recipe) -> Path:
    return Path(recipe.output.runs_dir) / f"{recipe.name}-tune-{time.strftime('%Y%m%d-%H%M%S')}"


def _eval_cadence(recipe: Recipe) -> int | None:
    """With pruning on and train.eval_every_steps unset, validate each trial 4 times so that the pruner
    has intermediate losses to compare; None leaves the recipe's own cadence."""
    if not recipe.tune.prune or recipe.train.eval_every_steps is not None:
        return None
    steps = recipe.train.max_steps or planned_steps(recipe)
    every = max(1, steps // 4)
    log.info(
        "train.eval_every_steps is unset: trials validate every %d of %d steps so pruning can compare "
        "them (set it in the recipe to choose)",
        every,
        steps,
    )
    return every


def planned_steps(recipe: Recipe) -> int:
    """Optimizer steps the recipe will take, from its tokenized training data (cached for the trials)."""
    folder = resolve_base(recipe.model.base, recipe.model.revision).folder
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    with tempfile.TemporaryDirectory() as scratch, _quiet():
        train, _ = get_method(recipe.method).data(recipe, tokenizer, Path(scratch))
    return total_steps(len(train), recipe.train)


# --- the study -----------------------------------------------------------------------------------------


def open_study(folder: Path, recipe: Recipe, metric: str, direction: str) -> optuna.Study:
    """The study in `folder`/study.db: created, or loaded to resume (same objective required)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{(folder / STUDY_FILE).resolve()}")
    try:
        past = storage.get_n_trials(storage.get_study_id_from_name(STUDY_NAME))
    except KeyError:  # a new study
        past = 0
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY_NAME,
        direction=direction,
        load_if_exists=True,
        # Seeded by the trials so far too: a resumed search must not replay the first run's proposals.
        sampler=optuna.samplers.TPESampler(
            seed=recipe.tune.seed + past, n_startup_trials=SAMPLER_STARTUP_TRIALS
        ),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
    )
    found = study.user_attrs.get("metric")
    if found is not None and found != metric:
        raise ConfigError(
            f"{folder}: holds a study optimising {found}, not {metric} (tune.objective "
            f"{recipe.tune.objective}); choose another --output"
        )
    study.set_user_attr("metric", metric)
    study.set_user_attr("recipe", recipe.name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        # Left running by a process that was killed: it will never finish.
        storage.set_trial_user_attr(trial._trial_id, "error", "interrupted (the process ended)")
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    if past:
        log.info("resuming the study in %s: %d trials so far", folder, past)
    return study


def _finished(study: optuna.Study) -> int:
    """Trials that count towards the budget: finished, and not cut short by Ctrl-C."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(not t.user_attrs.get("interrupted") for t in study.get_trials(deepcopy=False, states=states))


def _search(study: optuna.Study, plan: _Plan, trials: int | None, timeout_min: float | None) -> bool:
    """Run trials until the budget is spent; True if Ctrl-C stopped the search."""
    deadline = time.monotonic() + timeout_min * 60 if timeout_min else None
    done = _finished(study)
    if trials is not None and done >= trials:
        log.info("the study already has %d trials (budget %d): raise --trials to run more", done, trials)
    while (trials is None or done < trials) and (deadline is None or time.monotonic() < deadline):
        trial = study.ask(dict(plan.space))
        try:
            _run_trial(study, trial, plan)
        except (KeyboardInterrupt, TrainingInterrupted):
            trial.set_user_attr("error", "interrupted (Ctrl-C)")
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            log.warning("search stopped by Ctrl-C during trial %d", trial.number)
            return True
        done += 1
    return False


def _run_trial(study: optuna.Study, trial: optuna.Trial, plan: _Plan) -> None:
    """One real fine-tuning run with the trial's values; tells the study how it ended."""
    run_dir = plan.output / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", str(run_dir))
    start = time.perf_counter()
    state, value = TrialState.FAIL, None
    try:
        recipe = build_trial_recipe(plan.recipe, trial.params, _trial_changes(plan, run_dir), plan.task_files)
        callback = pruning_callback(trial, plan.direction) if plan.recipe.tune.prune else None
        with _quiet():
            finetune(recipe, progress=False, task_files=plan.task_files, on_validation=callback)
        value, state = objective_value(run_dir, plan.objective), TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        state = TrialState.PRUNED
        trial.set_user_attr("pruned", str(exc))
    except TrainingInterrupted:
        raise
    except HonedError as exc:
        trial.set_user_attr("error", str(exc))
    wall = round(time.perf_counter() - start, 1)
    trial.set_user_attr("wall_s", wall)
    record = _record(study.tell(trial, value, state=state))
    _mark_run_dir(run_dir, record)
    if plan.progress:
        log.info("%s", _summary_line(record, plan))


def _trial_changes(plan: _Plan, run_dir: Path) -> dict[str, Any]:
    """What every trial changes besides its parameters: where it is written, and no base-model scoring
    (the base is the same in every trial; `honed train best.yaml` scores it)."""
    changes: dict[str, Any] = {
        "output.runs_dir": str(run_dir.parent),
        "output.run_name": run_dir.name,
        "eval.base": False,
        "eval.few_shot_k": 0,
        "eval.forgetting_probe": False,
    }
    if plan.eval_every_steps is not None:
        changes["train.eval_every_steps"] = plan.eval_every_steps
    return changes


def pruning_callback(trial: optuna.Trial, direction: str = "minimize") -> OnValidation:
    """`finetune`'s `on_validation`: report each validation loss to the trial and stop the run
    (optuna.TrialPruned) when the pruner says it trails earlier trials at the same step.

    The loss is lower-is-better; when the study maximises (a task metric) it is reported negated.
    """
    sign = 1.0 if direction == "minimize" else -1.0

    def report(step: int, val_loss: float) -> None:
        trial.report(sign * val_loss, step)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"validation loss {val_loss:.4f} at step {step} trails the median of earlier trials"
            )

    return report


def objective_value(run_dir: Path, objective: str) -> float:
    """A finished run's objective: train.json's final_val_loss, or eval/tuned's primary metric."""
    if objective == "val_loss":
        value = json.loads((run_dir / "train.json").read_text()).get("final_val_loss")
        name = "final validation loss"
    else:
        metrics = json.loads((run_dir / "eval" / "tuned" / "metrics.json").read_text())
        name = metrics["primary_metric"]
        value = metrics.get(name)
    if value is None or not math.isfinite(value):
        raise HonedError(f"{run_dir}: the run recorded no finite {name} (got {value})")
    return float(value)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """honed's own INFO lines off while a trial runs: each trial is summed up in one line after it."""
    logger = logging.getLogger("honed")
    previous = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


# --- results -------------------------------------------------------------------------------------------


def _record(trial: FrozenTrial) -> TrialRecord:
    state = _STATES.get(trial.state, trial.state.name.lower())
    attrs = trial.user_attrs
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        state=state,
        wall_s=attrs.get("wall_s"),
        run_dir=attrs.get("run_dir"),
        pruned_at_step=trial.last_step if trial.state == TrialState.PRUNED else None,
        error=attrs.get("error"),
    )


def collect_result(study: optuna.Study, plan: _Plan, interrupted: bool) -> TuneResult:
    """Every trial of the study as records, and the best complete one (ties: the earliest)."""
    records = [_record(t) for t in study.get_trials(deepcopy=False)]
    sign = 1.0 if plan.direction == "minimize" else -1.0
    ranked = [(sign * r.value, r.number, r) for r in records if r.state == "complete" and r.value is not None]
    best = min(ranked, key=lambda entry: entry[:2])[2] if ranked else None
    return TuneResult(
        output=plan.output,
        objective=plan.objective,
        metric=plan.metric,
        direction=plan.direction,
        space=flatten_space(plan.recipe.tune.space),
        trials=records,
        best=best,
        interrupted=interrupted,
    )


def write_results(result: TuneResult, recipe: Recipe) -> None:
    """tune.json, tune.md and (when a trial completed) best.yaml in the output folder."""
    folder = result.output
    (folder / "tune.json").write_text(json.dumps(result.as_dict(), indent=2))
    (folder / "tune.md").write_text(render_markdown(result))
    if result.best is not None:
        (folder / "best.yaml").write_text(best_recipe_yaml(result, recipe))


def best_recipe_yaml(result: TuneResult, recipe: Recipe) -> str:
    """The recipe with the best trial's values: ready for `honed train best.yaml`. Its tune section is
    kept, so the file also records the space the values were chosen from (training ignores it)."""
    best = result.best
    assert best is not None
    chosen = build_trial_recipe(recipe, best.params)
    header = (
        f"# honed tune-hp: best of {len(result.trials)} trials in {result.output}: trial {best.number}, "
        f"{result.metric} {best.value:.6g}\n"
        f"# {', '.join(f'{k}={fmt(v)}' for k, v in best.params.items())}\n"
        f"# Train it with: honed train best.yaml\n"
    )
    return header + dump_recipe(chosen)


def _summary_line(record: TrialRecord, plan: _Plan) -> str:
    params = ", ".join(f"{k}={fmt(v)}" for k, v in record.params.items())
    outcome = {
        "complete": f"{record.value:.4f}" if record.value is not None else "",
        "pruned": f"pruned at step {record.pruned_at_step}",
        "failed": f"failed: {record.error}",
    }.get(record.state, record.state)
    return f"trial {record.number}: {params} -> {plan.metric} {outcome} ({record.wall_s:.1f} s)"


def _mark_run_dir(run_dir: Path, record: TrialRecord) -> None:
    """trial.json in the trial's run directory says how the trial ended (a pruned run stays partial)."""
    if run_dir.is_dir():
        (run_dir / "trial.json").write_text(json.dumps(asdict(record), indent=2))
