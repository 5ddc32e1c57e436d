"""The run directory layer: eval files written and read back, the final model's place, and a run's recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.errors import ConfigError
from honed.runs.directory import create_run_dir, load_run_recipe
from honed.runs.final import final_dir, load_tuned
from honed.runs.results import (
    BASE,
    TUNED,
    forget_eval,
    load_eval,
    load_metrics_log,
    load_probe,
    probe_numbers,
    read_json,
    save_eval,
    save_probe,
)


def test_eval_files_round_trip_and_a_missing_system_is_none(tmp_path: Path) -> None:
    predictions = [{"index": 0, "score": {"exact_match": 1.0}}, {"index": 1, "score": {"exact_match": 0.0}}]
    save_eval(tmp_path, TUNED, {"exact_match": 0.5}, predictions)
    assert load_eval(tmp_path, TUNED) == ({"exact_match": 0.5}, predictions)
    assert load_eval(tmp_path, BASE) is None
    forget_eval(tmp_path, TUNED)
    assert load_eval(tmp_path, TUNED) is None


def test_probe_numbers_leave_out_the_base_answers(tmp_path: Path) -> None:
    probe = {"general_text_perplexity": 12.5, "chat_answer_perplexity": 3.25, "base_answers": ["hi"]}
    save_probe(tmp_path, BASE, probe)
    assert load_probe(tmp_path, BASE) == probe
    assert probe_numbers(tmp_path, BASE) == {"general_text_perplexity": 12.5, "chat_answer_perplexity": 3.25}
    assert probe_numbers(tmp_path, TUNED) is None


def test_metrics_log_and_json_files_read_as_empty_before_they_exist(tmp_path: Path) -> None:
    assert load_metrics_log(tmp_path) == [] and read_json(tmp_path / "train.json") is None
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n")
    assert [m["step"] for m in load_metrics_log(tmp_path)] == [1, 2]


def test_a_run_directory_keeps_its_recipe_and_refuses_a_second_run(tiny_recipe) -> None:
    recipe = tiny_recipe("output.run_name=fixed")
    run_dir = create_run_dir(recipe)
    assert load_run_recipe(run_dir).model_dump() == recipe.model_dump()
    assert json.loads((run_dir / "env.json").read_text())["seed"] == recipe.train.seed
    with pytest.raises(ConfigError, match="already holds a run"):
        create_run_dir(tiny_recipe("output.run_name=fixed"))


def test_final_model_place_follows_the_adapter_and_an_unfinished_run_says_how_to_resume(tiny_recipe) -> None:
    recipe = tiny_recipe("output.run_name=unfinished")
    run_dir = create_run_dir(recipe)
    assert final_dir(run_dir, recipe) == run_dir / "final" / "adapter"
    assert final_dir(run_dir, tiny_recipe("adapter=full")) == run_dir / "final" / "model"
    with pytest.raises(ConfigError, match=f"honed train --resume {run_dir}"):
        load_tuned(run_dir, recipe)


def test_a_folder_without_a_recipe_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a honed run directory"):
        load_run_recipe(tmp_path)
