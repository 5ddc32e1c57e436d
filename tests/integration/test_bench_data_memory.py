"""bench/data_memory.py keeps working: it builds distinct rows from any question/context/answer JSONL,
measures each mode in its own process and ends with a parseable summary line. (No timing or memory
thresholds: those are what the bench itself reports.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "data_memory.py"
COLUMNS = ("name", "team", "score", "city", "year")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("data_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def source(tmp_path) -> Path:
    """40 hand-made WikiSQL-like rows (with an extra field the bench must drop)."""
    path = tmp_path / "source.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i in range(40):
            table = f"table_1_{1000 + i}_{i % 3 + 1}"
            asked, given = COLUMNS[i % 5], COLUMNS[(i + 2) % 5]
            row = {
                "question": f"What is the {asked} when the {given} is value {i * 7}?",
                "context": f"CREATE TABLE {table} ({asked} VARCHAR, {given} VARCHAR)",
                "answer": f"SELECT {asked} FROM {table} WHERE {given} = 'value {i * 7}'",
                "table_id": str(i),
            }
            out.write(json.dumps(row) + "\n")
    return path


def test_generated_rows_are_distinct_and_keep_the_three_fields(bench, source, tmp_path):
    out = tmp_path / "rows.jsonl"
    bench.write_rows(source, 130, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 130
    assert all(set(row) == {"question", "context", "answer"} for row in rows)
    assert len({json.dumps(row, sort_keys=True) for row in rows}) == 130
    # Row 41 is the first source row again, on the second cycle: its table renamed in context and answer.
    assert rows[40]["context"] == rows[0]["context"].replace("table_1_1000_1", "table_1_1000_1_v1")
    assert rows[40]["answer"].startswith("SELECT name FROM table_1_1000_1_v1 WHERE")
    assert rows[40]["question"].endswith("(row 41)")


def test_the_fallback_runner_measures_like_time(bench, source, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "TIME", tmp_path / "no-time-here")
    data = tmp_path / "data.jsonl"
    bench.write_rows(source, 200, data)
    run = bench.measure("stream", data, tmp_path)
    assert run["mode"] == "stream" and run["rows"] == 200 and run["rows_read"] == 200
    assert run["malformed"] == 0 and run["peak_rss_mb"] > 5 and run["wall_s"] > 0


def test_bench_runs_end_to_end_and_its_summary_parses(source, tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCH), "--rows", "300", "1200", "--data", str(source)]
    command += ["--modes", "stream", "inspect", "prepare", "--model", str(tiny_model_dir), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads(out.read_text())
    runs = {(run["mode"], run["rows"]): run for run in result["runs"]}
    assert set(runs) == {(mode, n) for mode in ("stream", "inspect", "prepare") for n in (300, 1200)}
    for run in runs.values():
        assert run["wall_s"] > 0 and run["peak_rss_mb"] > 5
    # Every row is read, and the rows are distinct: nothing is dropped as a duplicate.
    assert runs["stream", 1200]["rows_read"] == 1200
    assert runs["inspect", 1200]["rows_read"] == 1200
    assert runs["inspect", 1200]["duplicates"] == {"exact": 0, "near": 0}
    assert runs["prepare", 1200]["kept_rows"] == 1200
    assert runs["prepare", 1200]["duplicates"] == {"exact": 0, "near": 0}

    assert set(result["growth"]) == {"stream", "inspect", "prepare"}
    for found in result["growth"].values():
        assert (found["rows_from"], found["rows_to"]) == (300, 1200)
        assert found["rss_ratio"] > 0
    last = done.stdout.strip().splitlines()[-1]
    assert last == result["summary"]
    pairs = dict(pair.split("=") for pair in last.split())
    assert set(pairs) == {f"{mode}_{key}" for mode in result["growth"] for key in ("rss_ratio", "kb_per_row")}
    assert all(isinstance(float(value), float) for value in pairs.values())
