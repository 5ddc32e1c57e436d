"""The task-name table the recipe schema checks `eval.task` against: built-ins by name, task files, and one
error that lists the known names (config never imports the evaluation code it names)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from honed.config.tasks import BUILTIN, task_target
from honed.errors import ConfigError


def test_builtins_are_names_of_code_not_the_code() -> None:
    assert task_target("structured") == BUILTIN["structured"] == "honed.evaluation.tasks:StructuredTask"


def test_unknown_task_names_the_closest_and_every_known_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'strucured' \(did you mean 'structured'\?\)") as e:
        task_target("strucured")
    assert all(name in str(e.value) for name in BUILTIN)


def test_a_task_file_adds_its_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text("class Mine:\n    pass\n\nTASKS = {'mine': Mine}\n")
    assert task_target("mine", [path]).__name__ == "Mine"


def test_validating_a_recipe_imports_no_evaluation_code() -> None:
    code = (
        "import sys\n"
        "from honed.config.load import validate_recipe\n"
        "validate_recipe({'data': {'train': 'x.jsonl', 'holdout_fraction': 0.1}, 'eval': {'task': 'sql'}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('honed.evaluation')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
