"""Tests for honed.evaluation.sql: cleaning, execution accuracy on generated databases and the sandbox."""

import itertools
import json
import random
import sqlite3
import time
from pathlib import Path

import pytest

from honed.errors import DataError
from honed.evaluation.sql import (
    SqlTask,
    build_database,
    clean_prediction,
    generate_rows,
    gold_literals,
    normalize_sql,
    parse_select,
    results_match,
    run_query,
)
from honed.evaluation.tasks import Task

WIKISQL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "wikisql_create_context"
CONTEXT = "CREATE TABLE t (name VARCHAR, team VARCHAR, goals INTEGER)"
ROW = {"context": CONTEXT}
GOLD = "SELECT name FROM t WHERE team = 'Eagles'"


def score(prediction: str, gold: str = GOLD, task: SqlTask | None = None, row: dict | None = None) -> dict:
    return (task or SqlTask()).score(prediction, gold, row or ROW)


def test_sql_task_follows_the_task_protocol_and_aggregates():
    task = SqlTask()
    assert isinstance(task, Task)
    assert (task.name, task.primary_metric) == ("sql", "execution_accuracy")
    scores = [
        {"execution_accuracy": 1.0, "valid_sql": 1.0, "exact_match": 0.0},
        {"execution_accuracy": 0.0, "valid_sql": 1.0, "exact_match": 0.0},
    ]
    assert task.aggregate(scores) == {
        "execution_accuracy": 0.5,
        "valid_sql_rate": 1.0,
        "exact_match": 0.0,
        "rows": 2,
    }
    assert task.aggregate([])["rows"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        "```sql\nSELECT a FROM t;\n```",
        "```\nSELECT a FROM t\n```\nThis selects a.",
        "SQL: SELECT a FROM t;",
        "  SELECT a FROM t ;  \n\nExplanation: it selects column a.",
    ],
)
def test_clean_prediction_strips_fences_labels_semicolons_and_trailing_prose(raw):
    assert clean_prediction(raw) == "SELECT a FROM t"


def test_gold_query_is_correct_against_itself_and_exact_match_ignores_case_and_spacing():
    assert score(GOLD) == {"execution_accuracy": 1.0, "valid_sql": 1.0, "exact_match": 1.0}
    assert score("select   name from t\nwhere team = 'Eagles'")["exact_match"] == 1.0
    assert normalize_sql("SELECT  a FROM t") == normalize_sql("select a from T")


def test_fenced_prediction_is_scored_after_cleaning():
    assert score(f"```sql\n{GOLD};\n```")["execution_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("gold", "wrong"),
    [
        (GOLD, "SELECT name FROM t WHERE team = 'Hawks'"),
        (GOLD, "SELECT name FROM t WHERE team = 'eagles'"),
        ("SELECT SUM(goals) FROM t WHERE team = 'Eagles'", "SELECT AVG(goals) FROM t WHERE team = 'Eagles'"),
        ("SELECT MIN(goals) FROM t WHERE team = 'Eagles'", "SELECT MAX(goals) FROM t WHERE team = 'Eagles'"),
        ("SELECT COUNT(name) FROM t WHERE goals > 3", "SELECT COUNT(name) FROM t WHERE goals >= 3"),
        (
            "SELECT name FROM t WHERE team = 'Eagles' AND goals = 4",
            "SELECT name FROM t WHERE team = 'Eagles'",
        ),
        ("SELECT COUNT(team) FROM t", "SELECT COUNT(DISTINCT team) FROM t"),
        ("SELECT name FROM t WHERE team = 'Eagles'", "SELECT team FROM t WHERE team = 'Eagles'"),
    ],
)
def test_queries_equal_on_an_empty_table_differ_on_the_generated_rows(gold, wrong):
    empty = sqlite3.connect(":memory:")
    empty.execute(CONTEXT)
    assert empty.execute(gold).fetchall() == empty.execute(wrong).fetchall()  # indistinguishable when empty
    result = score(wrong, gold)
    assert result["execution_accuracy"] == 0.0
    assert result["valid_sql"] == 1.0


