"""`honed data inspect` and `honed data prepare` through the real command line, on hand-made files and the
tiny model's tokenizer (and on ViGGO when ../shared is present)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from honed.cli.main import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


ROWS = [
    {"question": "What is 2 + 2?", "answer": "4", "topic": "math"},
    {"question": "what is 2 +   2?", "answer": "4", "topic": "math"},
    {"question": "Email bob@example.org the capital of Peru", "answer": "Lima", "topic": "geo"},
    {"question": "Capital of Chile?", "answer": "Santiago", "topic": "geo"},
]
TEMPLATE = ["--format", "template", "--prompt-template", "Q: {question}", "--completion-template", "{answer}"]


def test_inspect_prints_every_section(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    code, out, err = _run(
        capsys, "-q", "data", "inspect", str(path), "--model", str(tiny_model_dir), *TEMPLATE
    )
    assert code == 0, err
    assert out.startswith(f"{path}: 4 rows, format template\n")
    assert "fields: question (4), answer (4), topic (4)" in out
    assert "malformed rows: 0" in out
    assert "tokens per row: min " in out and "trained tokens per row:" in out
    assert "duplicates: 1 exact, 0 near" in out and f"{path}:2: exact duplicate of {path}:1" in out
    assert "personal data and secrets: email 1 (in 1 rows)" in out
    assert "<|im_start|>user\nQ: What is 2 + 2?<|im_end|>\n<|im_start|>assistant\n[[4<|im_end|>]]" in out


def test_inspect_json(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    code, out, _ = _run(capsys, "-q", "data", "inspect", str(path), "--model", str(tiny_model_dir), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["rows"] == 4 and report["format"] is None and report["pii"]["found"] == {"email": 1}


def test_prepare_writes_the_folder_and_says_how_to_train_on_it(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    _jsonl(tmp_path / "d.jsonl", ROWS * 5)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "qa",
                "model": {"base": str(tiny_model_dir)},
                "data": {
                    "train": "d.jsonl",
                    "format": "template",
                    "prompt_template": "Q: {question}",
                    "completion_template": "{answer}",
                },
                "eval": {"split": "train"},
                "prepare": {
                    "output_dir": str(tmp_path / "ds"),
                    "split": {"test_fraction": 0.34, "stratify_by": "topic"},
                },
            }
        )
    )
    code, out, err = _run(capsys, "-q", "data", "prepare", str(recipe))
    assert code == 0, err
    folder = next((tmp_path / "ds").iterdir())
    assert out.startswith(f"{folder}: written, content hash ")
    assert "rows written: train 2, test 1" in out  # 20 rows, 17 duplicates, 3 kept: one geo row to test
    assert f"data.train={folder.resolve() / 'train.jsonl'}" in out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["content_hash"].startswith(folder.name.removeprefix("qa-"))
    code, out, _ = _run(capsys, "-q", "data", "prepare", str(recipe))
    assert code == 0 and "already prepared (same content)" in out


def test_prepare_lists_every_malformed_row(tmp_path: Path, capsys) -> None:
    _jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, "{oops", {"prompt": "c"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"train": "d.jsonl"}, "eval": {"split": "train"}}))
    code, _, err = _run(capsys, "-q", "data", "prepare", str(recipe))
    assert code == 2 and "Traceback" not in err
    assert "d.jsonl: 2 malformed rows:" in err
    assert ":2: not valid JSON" in err and ":3: field 'completion' must be a non-empty string" in err


def test_inspect_viggo(shared_data: Path, tiny_model_dir: Path, capsys) -> None:
    path = shared_data / "viggo" / "train.jsonl"
    args = ["--prompt-template", "{ref}", "--completion-template", "{mr}"]
    code, out, err = _run(
        capsys,
        "-q",
        "data",
        "inspect",
        str(path),
        "--model",
        str(tiny_model_dir),
        "--max-rows",
        "300",
        "--format",
        "template",
        *args,
    )
    assert code == 0, err
    assert out.startswith(f"{path}: 300 rows, format template")
    assert "malformed rows: 0" in out


def test_a_run_on_a_prepared_dataset_records_its_hash(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(12)]
    _jsonl(tmp_path / "d.jsonl", rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "sums",
                "model": {"base": str(tiny_model_dir)},
                "data": {"train": "d.jsonl", "format": "template"} | _templates(),
                "train": {"max_steps": 1, "batch_size": 2, "threads": 2},
                "eval": {"split": "train", "max_rows": 1, "max_new_tokens": 2, "base": False},
                "prepare": {"output_dir": str(tmp_path / "ds")},
                "output": {"runs_dir": str(tmp_path / "runs"), "run_name": "run"},
            }
        )
    )
    assert _run(capsys, "-q", "data", "prepare", str(recipe))[0] == 0
    folder = next((tmp_path / "ds").iterdir())
    code, _, err = _run(capsys, "-q", "train", str(recipe), f"data.train={folder / 'train.jsonl'}")
    assert code == 0, err
    used = json.loads((tmp_path / "runs" / "run" / "data" / "dataset.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert used["train"]["dataset"] == {"name": "sums", "content_hash": manifest["content_hash"]}


def _templates() -> dict:
    return {"prompt_template": "Q: {question}", "completion_template": "{answer}"}


def test_models_lists_the_registry(capsys) -> None:
    code, out, _ = _run(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "params", "context", "license", "commercial", "template", "here"]
    assert lines[1].split()[:3] == ["smollm2-135m-instruct", "134M", "8192"] and lines[1].endswith("embedded")
    qwen3b = next(line for line in lines if line.startswith("qwen2.5-3b-instruct"))
    assert "Qwen Research License       no" in qwen3b
    code, out, _ = _run(capsys, "models", "--json")
    assert len(json.loads(out)) == len(lines) - 1
