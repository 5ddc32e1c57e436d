"""Every shipped recipe under recipes/ validates, points at data that exists, and names real row fields."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from honed.config.load import load_recipe

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO.parent / "shared" / "data"
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def _template_fields(template: str | None) -> set[str]:
    """Return the top-level field names a format string reads, e.g. {"ref"} for "Sentence: {ref}"."""
    if not template:
        return set()
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return {name.split(".")[0].split("[")[0] for name in names}


def _require_shared_data() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent: {SHARED_DATA} holds the datasets the shipped recipes read")


def test_recipes_are_shipped() -> None:
    assert {path.name for path in RECIPES} >= {"viggo.yaml", "wikisql.yaml", "gsm8k.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.model.base == "smollm2-135m-instruct"
    assert recipe.data.validation or recipe.data.holdout_fraction


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_data_files_exist(path: Path) -> None:
    _require_shared_data()
    recipe = load_recipe(path)
    for data_file in (recipe.data.train, recipe.data.validation):
        if data_file is not None:
            assert Path(data_file).is_file(), f"{path.name}: {data_file} does not exist"


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_template_fields_are_in_the_first_train_row(path: Path) -> None:
    _require_shared_data()
    recipe = load_recipe(path)
    with open(recipe.data.train, encoding="utf-8") as handle:
        row = json.loads(handle.readline())
    fields = _template_fields(recipe.data.prompt_template) | _template_fields(recipe.data.completion_template)
    if recipe.data.slice_field:
        fields.add(recipe.data.slice_field)
    assert fields <= set(row), f"{path.name}: fields {sorted(fields - set(row))} missing from {sorted(row)}"
    if recipe.data.format == "template":
        assert recipe.data.prompt_template.format_map(row)
        assert recipe.data.completion_template.format_map(row)