def test_count_and_sum_differ():
    gold = "SELECT COUNT(goals) FROM t WHERE team = 'Eagles'"
    assert score("SELECT SUM(goals) FROM t WHERE team = 'Eagles'", gold)["execution_accuracy"] == 0.0


@pytest.mark.parametrize(
    ("gold", "equivalent"),
    [
        (
            "SELECT name, goals FROM t WHERE team = 'Eagles'",
            "SELECT goals, name FROM t WHERE team = 'Eagles'",
        ),
        (
            "SELECT name FROM t WHERE team = 'Eagles'",
            "SELECT x.name AS player FROM t AS x WHERE x.team = 'Eagles'",
        ),
        ("SELECT COUNT(name) FROM t WHERE name = 'Ann'", "SELECT COUNT(*) FROM t WHERE name = 'Ann'"),
        ("SELECT name FROM t WHERE goals > 3", "select name from t where not goals <= 3"),
        ("SELECT name FROM t WHERE team = 'Eagles'", "SELECT name FROM t WHERE team IN ('Eagles')"),
        ("SELECT AVG(goals) FROM t", "SELECT SUM(goals) * 1.0 / COUNT(goals) FROM t"),
        (
            "SELECT name FROM t WHERE team = 'Eagles'",
            "SELECT name FROM t WHERE team = 'Eagles' ORDER BY goals",
        ),
    ],
)
def test_equivalent_queries_written_differently_are_correct_by_execution(gold, equivalent):
    result = score(equivalent, gold)
    assert result["execution_accuracy"] == 1.0
    assert result["exact_match"] == 0.0


def test_order_matters_only_when_the_gold_query_orders():
    gold = "SELECT name FROM t ORDER BY goals DESC"
    assert score("SELECT name FROM t ORDER BY goals ASC", gold)["execution_accuracy"] == 0.0
    assert results_match([(1,), (2,)], [(2,), (1,)], ordered=False)
    assert not results_match([(1,), (2,)], [(2,), (1,)], ordered=True)
    assert results_match([(18, "a")], [("a", 18.0000001)], ordered=False)  # column order, float tolerance
    assert not results_match([(1,), (1,)], [(1,)], ordered=False)  # multisets, not sets


@pytest.mark.parametrize("bad", ["SELECT name FROM", "SELEKT name FROM t", "SELECT nope FROM t", "hello"])
def test_invalid_sql_scores_zero(bad):
    result = score(bad)
    assert result["execution_accuracy"] == 0.0
    assert result["valid_sql"] == 0.0


def test_attach_is_refused_and_creates_no_file(tmp_path):
    target = tmp_path / "x.db"
    result = score(f"ATTACH DATABASE '{target}' AS x")
    assert result["execution_accuracy"] == result["valid_sql"] == 0.0
    conn = build_database(CONTEXT, {}, random.Random(0), 5, 1.0)
    with pytest.raises(sqlite3.DatabaseError):  # the authorizer refuses even without the sqlglot check
        run_query(conn, f"ATTACH DATABASE '{target}' AS x", 1.0)
    with pytest.raises(sqlite3.DatabaseError):
        run_query(conn, f"ATTACH DATABASE 'file:{target}?mode=rwc' AS x", 1.0)
    assert not target.exists()


@pytest.mark.parametrize(
    "probe",
    [
        "SELECT * FROM pragma_database_list",
        "SELECT name FROM pragma_table_info('t')",
        "SELECT * FROM x.sqlite_master",
        "SELECT load_extension('/tmp/evil')",
        "SELECT 1; DROP TABLE t",
        "DROP TABLE t",
        "INSERT INTO t VALUES ('a', 'b', 1)",
        "CREATE TEMP TABLE z (a)",
        "PRAGMA writable_schema = 1",
    ],
)
def test_predictions_cannot_leave_or_change_their_database(probe):
    assert score(probe)["execution_accuracy"] == 0.0
    conn = build_database(CONTEXT, {}, random.Random(0), 5, 1.0)
    with pytest.raises(sqlite3.Error):
        run_query(conn, probe, 1.0)
    assert len(run_query(conn, "SELECT * FROM t", 1.0)) == 5  # the table is untouched


