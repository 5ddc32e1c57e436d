"""The real `honed` command on CPU with the tiny model: errors are one line and exit 2, help is instant,
validate reports the data, and train writes a complete run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from honed.cli.main import main


def _honed(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python -m honed.cli.main ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "honed.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def _write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def demo_recipe(tmp_path: Path, demo_dir: Path, tiny_model_dir: Path) -> Path:
    """The demo recipe on the tiny model, as a YAML file whose runs go under tmp_path/runs."""
    from honed.demo.data import demo_recipe_dict

    raw = demo_recipe_dict(demo_dir)
    raw["model"]["base"] = str(tiny_model_dir)
    raw["output"] = {"runs_dir": str(tmp_path / "runs"), "run_name": "tiny"}
    raw["train"]["threads"] = 1
    return _write_recipe(tmp_path / "demo.yaml", raw)


# --- errors --------------------------------------------------------------------------------------------


def test_missing_recipe_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    code, out, err = _run(capsys, "validate", str(missing))
    assert _assert_one_line_error(code, err) == f"error: {missing}: recipe file not found"
    assert out == ""


def test_missing_recipe_file_in_a_subprocess(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = _honed("train", str(missing))
    _assert_one_line_error(result.returncode, result.stderr, f"{missing}: recipe file not found")
    assert result.stdout == ""


def test_bad_key_in_recipe(tmp_path: Path, capsys) -> None:
    path = _write_recipe(
        tmp_path / "r.yaml",
        {"data": {"train": "t.jsonl", "validation": "v.jsonl"}, "train": {"learning_rate": 1e-4}},
    )
    code, _, err = _run(capsys, "validate", str(path))
    _assert_one_line_error(
        code, err, str(path), "unknown key 'train.learning_rate'", "did you mean 'train.lr'?"
    )


def test_bad_override(capsys, demo_recipe: Path) -> None:
    code, _, err = _run(capsys, "validate", str(demo_recipe), "train.lr")
    _assert_one_line_error(code, err, "override 'train.lr': expected key.sub=value")


def test_malformed_data_row_names_file_and_line(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", \n', encoding="utf-8")
    path = _write_recipe(
        tmp_path / "r.yaml",
        {"model": {"base": str(tiny_model_dir)}, "data": {"train": "bad.jsonl"}, "eval": {"split": "train"}},
    )
    code, out, err = _run(capsys, "validate", str(path))
    # Every malformed row on its own line under one error (here one), then a valid row and the fix.
    assert code == 2 and "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert lines[0] == f"error: {bad}: 1 malformed row:"  # relative to the recipe, reported as the full path
    assert lines[1].startswith(f"  {bad}:2: not valid JSON")
    assert lines[2].startswith("A valid prompt_completion row: {")
    assert "data.on_bad_row: skip" in lines[3]


def test_malformed_row_skipped_is_reported_by_validate(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", \n', encoding="utf-8")
    path = _write_recipe(
        tmp_path / "r.yaml",
        {"model": {"base": str(tiny_model_dir)}, "data": {"train": "bad.jsonl"}, "eval": {"split": "train"}},
    )
    code, out, _ = _run(capsys, "validate", str(path), "data.on_bad_row=skip")
    assert code == 0
    assert "train: 1 examples from 2 rows; 1 malformed skipped" in out
    assert f"  {bad}:2: not valid JSON" in out


def test_eval_of_a_missing_run_directory(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "eval", str(tmp_path / "no-such-run"))
    _assert_one_line_error(code, err, "no-such-run", "not a honed run directory")


def test_train_without_recipe_or_resume(capsys) -> None:
    code, _, err = _run(capsys, "train")
    _assert_one_line_error(code, err, "give a recipe file", "--resume RUN")


def test_resume_with_a_recipe_is_refused(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "train", "r.yaml", "--resume", str(tmp_path))
    _assert_one_line_error(code, err, "--resume RUN continues a run with its saved recipe")


def test_hub_id_that_cannot_be_fetched(tmp_path: Path, demo_recipe: Path) -> None:
    result = _honed(
        "validate",
        str(demo_recipe),
        "model.base=nobody-xyz/not-a-model",
        env={"HF_HOME": str(tmp_path / "hf")},
    )
    _assert_one_line_error(result.returncode, result.stderr, "'nobody-xyz/not-a-model'", "Hugging Face hub")


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    code, out, _ = _run(capsys)
    assert code == 2
    assert "usage: honed" in out


# --- help ----------------------------------------------------------------------------------------------


def test_help_is_fast_and_lists_every_command() -> None:
    start = time.perf_counter()
    result = _honed("--help", timeout=30)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0
    assert elapsed < 1.0, f"honed --help took {elapsed:.2f} s"
    for command in ("demo", "data", "train", "validate", "eval", "export"):
        assert command in result.stdout


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import sys; from honed.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'pydantic') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- validate and train on the tiny model --------------------------------------------------------------


def test_validate_prints_split_counts(demo_recipe: Path, capsys) -> None:
    code, out, err = _run(capsys, "validate", str(demo_recipe), "data.max_seq_len=1024")
    assert code == 0, err
    assert f"recipe {demo_recipe}: ok (sft, lora, base " in out
    assert "train: 48 examples from 48 rows; 0 malformed skipped" in out
    assert "validation: 8 examples from 8 rows; 0 malformed skipped" in out


def test_validate_json(demo_recipe: Path, capsys) -> None:
    code, out, _ = _run(
        capsys, "validate", str(demo_recipe), "data.max_train_rows=10", "data.max_seq_len=1024", "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"train", "validation"}
    assert report["train"]["examples"] == report["train"]["rows_read"] == 10
    assert report["validation"]["examples"] == 8
    assert report["train"]["tokens"]["max"] <= 1024
    assert report["train"]["label_tokens"] > 0


def test_train_end_to_end_writes_the_run_directory(demo_recipe: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "elsewhere"
    code, out, err = _run(
        capsys,
        "-q",
        "train",
        str(demo_recipe),
        "train.max_steps=3",
        "eval.max_rows=2",
        "eval.max_new_tokens=4",
        "data.max_seq_len=1024",
        f"output.runs_dir={runs}",
    )
    assert code == 0, err
    run_dir = runs / "tiny"
    for name in (
        "recipe.yaml",
        "env.json",
        "data/report.json",
        "data/dataset.json",
        "metrics.jsonl",
        "summary.json",
        "report.html",
        "final/adapter/adapter_model.safetensors",
        "eval/base/metrics.json",
        "eval/tuned/metrics.json",
        "checkpoints/step-00000003",
    ):
        assert (run_dir / name).exists(), name

    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 3
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert saved["train"]["max_steps"] == 3 and saved["data"]["max_seq_len"] == 1024
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["rows"] == 2
    assert summary["data"]["train"]["examples"] == 48
    used = json.loads((run_dir / "data" / "dataset.json").read_text())
    assert set(used) == {"train", "validation"} and len(used["train"]["sha256"]) == 64
    assert summary["dataset"] == used

    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("structured on 2 rows"))
    assert header.split()[-2:] == ["base", "tuned"]
    tuned = summary["eval"]["tuned"]
    assert any(line.startswith("  evaluation wall time: base") for line in lines)
    metric_lines = [line.split() for line in lines if line.startswith("  ") and "wall time" not in line]
    assert metric_lines and all(len(cells) == 3 for cells in metric_lines)
    for name, before, after in metric_lines:
        assert float(after) == pytest.approx(tuned[name], abs=5e-4)
        assert float(before) == pytest.approx(summary["eval"]["base"][name], abs=5e-4)
    assert f"run: {run_dir}" in out


def test_every_row_too_long_is_one_line(demo_recipe: Path, capsys) -> None:
    # The tiny tokenizer is one token per byte, so the demo's 256-token limit drops every row.
    code, _, err = _run(capsys, "validate", str(demo_recipe), "data.max_seq_len=64")
    _assert_one_line_error(code, err, "train data: no usable examples out of 48 rows", "48 too long")


def test_train_refuses_to_overwrite_a_run(demo_recipe: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text("name: x\n")
    code, _, err = _run(capsys, "train", str(demo_recipe), "train.max_steps=1")
    _assert_one_line_error(code, err, "already holds a run", f"honed train --resume {run_dir}")
