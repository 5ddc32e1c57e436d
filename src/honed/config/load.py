"""Load a recipe: YAML file + `key.sub=value` overrides -> a validated `Recipe`, or one ConfigError that
lists every problem at once, each with the key, the value seen and (for unknown keys) a "did you mean".

Relative data paths are resolved against the recipe file's folder, so a recipe works from any directory;
hub dataset ids (owner/name[:split]) are kept as they are.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from honed._utils.locations import is_hub_id
from honed.config.schema import Recipe
from honed.errors import ConfigError


def load_recipe(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    task_files: Sequence[str | Path] = (),
) -> Recipe:
    """Read a YAML recipe (or start from `base`), apply `key.sub=value` overrides and validate.

    `task_files` are local files defining custom evaluation tasks, so `eval.task` may name them.
    """
    raw: dict[str, Any] = copy.deepcopy(base or {})  # overrides must not leak into the caller's dict
    where = "recipe"
    if path is not None:
        path = Path(path)
        where = str(path)
        raw = _read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    recipe = validate_recipe(raw, where, task_files)
    if path is not None:
        _resolve_data_paths(recipe, path.resolve().parent)
    return recipe


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a YAML mapping of keys, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (so 3, true, null, [a, b] work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.sub=value, e.g. train.lr=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} holds a value, not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = text


def validate_recipe(
    raw: dict[str, Any], where: str = "recipe", task_files: Sequence[str | Path] = ()
) -> Recipe:
    """Validate a raw mapping, reporting every problem in one ConfigError."""
    try:
        return Recipe.model_validate(raw, context={"task_files": list(task_files)})
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(f"{where}: {len(problems)} {noun}: " + "; ".join(problems)) from None


def _describe(err: ErrorDetails) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = _did_you_mean(loc)
        return f"unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], dict):
        return f"{key}: {msg} (got {err['input']!r})"
    return f"{key}: {msg}" if loc else msg


def _did_you_mean(loc: list[str]) -> str | None:
    """Closest known key at the same level as the unknown one, written as its full dotted path."""
    model: type[BaseModel] | None = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part) if model else None
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is None:
        return None
    known = list(model.model_fields)
    synonym = _SYNONYMS.get(loc[-1])
    match = [synonym] if synonym in known else difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
    return ".".join([*loc[:-1], match[0]]) if match else None


# Names other tools use for the same setting (PEFT, TRL, Axolotl), mapped to honed's key.
_SYNONYMS = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "gradient_accumulation_steps": "grad_accum_steps",
    "per_device_train_batch_size": "batch_size",
    "warmup_steps": "lr_warmup_steps",
    "max_length": "max_seq_len",
    "sequence_len": "max_seq_len",
    "base_model": "base",
}


def _resolve_data_paths(recipe: Recipe, folder: Path) -> None:
    """Make relative data paths absolute against the recipe folder; hub ids and `:split` suffixes survive."""
    for name in ("train", "validation"):
        value = getattr(recipe.data, name)
        if value:
            setattr(recipe.data, name, _resolve_data_path(value, folder))
    leakage = recipe.prepare.leakage
    leakage.against = [_resolve_data_path(value, folder) for value in leakage.against]
    for name in ("replay", "general_eval"):
        value = getattr(recipe.cpt, name)
        if value:
            setattr(recipe.cpt, name, _resolve_data_path(value, folder))


def _resolve_data_path(value: str, folder: Path) -> str:
    if Path(value).is_absolute():
        return value
    local = folder / value
    base, sep, split = value.rpartition(":")
    if not local.exists() and sep and base and (folder / base).is_dir():
        return f"{(folder / base).resolve()}:{split}"  # a split of a saved DatasetDict
    if not local.exists() and is_hub_id(value):
        return value
    return str(local.resolve())


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what a run saves as recipe.yaml)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