def test_only_one_select_statement_passes_the_parser():
    assert parse_select("SELECT 1") is not None
    assert parse_select("WITH a AS (SELECT 1) SELECT * FROM a") is not None
    assert parse_select("SELECT 1 UNION SELECT 2") is not None
    assert parse_select("SELECT 1; DROP TABLE t") is None
    assert parse_select("DELETE FROM t") is None


def test_a_recursive_cte_that_never_ends_fails_within_the_timeout():
    task = SqlTask(timeout_s=0.5)
    loop = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r"
    start = time.monotonic()
    result = score(loop, task=task)
    assert time.monotonic() - start < 1.5
    assert result["execution_accuracy"] == 0.0
    blowup = "WITH RECURSIVE r(x) AS (SELECT 'a' UNION ALL SELECT x || x FROM r) SELECT LENGTH(x) FROM r"
    assert score(blowup, task=task)["execution_accuracy"] == 0.0  # stopped by the length limit, not memory


def test_gold_failing_everywhere_falls_back_to_exact_match():
    gold = "SELECT missing FROM t"
    assert score("select missing from t", gold)["execution_accuracy"] == 1.0
    assert score("SELECT name FROM t", gold)["execution_accuracy"] == 0.0


def test_missing_context_raises_data_error_naming_the_field():
    with pytest.raises(DataError, match="'schema'"):
        SqlTask(context_field="schema").score(GOLD, GOLD, ROW)


def test_gold_literals_and_generated_rows_make_where_clauses_match_some_rows():
    gold = "SELECT COUNT(x) FROM t WHERE \"order\" = 'Bob Vila' AND goals > -3 AND name LIKE '%an%'"
    literals = gold_literals(gold)
    assert literals["order"] == ["Bob Vila"]
    assert literals["goals"] == [-3]
    assert all("an" in value for value in literals["name"])
    columns = [("order", "VARCHAR"), ("goals", "INTEGER"), ("name", "VARCHAR")]
    rows = generate_rows(random.Random(0), columns, literals, 30)
    assert len(rows) == 30
    assert rows[0][:2] == ["Bob Vila", -3]
    assert sum(row[0] == "Bob Vila" for row in rows) < 30  # other values too
    assert any(row[0] is None for row in rows)
    assert any(isinstance(row[1], int) and row[1] > -3 for row in rows)


def test_scores_are_deterministic_under_a_seed():
    wrong = "SELECT name FROM t WHERE goals > 3"
    assert score(wrong, task=SqlTask(seed=7)) == score(wrong, task=SqlTask(seed=7))


def _wikisql_rows(count: int) -> list[dict]:
    path = WIKISQL / "validation.jsonl"
    if not path.exists():
        pytest.skip(f"shared WikiSQL data not found at {path.resolve()} (the shared data folder is absent)")
    with path.open() as f:
        return [json.loads(line) for line in itertools.islice(f, count)]


def test_real_wikisql_gold_queries_are_correct_against_themselves():
    rows = _wikisql_rows(200)
    task = SqlTask()
    scores = [task.score(row["answer"], row["answer"], row) for row in rows]
    assert task.aggregate(scores)["execution_accuracy"] >= 0.98
    assert task.aggregate(scores)["valid_sql_rate"] >= 0.98


def test_real_wikisql_negated_conditions_are_caught():
    rows = [row for row in _wikisql_rows(200) if " WHERE " in row["answer"]][:50]
    task = SqlTask()
    negated = [
        task.score(row["answer"].replace(" WHERE ", " WHERE NOT (", 1) + ")", row["answer"], row)
        for row in rows
    ]
    assert task.aggregate(negated)["execution_accuracy"] <= 0.04
