"""The evaluation tasks a recipe may name (`eval.task`): built-ins, installed plugins, or a local task file.

A recipe names a task and can never name an import path, because a recipe may arrive over HTTP. Code
enters only through two doors the user opens on their own machine: a package that declares a
`honed.tasks` entry point, or a `.py` file given on the command line (`--task-file`). Such a file defines
`TASKS = {"name": factory}`.

This is the name table only: the recipe schema checks `eval.task` against it, and
`evaluation.registry` turns a name into a task. Built-ins are `module:attribute` strings, imported only
when that task is built, so the config layer never imports the evaluation code it names.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from honed.errors import ConfigError

ENTRY_POINT_GROUP = "honed.tasks"

# name -> "module:attribute", imported only when that task is used
BUILTIN = {
    "exact_match": "honed.evaluation.tasks:ExactMatchTask",
    "structured": "honed.evaluation.tasks:StructuredTask",
    "sql": "honed.evaluation.sql:SqlTask",
    "math": "honed.evaluation.numeric:MathTask",
    "perplexity": "honed.evaluation.likelihood:PerplexityTask",
    "choice": "honed.evaluation.likelihood:ChoiceTask",
    "preference": "honed.evaluation.preference:PreferenceTask",
}


def available(task_files: Sequence[str | Path] = ()) -> dict[str, Callable[..., Any] | str]:
    """Every task name this process can build: built-ins, entry points, then task files (later wins)."""
    table: dict[str, Callable[..., Any] | str] = dict(BUILTIN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        table[point.name] = point.value
    for path in task_files:
        table.update(_load_task_file(Path(path)))
    return table


def task_target(name: str, task_files: Sequence[str | Path] = ()) -> Callable[..., Any] | str:
    """What `name` is registered as (a factory, or a `module:attribute` string), or a ConfigError that
    names the known tasks."""
    table = available(task_files)
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"eval.task: unknown task {name!r}{hint}. Known: {', '.join(sorted(table))}. Custom "
            f"tasks come from a '{ENTRY_POINT_GROUP}' entry point or --task-file FILE.py"
        )
    return table[name]


def _load_task_file(path: Path) -> dict[str, Callable[..., Any]]:
    """Import a user's task file (given on the command line) and return its TASKS table."""
    if not path.is_file():
        raise ConfigError(f"--task-file {path}: file not found")
    spec = importlib.util.spec_from_file_location(f"honed_user_tasks_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--task-file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tasks = getattr(module, "TASKS", None)
    if not isinstance(tasks, dict) or not all(callable(f) for f in tasks.values()):
        raise ConfigError(f"--task-file {path}: define TASKS = {{'name': TaskClass}} at module level")
    return tasks
