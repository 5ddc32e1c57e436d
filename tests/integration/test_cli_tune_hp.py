"""`honed tune-hp` end to end on CPU with the tiny model: the table is printed and written, a re-run with
the same --output resumes the study, a clearly worse learning rate is pruned, and a bad space is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from honed.cli.main import main
from honed.config.load import load_recipe

FAST = [
    "data.max_seq_len=1024",  # the tiny model's tokenizer is byte-level
    "train.max_steps=4",
    "train.eval_every_steps=null",
    "train.threads=1",
    "eval.max_rows=2",
    "eval.max_new_tokens=4",
    "eval.base=false",
]


@pytest.fixture
def tune_recipe(tmp_path: Path, demo_dir: Path, tiny_model_dir: Path) -> Path:
    """The demo recipe on the tiny model with a tune section, as a YAML file."""
    from honed.demo.data import demo_recipe_dict

    raw = demo_recipe_dict(demo_dir)
    raw["model"]["base"] = str(tiny_model_dir)
    raw["output"] = {"runs_dir": str(tmp_path / "runs")}
    raw["tune"] = {
        "space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "lora.alpha": {"choices": [8, 32]}},
        "trials": 2,
        "prune": False,
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_prints_the_table_and_resumes(tune_recipe: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "search"
    code, out, _ = _run(capsys, "tune-hp", str(tune_recipe), *FAST, "--output", str(output))
    assert code == 0
    assert "| trial | train.lr | lora.alpha | val_loss | state | wall_s |" in out
    assert f"train it: honed train {output / 'best.yaml'}" in out
    first = json.loads((output / "tune.json").read_text())["trials"]
    assert [t["state"] for t in first] == ["complete", "complete"]

    code, out, _ = _run(
        capsys, "tune-hp", str(tune_recipe), *FAST, "--output", str(output), "--trials", "3", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert len(result["trials"]) == 3
    assert [t["params"] for t in result["trials"][:2]] == [t["params"] for t in first]
    assert sorted(p.name for p in output.glob("trial-*")) == ["trial-000", "trial-001", "trial-002"]
    best = load_recipe(output / "best.yaml")
    assert best.train.lr == pytest.approx(result["best"]["params"]["train.lr"])
    assert best.lora.alpha == result["best"]["params"]["lora.alpha"]


def test_clearly_worse_learning_rate_is_pruned(tune_recipe: Path, tmp_path: Path, capsys) -> None:
    """Seed 1 proposes 1e-2, 1e-2, then 1e-7: the third trial trails the median at its first validation."""
    output = tmp_path / "search"
    space = "tune.space={train.lr: {choices: [1.0e-7, 1.0e-2]}}"
    args = ["tune-hp", str(tune_recipe), *FAST, space, "tune.prune=true", "tune.seed=1", "--trials", "3"]
    code, out, _ = _run(capsys, *args, "--output", str(output), "--json")
    assert code == 0
    trials = json.loads(out)["trials"]
    assert [(t["params"]["train.lr"], t["state"]) for t in trials] == [
        (1e-2, "complete"),
        (1e-2, "complete"),
        (1e-7, "pruned"),
    ]
    pruned = Path(trials[2]["run_dir"])
    assert json.loads((pruned / "trial.json").read_text())["pruned_at_step"] == 1
    assert not (pruned / "final").exists()  # stopped after its first validation


def test_empty_space_is_a_one_line_error(tune_recipe: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _run(
        capsys, "tune-hp", str(tune_recipe), "tune.space={}", "--output", str(tmp_path / "s")
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: tune.space is empty: nothing to search. Add a tune section, e.g. tune: ")


def test_unknown_key_is_a_one_line_error(tune_recipe: Path, capsys) -> None:
    code, _, err = _run(
        capsys, "tune-hp", str(tune_recipe), "tune.space={train.learning_rate: {low: 1, high: 2}}"
    )
    assert code == 2
    assert err.strip() == (
        "error: tune.space: 1 problem: unknown key 'train.learning_rate' (did you mean 'train.lr'?)"
    )
