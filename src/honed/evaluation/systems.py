"""Where the systems of `honed compare` come from: run directories, or models scored on a recipe's rows.

A system spec is one of
- `RUN` or `RUN:tuned`: the run's tuned model, from its saved predictions;
- `RUN:base` / `RUN:few_shot`: the base model zero-shot / k-shot, as that run scored it;
- with `--recipe RECIPE`, any `model.base` value (the embedded name, a folder, a .gguf, a hub id) or a run's
  tuned model by `RUN:tuned`: a model is scored on the recipe's evaluation rows, zero-shot, and its
  predictions are cached under the comparison's output folder.
All systems must have been scored on the same rows (the comparison checks the references).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honed.config.schema import Recipe
from honed.errors import ConfigError
from honed.evaluation.compare import System, compare_systems
from honed.evaluation.compare_render import write_comparison
from honed.evaluation.evaluate import EvalTask, build_eval, evaluate_model
from honed.evaluation.registry import build_task
from honed.models.load import load_model, load_tokenizer, resolve_base, resolve_device, resolve_dtype
from honed.runs.directory import load_run_recipe
from honed.runs.results import BASE, FEW_SHOT, TUNED, load_eval, probe_numbers, save_eval

log = logging.getLogger(__name__)

LABELS = (BASE, FEW_SHOT, TUNED)


def compare(
    specs: Sequence[str],
    out_dir: str | Path,
    recipe: Recipe | None = None,
    task_files: Sequence[str | Path] = (),
    resamples: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare systems (the first is the reference) and write comparison.{json,md,html} to `out_dir`."""
    if len(specs) < 2:
        raise ConfigError("honed compare needs at least two systems, e.g. RUN:base RUN")
    out_dir = Path(out_dir)
    recipe = recipe or _first_run_recipe(specs, task_files)
    task = build_task(recipe.eval.task, recipe.eval.task_options, task_files)
    systems, probes = [], {}
    for spec in specs:
        system, probe = _load_system(spec, recipe, out_dir, task_files, progress)
        systems.append(system)
        if probe:
            probes[system.label] = probe
    result = compare_systems(task, systems, resamples=resamples, seed=seed)
    if probes:
        result["probe"] = probes
    result["files"] = {kind: str(path) for kind, path in write_comparison(result, out_dir).items()}
    return result


def run_comparison(run_dir: Path, recipe: Recipe, task: EvalTask) -> dict[str, Any] | None:
    """The comparison a finished run writes beside its report: base, few-shot and tuned, when present."""
    systems = [System(label, found[1]) for label in LABELS if (found := load_eval(run_dir, label))]
    if len(systems) < 2:
        return None
    result = compare_systems(task, systems)
    probes = {label: probe_numbers(run_dir, label) for label in (BASE, TUNED)}
    if all(probes.values()):
        result["probe"] = probes
    write_comparison(result, run_dir)
    return result


def _split(spec: str) -> tuple[str, str | None]:
    path, _, label = spec.rpartition(":")
    if path and label in LABELS and (Path(path) / "recipe.yaml").is_file():
        return path, label
    return spec, None


def _first_run_recipe(specs: Sequence[str], task_files: Sequence[str | Path]) -> Recipe:
    for spec in specs:
        path, _ = _split(spec)
        if (Path(path) / "recipe.yaml").is_file():
            return load_run_recipe(Path(path), task_files)
    raise ConfigError("no run directory among the systems: pass --recipe RECIPE to score models on its rows")


def _load_system(
    spec: str, recipe: Recipe, out_dir: Path, task_files: Sequence[str | Path], progress: bool
) -> tuple[System, dict[str, float] | None]:
    path, label = _split(spec)
    run_dir = Path(path)
    if (run_dir / "recipe.yaml").is_file():
        label = label or TUNED
        found = load_eval(run_dir, label)
        if found is None:
            raise ConfigError(f"{spec}: the run has no eval/{label}/ (score it with: honed eval {run_dir})")
        return System(f"{run_dir.name}:{label}", found[1]), probe_numbers(run_dir, label)
    return System(spec, _score_model(spec, recipe, out_dir, task_files, progress)), None


def _score_model(
    base: str, recipe: Recipe, out_dir: Path, task_files: Sequence[str | Path], progress: bool
) -> list[dict[str, Any]]:
    """Zero-shot predictions of model `base` on the recipe's rows, cached in out_dir/systems/."""
    cache = out_dir / "systems"
    label = hashlib.sha256(base.encode()).hexdigest()[:12]
    found = load_eval(cache, label)
    if found is not None:
        return found[1]
    task, rows = build_eval(recipe, task_files)
    device = resolve_device(recipe.train.device)
    folder = resolve_base(base, recipe.model.revision).folder
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    model = load_model(
        folder, resolve_dtype(recipe.model.dtype, device), device, recipe.model.trust_remote_code
    )
    metrics, predictions = evaluate_model(model, tokenizer, rows, recipe, task, base, progress)
    save_eval(cache, label, metrics, predictions)
    return predictions
