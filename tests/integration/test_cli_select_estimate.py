"""`honed estimate`, `honed train`'s memory check and `honed select`, through the CLI on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honed.cli.main import main


@pytest.fixture
def recipe_file(tiny_recipe, tmp_path: Path) -> Path:
    from honed.config.load import dump_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(dump_recipe(tiny_recipe("eval.max_rows=3")))
    return path


def test_estimate_prints_the_parts_and_calibrates(recipe_file: Path, capsys) -> None:
    assert main(["-q", "estimate", str(recipe_file), "--calibrate", "2"]) == 0
    out = capsys.readouterr().out
    for part in ("weights", "gradients", "optimizer", "activations", "allocator", "fits: yes", "measured"):
        assert part in out


def test_estimate_json_without_calibration(recipe_file: Path, capsys) -> None:
    assert main(["-q", "estimate", str(recipe_file), "--calibrate", "0", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["fits"] is True and found["calibrated"] == {}
    assert found["memory_bytes"]["total"] == sum(v for k, v in found["memory_bytes"].items() if k != "total")
    assert found["step_s"] > 0 and found["trainable_params"] < found["params"]


def test_train_refuses_a_run_that_does_not_fit_and_force_overrides(
    recipe_file: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("honed.sizing.fit.available_bytes", lambda device: 64 * 1024**2)
    assert main(["-q", "train", str(recipe_file)]) == 2
    err = capsys.readouterr().err
    assert "error: this run needs about" in err and "--force" in err
    runs = recipe_file.parent / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # the refused run left nothing behind
    assert main(["-q", "train", str(recipe_file), "--force"]) == 0
    (run,) = runs.iterdir()
    assert json.loads((run / "estimate.json").read_text())["fits"] is False


def test_select_ranks_two_local_models_and_writes_the_report(
    tiny_model_dir: Path, recipe_file: Path, tmp_path: Path, capsys
) -> None:
    from honed.models.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", hidden_size=48, seed=1)
    out_dir = tmp_path / "selection"
    argv = ["-q", "select", str(recipe_file), "--candidates", f"{tiny_model_dir},{other},no-such/model-xyz"]
    argv += ["--sample-rows", "3", "--few-shot-k", "1", "--trial-steps", "2", "--output", str(out_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "recommend" in out.lower() and str(other) in out
    report = json.loads((out_dir / "select.json").read_text())
    ranked = {c["name"]: c for c in report["ranked"]}
    for name in (str(tiny_model_dir), str(other)):
        found = ranked[name]
        assert found["evaluated"] and found["zero_shot"] is not None and found["few_shot"] is not None
        assert found["trial"] is not None and found["latency_s"] > 0 and found["train_memory_bytes"] > 0
        assert found["source"] == "folder"
    assert not ranked["no-such/model-xyz"]["evaluated"]
    assert report["recommendation"]["name"] in (str(tiny_model_dir), str(other))
    assert (out_dir / "report.html").read_text().count("<table") >= 2
