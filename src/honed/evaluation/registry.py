"""Build an evaluation task by name: built-ins, installed plugins, or a local task file.

The names and where each comes from are `config.tasks` (the recipe schema checks `eval.task` against
that table). A factory is a class or function that takes the task options as keyword arguments and
returns an object with the `Task` protocol (`honed.evaluation.tasks.Task`) or the `ModelTask` protocol
(`honed.evaluation.likelihood`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from honed.config.tasks import task_target
from honed.errors import ConfigError


def build_task_factory(name: str, task_files: Sequence[str | Path] = ()) -> Callable[..., Any]:
    """The factory registered as `name`, or a ConfigError that names the known tasks."""
    return _resolve(task_target(name, task_files))


def build_task(
    name: str, options: dict[str, Any] | None = None, task_files: Sequence[str | Path] = ()
) -> Any:
    """The task `name` built with `options`, or a ConfigError that names the known tasks."""
    factory = build_task_factory(name, task_files)
    try:
        inspect.signature(factory).bind(**(options or {}))
    except TypeError as exc:
        raise ConfigError(f"eval.task_options for task {name!r}: {exc}") from None
    except ValueError:  # no signature available (builtins); let the call decide
        pass
    return factory(**(options or {}))


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
