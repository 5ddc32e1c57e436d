"""The search space of `honed tune-hp`: `tune.space` checked key by key (each key must be a recipe key,
each range or choice a value the recipe schema accepts) and turned into Optuna distributions, and the
recipe of one trial (the recipe with the trial's values set, validated again)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from honed.config.load import validate_recipe
from honed.config.schema import Recipe
from honed.errors import ConfigError

_SPEC_FIELDS = ("low", "high", "log", "step", "choices")


_UNSEARCHABLE = ("tune", "output")  # the search's own settings, and where trials are written


_EXAMPLE = (
    "tune: {space: {train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}, lora.r: {choices: [8, 16, 32]}}, "
    "trials: 8}"
)


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def validate_space(recipe: Recipe, task_files: Sequence[str | Path] = ()) -> dict[str, BaseDistribution]:
    """`tune.space` as Optuna distributions, or one ConfigError listing every problem: malformed ranges,
    unknown recipe keys (with a "did you mean"), and values the recipe's schema refuses."""
    space = flatten_space(recipe.tune.space)
    if not space:
        raise ConfigError(f"tune.space is empty: nothing to search. Add a tune section, e.g. {_EXAMPLE}")
    problems: list[str] = []
    distributions: dict[str, BaseDistribution] = {}
    for key, spec in space.items():
        found = _distribution(key, spec, problems)
        if found is not None:
            distributions[key] = found
            problems += _recipe_problems(recipe, key, _sample_values(found), task_files)
    if problems:
        problems = list(dict.fromkeys(problems))
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(f"tune.space: {len(problems)} {noun}: " + "; ".join(problems))
    return distributions


def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> range. Accepts `{train.lr: {...}}` and the nested `{train: {lr: {...}}}` that an
    override such as `tune.space.train.lr={low: 1.0e-5, high: 1.0e-3}` produces."""
    flat: dict[str, Any] = {}
    for key, spec in space.items():
        name = f"{prefix}{key}"
        nested = isinstance(spec, dict) and spec and not set(spec) & set(_SPEC_FIELDS)
        if nested and all(isinstance(value, dict) for value in spec.values()):
            flat.update(flatten_space(spec, f"{name}."))
        else:
            flat[name] = spec
    return flat


def _distribution(key: str, spec: Any, problems: list[str]) -> BaseDistribution | None:
    """The range `spec` as an Optuna distribution; problems are appended, naming `key`."""
    where = f"tune.space.{key}"
    if key.split(".")[0] in _UNSEARCHABLE:
        problems.append(f"{where}: {key.split('.')[0]}.* cannot be searched (it configures the search)")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected {{low, high}} or {{choices: [...]}}, got {spec!r}")
        return None
    unknown = sorted(set(spec) - set(_SPEC_FIELDS))
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {', '.join(unknown)} (use low, high, log, step or choices)"
        )
        return None
    if "choices" in spec:
        return _categorical(where, spec, problems)
    return _numeric(where, spec, problems)


def _categorical(where: str, spec: dict[str, Any], problems: list[str]) -> BaseDistribution | None:
    choices = spec["choices"]
    if set(spec) != {"choices"}:
        problems.append(f"{where}: give either choices or low/high, not both")
    elif not isinstance(choices, list) or not choices:
        problems.append(f"{where}: choices must be a non-empty list, got {choices!r}")
    elif not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        problems.append(f"{where}: choices must be numbers, strings, booleans or null, got {choices!r}")
    else:
        return CategoricalDistribution([_as_number(c) for c in choices])
    return None


def _numeric(where: str, spec: dict[str, Any], problems: list[str]) -> BaseDistribution | None:
    low, high = _as_number(spec.get("low")), _as_number(spec.get("high"))
    log_scale, step = bool(spec.get("log", False)), _as_number(spec.get("step"))
    numbers = [v for v in (low, high, step) if v is not None]
    if low is None or high is None:
        problems.append(f"{where}: needs low and high (or choices), got {spec!r}")
    elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        problems.append(f"{where}: low, high and step must be numbers, got {spec!r}")
    elif low >= high:
        problems.append(f"{where}: low ({low}) must be below high ({high})")
    elif log_scale and low <= 0:
        problems.append(f"{where}: log: true needs low above 0 (got {low})")
    elif step is not None and step <= 0:
        problems.append(f"{where}: step must be above 0 (got {step})")
    elif log_scale and step not in (None, 1):
        problems.append(f"{where}: give log or step, not both")
    elif all(isinstance(v, int) for v in numbers):
        return IntDistribution(low, high, log=log_scale, step=step or 1)
    else:
        return FloatDistribution(float(low), float(high), log=log_scale, step=step)
    return None


def _as_number(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as a string; a range means the number."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and not re.search(r"[.eE]", value) else number
    return value


def _sample_values(distribution: BaseDistribution) -> list[Any]:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _recipe_problems(
    recipe: Recipe, key: str, values: list[Any], task_files: Sequence[str | Path]
) -> list[str]:
    """What the recipe schema says about `key` set to each of `values` (unknown key, out of range...)."""
    problems = []
    for value in values:
        try:
            build_trial_recipe(recipe, {key: value}, task_files=task_files)
        except ConfigError as exc:
            found = re.sub(r"^tune\.space: \d+ problems?: ", "", str(exc))
            problems += found.split("; ")  # each names the key and, for a bad value, the value
    return problems


def build_trial_recipe(
    recipe: Recipe,
    params: dict[str, Any],
    changes: dict[str, Any] | None = None,
    task_files: Sequence[str | Path] = (),
) -> Recipe:
    """`recipe` with `changes` and then `params` (dotted key -> value) set, validated again."""
    raw = recipe.model_dump(mode="json")
    for key, value in {**(changes or {}), **params}.items():
        _set_key(raw, key, value)
    return validate_recipe(raw, "tune.space", task_files)


def _set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = raw
    for part in sections:
        if node.get(part) is None:  # an absent or null section (distill: null)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"tune.space.{key}: {part!r} holds a value, not a section")
    node[last] = value
