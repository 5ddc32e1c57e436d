"""Recipe loading: strict keys with "did you mean", every problem at once, overrides, YAML errors, paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from honed.config.load import apply_override, dump_recipe, load_recipe
from honed.errors import ConfigError


def minimal() -> dict:
    """A fresh minimal raw recipe (a new dict each time: load_recipe may write overrides into `base`)."""
    return {"data": {"train": "train.jsonl", "validation": "validation.jsonl"}}


def _write(tmp_path: Path, raw: dict | str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


def _error(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_recipe(**kwargs)
    return str(info.value)


def test_minimal_recipe_gets_schema_defaults() -> None:
    recipe = load_recipe(base=minimal())
    assert recipe.model.base == "smollm2-135m-instruct"
    assert recipe.data.format == "auto"
    assert recipe.train.lr == 2e-4
    assert recipe.eval.split == "validation"


@pytest.mark.parametrize(
    ("section", "wrong", "suggestion"),
    [
        ("train", "learning_rate", "train.lr"),
        ("data", "fromat", "data.format"),
        ("lora", "rank", "lora.r"),
        ("train", "gradient_accumulation_steps", "train.grad_accum_steps"),
        ("data", "max_length", "data.max_seq_len"),
    ],
)
def test_unknown_key_suggests_the_right_one(section: str, wrong: str, suggestion: str) -> None:
    raw = {**minimal(), section: {**minimal().get(section, {}), wrong: 1}}
    message = _error(base=raw)
    assert f"unknown key '{section}.{wrong}'" in message
    assert f"did you mean '{suggestion}'?" in message
    assert "1 problem:" in message


def test_unknown_top_level_key_suggests_section() -> None:
    message = _error(base={**minimal(), "trian": {"lr": 1e-4}})
    assert "unknown key 'trian'" in message
    assert "did you mean 'train'?" in message


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    message = _error(base={**minimal(), "train": {"zzzzqqq": 1}})
    assert "unknown key 'train.zzzzqqq'" in message
    assert "did you mean" not in message


def test_every_problem_is_reported_in_one_error() -> None:
    raw = {
        "data": {"train": "t.jsonl", "validation": "v.jsonl", "fromat": "chat"},
        "train": {"learning_rate": 1e-4, "batch_size": 0},
        "eval": {"task": "bleu"},
    }
    message = _error(base=raw)
    assert "4 problems:" in message
    assert "did you mean 'data.format'?" in message
    assert "did you mean 'train.lr'?" in message
    assert "train.batch_size" in message and "(got 0)" in message
    assert "eval.task" in message and "'bleu'" in message
    assert message.count(";") == 3


def test_missing_required_key_is_named() -> None:
    message = _error(base={"data": {"validation": "v.jsonl"}})
    assert "data.train: required key is missing" in message


def test_cross_field_problems_are_gathered() -> None:
    raw = {
        "data": {"train": "t.jsonl", "validation": "v.jsonl", "holdout_fraction": 0.1, "format": "template"}
    }
    message = _error(base=raw)
    assert "format 'template' needs both data.prompt_template and data.completion_template" in message
    assert "set data.validation or data.holdout_fraction, not both" in message


def test_template_format_without_templates_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, {"data": {**minimal()["data"], "format": "template", "prompt_template": "{q}"}})
    message = _error(path=path)
    assert message.startswith(str(path))
    assert "needs both data.prompt_template and data.completion_template" in message


def test_eval_split_validation_needs_validation_data() -> None:
    message = _error(base={"data": {"train": "t.jsonl"}})
    assert "eval.split is 'validation'" in message
    assert (
        load_recipe(base={"data": {"train": "t.jsonl"}}, overrides=["eval.split=train"]).eval.split == "train"
    )


@pytest.mark.parametrize(
    ("override", "getter", "expected"),
    [
        ("train.max_steps=3", lambda r: r.train.max_steps, 3),
        ("train.lr=1e-4", lambda r: r.train.lr, 1e-4),
        ("train.lr=0.0005", lambda r: r.train.lr, 5e-4),
        ("train.group_by_length=false", lambda r: r.train.group_by_length, False),
        ("model.trust_remote_code=true", lambda r: r.model.trust_remote_code, True),
        ("eval.max_rows=null", lambda r: r.eval.max_rows, None),
        ("lora.target_modules=[q_proj, v_proj]", lambda r: r.lora.target_modules, ["q_proj", "v_proj"]),
        ("model.base=some/where", lambda r: r.model.base, "some/where"),
        ("data.system_prompt=x=y", lambda r: r.data.system_prompt, "x=y"),
        ("data.system_prompt=", lambda r: r.data.system_prompt, ""),
    ],
)
def test_override_values_are_parsed_as_yaml(override: str, getter, expected) -> None:
    assert getter(load_recipe(base=minimal(), overrides=[override])) == expected


def test_override_creates_missing_sections_and_replaces_file_values(tmp_path: Path) -> None:
    path = _write(tmp_path, {**minimal(), "train": {"lr": 0.1, "seed": 7}})
    recipe = load_recipe(path, ["train.lr=1e-5", "output.run_name=x"])
    assert recipe.train.lr == 1e-5
    assert recipe.train.seed == 7
    assert recipe.output.run_name == "x"


def test_override_yaml_floats_like_1e_4_are_floats() -> None:
    # YAML 1.1 reads "1e-4" as a string; the schema still coerces it to the float the user meant.
    recipe = load_recipe(base=minimal(), overrides=["train.lr=1e-4", "train.weight_decay=1e-2"])
    assert isinstance(recipe.train.lr, float) and recipe.train.lr == pytest.approx(1e-4)
    assert recipe.train.weight_decay == pytest.approx(0.01)


def test_overrides_with_unknown_keys_get_suggestions_too() -> None:
    message = _error(base=minimal(), overrides=["train.learning_rate=1e-4"])
    assert "did you mean 'train.lr'?" in message


@pytest.mark.parametrize("bad", ["train.lr", "=3", "  =x"])
def test_override_without_key_or_equals_is_an_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_override({}, bad)
    assert bad in _error(base=minimal(), overrides=[bad])


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'lr' holds a value, not a section"):
        apply_override({"train": {"lr": 1}}, "train.lr.x=2")


def test_missing_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _error(path=path) == f"{path}: recipe file not found"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  train: a.jsonl\n  validation: [unclosed\nmodel: {\n")
    message = _error(path=path)
    assert message.startswith(f"{path}:")
    line = int(message[len(str(path)) + 1 :].split(":")[0])
    assert 3 <= line <= 5
    assert "not valid YAML" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "- a\n- b\n")
    assert "a recipe is a YAML mapping of keys, got list" in _error(path=path)


def test_empty_recipe_file_reports_missing_data(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    message = _error(path=path)
    assert message.startswith(str(path))
    assert "data: required key is missing" in message


def test_relative_data_paths_resolve_against_the_recipe_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    absolute = tmp_path / "elsewhere" / "v.jsonl"
    path = _write(folder, {"data": {"train": "../data/train.jsonl", "validation": str(absolute)}})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # the working directory must not matter
    recipe = load_recipe(path)
    assert recipe.data.train == str((tmp_path / "data" / "train.jsonl").resolve())
    assert recipe.data.validation == str(absolute)


def test_overrides_do_not_modify_the_base_dict() -> None:
    base = minimal()
    load_recipe(base=base, overrides=["data.max_seq_len=64", "train.lr=1e-3"])
    assert base == minimal()


def test_relative_paths_from_a_base_dict_are_left_alone() -> None:
    assert load_recipe(base=minimal()).data.train == "train.jsonl"


def test_dump_recipe_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(base=minimal(), overrides=["train.lr=3e-4", "lora.target_modules=[q_proj]"])
    path = _write(tmp_path, dump_recipe(recipe))
    again = load_recipe(path)
    assert again.train.lr == recipe.train.lr
    assert again.lora.target_modules == ["q_proj"]
    assert again.model_dump(exclude={"data"}) == recipe.model_dump(exclude={"data"})
