"""Text-to-SQL scoring by execution on generated databases, in the spirit of test-suite accuracy.

This module owns the `SqlTask`: it cleans a predicted query, builds a few throw-away in-memory SQLite
databases from a row's `CREATE TABLE` context, fills them with rows built from the gold query's literals
(so its WHERE clauses match some rows and miss others), and calls a prediction correct when it returns the
same result as the gold query on every database (Zhong, Yu & Klein 2020, "Semantic Evaluation for
Text-to-SQL with Distilled Test Suites"). It knows nothing about models or generation.

Predicted SQL is untrusted. It must parse as one SELECT (or WITH ... SELECT) query; it runs with
`conn.execute` (one statement) on a `:memory:` database under an authorizer that allows only reading,
and a progress handler stops it after `timeout_s` of wall time.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import re
import sqlite3
import string
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import sqlglot
from sqlglot import exp

from honed.errors import DataError

log = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n?(.*?)(?:```|\Z)", re.IGNORECASE | re.DOTALL)
_LABEL = re.compile(r"^\s*sql\s*:\s*", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
_SETUP_DENIED = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA})
# sqlglot raises mostly SqlglotError, but model output can also hit its recursion limit or odd tokens.
_PARSE_ERRORS = (sqlglot.errors.SqlglotError, RecursionError, ValueError, KeyError, TypeError)
_PROGRESS_STEPS = 1000  # VM instructions between two wall-clock checks
_MAX_RESULT_ROWS = 100_000
_MAX_VALUE_BYTES = 1_000_000
# Share of values picked from a small per-column pool, per database: some databases repeat values a lot
# (COUNT vs COUNT(DISTINCT) differ), one hardly at all (MIN over two different row sets differs).
_REPEAT_RATES = (0.3, 0.05, 0.5)
_WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "sierra", "tango", "zulu")
_Rows = list[tuple[Any, ...]]


def clean_prediction(text: str) -> str:
    """Return the SQL inside common wrappers: a ```sql fence, a leading "SQL:" label, text after the
    first blank line and a trailing semicolon are removed."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    text = _LABEL.sub("", text.strip(), count=1)
    text = _BLANK_LINE.split(text.strip(), maxsplit=1)[0]
    return text.strip().rstrip(";").strip()


def parse_select(sql: str) -> exp.Expression | None:
    """Return the sqlglot tree of `sql` when it is exactly one SELECT/WITH/UNION query, else None."""
    try:
        trees = [t for t in sqlglot.parse(sql, dialect="sqlite") if t is not None]
    except _PARSE_ERRORS:
        return None
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        return None
    return trees[0]


def normalize_sql(sql: str) -> str:
    """Return a canonical rendering of `sql` for exact match: sqlglot's normalized SQLite text, or the
    lower-cased, whitespace-collapsed text when sqlglot cannot parse it."""
    try:
        trees = [t for t in sqlglot.parse(sql, dialect="sqlite") if t is not None]
        if trees:
            return "; ".join(t.sql(dialect="sqlite", normalize=True) for t in trees)
    except _PARSE_ERRORS:
        pass
    return " ".join(sql.split()).lower()


# --- literals of the gold query -----------------------------------------------------------------------


def _literal_value(node: exp.Expression) -> Any:
    """Return the Python value of a literal node (`'x'`, `3`, `-2.5`), or None when it is not one."""
    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if not isinstance(node, exp.Literal):
        return None
    if node.is_string:
        return None if negative else node.this
    try:
        value: float = int(node.this)
    except ValueError:
        try:
            value = float(node.this)
        except ValueError:
            return None
    return -value if negative else value


def _compared_pairs(tree: exp.Expression) -> list[tuple[Any, Any, bool]]:
    """Return (column side, value side, is LIKE) candidates of every comparison, IN and BETWEEN in `tree`."""
    pairs: list[tuple[Any, Any, bool]] = []
    for node in tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike):
        like = isinstance(node, (exp.Like, exp.ILike))
        pairs += [(node.this, node.expression, like), (node.expression, node.this, like)]
    for node in tree.find_all(exp.In):
        pairs += [(node.this, value, False) for value in node.expressions]
    for node in tree.find_all(exp.Between):
        pairs += [(node.this, node.args.get("low"), False), (node.this, node.args.get("high"), False)]
    return pairs


def _like_matches(pattern: str) -> list[str]:
    """Return strings that match the LIKE `pattern` ('%ab_' gives 'abx' and 'zabx')."""
    core = pattern.replace("_", "x")
    return [core.replace("%", ""), core.replace("%", "z")]


def gold_literals(gold: str) -> dict[str, list[Any]]:
    """Return {lower-cased column name: literal values compared against it} from the gold query.

    `WHERE official_name = 'Eldon' AND pick > 3` gives {"official_name": ["Eldon"], "pick": [3]};
    a column wrapped in a function (`LOWER(name) = 'x'`) counts as that column. Unparsable SQL gives {}.
    """
    try:
        tree = sqlglot.parse_one(gold, dialect="sqlite")
    except _PARSE_ERRORS:
        return {}
    found: dict[str, list[Any]] = {}
    for side, other, like in _compared_pairs(tree):
        value = _literal_value(other) if isinstance(other, exp.Expression) else None
        column = side if isinstance(side, exp.Column) else side.find(exp.Column) if side else None
        if value is None or column is None:
            continue
        values = _like_matches(value) if like and isinstance(value, str) else [value]
        found.setdefault(column.name.lower(), []).extend(values)
    return found


# --- row generation -----------------------------------------------------------------------------------


def _affinity(declared: str) -> str:
    """Return "int", "real" or "text" for a declared column type, after SQLite's affinity rules."""
    declared = declared.upper()
    if "INT" in declared:
        return "int"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")) or not declared:
        return "text"
    return "real"


def _near_misses(value: Any) -> list[Any]:
    """Return values close to `value` that should not satisfy an equality with it."""
    if isinstance(value, (int, float)):
        return [value - 1, value + 1, value * 10 + 1, -value - 2]
    misses = [value + "x", value[:-1] or "q", value.upper(), value.lower(), value.title()]
    number = _as_number(value)
    if number is not None:
        misses += [str(number + 1), str(number - 1)]
    return [miss for miss in misses if miss != value]


def _as_number(text: str) -> float | None:
    """Return `text` as an int or float when it is one, else None."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return None


def _random_value(rng: random.Random, affinity: str) -> Any:
    """Return a random value for a column of the given affinity; half of the numbers are small."""
    if affinity == "int":
        return rng.randint(-20, 2000) if rng.random() < 0.5 else rng.randint(0, 30)
    if affinity == "real":
        return round(rng.uniform(-20, 2000), 1)
    kind = rng.random()
    if kind < 0.6:
        return rng.choice(_WORDS) + ("" if rng.random() < 0.5 else f" {rng.choice(_WORDS)}")
    if kind < 0.8:
        return str(rng.randint(0, 40))
    return "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 8)))


def _column_pool(rng: random.Random, affinity: str, literals: list[Any]) -> list[Any]:
    """Return the candidate values of one column: its gold literals, their near misses and random values."""
    pool = list(literals)
    for value in literals:
        pool += _near_misses(value)
    pool += [_random_value(rng, affinity) for _ in range(max(4, 8 - len(pool)))]
    return pool


def _row(
    rng: random.Random,
    columns: list[tuple[str, str]],
    pools: dict[str, list[Any]],
    lits: dict[str, list],
    repeat_rate: float,
) -> list[Any]:
    """Return one generated row: per column about 10% NULL, 35% a gold literal (when the column has one),
    `repeat_rate` a pick from the column's pool (so values repeat) and otherwise a fresh random value."""
    values: list[Any] = []
    for name, kind in columns:
        draw = rng.random()
        if draw < 0.1:
            values.append(None)
        elif draw < 0.45 and lits[name]:
            values.append(rng.choice(lits[name]))
        elif draw < 0.45 + repeat_rate:
            values.append(rng.choice(pools[name]))
        else:
            values.append(_random_value(rng, _affinity(kind)))
    return values


def generate_rows(
    rng: random.Random,
    columns: list[tuple[str, str]],
    literals: dict[str, list[Any]],
    count: int,
    repeat_rate: float = 0.3,
) -> list[list[Any]]:
    """Return `count` rows for a table with `columns` ((name, declared type) pairs).

    The first two rows carry the gold literal of every column that has one, so a conjunction of WHERE
    conditions matches; the rest mix literals, near misses, random values of the column's type (from a
    small pool, so values repeat and GROUP BY/DISTINCT/COUNT differ) and NULLs.
    """
    lits = {name: literals.get(name.lower(), []) for name, _ in columns}
    pools = {name: _column_pool(rng, _affinity(kind), lits[name]) for name, kind in columns}
    rows = []
    for index in range(count):
        row = _row(rng, columns, pools, lits, repeat_rate)
        if index < 2:
            row = [rng.choice(lits[name]) if lits[name] else row[i] for i, (name, _) in enumerate(columns)]
        rows.append(row)
    return rows


# --- sandboxed databases ------------------------------------------------------------------------------


def _query_guard(
    action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None
) -> int:
    """Authorizer for scored queries: reading and SELECT-only functions, nothing else."""
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _setup_guard(
    action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None
) -> int:
    """Authorizer while the row's CREATE TABLE context runs: no ATTACH, DETACH or PRAGMA."""
    if action in _SETUP_DENIED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _set_deadline(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Make every statement on `conn` from now on abort once `timeout_s` seconds of wall time have passed."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)


def _split_statements(script: str) -> list[str]:
    """Return the complete SQL statements of `script`, split at semicolons outside quotes and comments."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \t\r\n;"):
        statements.append(current.strip().rstrip(";"))
    return statements


def _connect() -> sqlite3.Connection:
    """Return a fresh in-memory connection that cannot attach databases or build huge values."""
    conn = sqlite3.connect(":memory:", uri=False)
    if hasattr(conn, "setlimit"):  # Python 3.11+
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
    return conn


def _quote(name: str) -> str:
    """Return `name` as a double-quoted SQLite identifier."""
    return '"' + name.replace('"', '""') + '"'


def _tables(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    """Return {table name: [(column name, declared type), ...]} for the tables of `conn`."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {
        name: [(r[1], r[2] or "") for r in conn.execute(f"PRAGMA table_info({_quote(name)})")]
        for name in names
        if not name.startswith("sqlite_")
    }


def build_database(
    context: str,
    literals: dict[str, list[Any]],
    rng: random.Random,
    rows_per_table: int,
    timeout_s: float,
    repeat_rate: float = 0.3,
) -> sqlite3.Connection:
    """Return an in-memory database with the tables of `context`, each filled with generated rows.

    The connection comes back under the read-only authorizer. Raises sqlite3.Error when the context does
    not run (a bad statement, ATTACH/PRAGMA, or longer than `timeout_s`).
    """
    conn = _connect()
    try:
        conn.set_authorizer(_setup_guard)
        _set_deadline(conn, timeout_s)
        for statement in _split_statements(context):
            conn.execute(statement)
        conn.set_authorizer(None)
        for table, columns in _tables(conn).items():
            marks = ", ".join("?" * len(columns))
            rows = generate_rows(rng, columns, literals, rows_per_table, repeat_rate)
            conn.executemany(f"INSERT INTO {_quote(table)} VALUES ({marks})", rows)
        conn.commit()
        conn.set_authorizer(_query_guard)
    except BaseException:
        conn.close()
        raise
    return conn


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float) -> _Rows:
    """Return the rows of one query on `conn`, or raise sqlite3.Error (also past `timeout_s`)."""
    _set_deadline(conn, timeout_s)
    cursor = conn.execute(sql)
    rows = cursor.fetchmany(_MAX_RESULT_ROWS + 1)
    if len(rows) > _MAX_RESULT_ROWS:
        raise sqlite3.OperationalError(f"result has more than {_MAX_RESULT_ROWS} rows")
    return rows


# --- result comparison --------------------------------------------------------------------------------


def _canon(value: Any) -> Any:
    """Return `value` with floats rounded (so 18 == 18.0 and 0.1 + 0.2 == 0.3)."""
    return round(value, 6) + 0.0 if isinstance(value, float) else value


def _column_orders(gold: _Rows, pred: _Rows) -> list[tuple[int, ...]]:
    """Return the permutations of the predicted columns whose values match gold column by column."""
    width = len(gold[0])
    gold_cols = [Counter(_canon(r[i]) for r in gold) for i in range(width)]
    pred_cols = [Counter(_canon(r[i]) for r in pred) for i in range(width)]
    choices = [[j for j in range(width) if pred_cols[j] == gold_cols[i]] for i in range(width)]
    orders = itertools.islice(itertools.product(*choices), 720)
    return [order for order in orders if len(set(order)) == width]


def results_match(gold: _Rows, pred: _Rows, ordered: bool) -> bool:
    """Return True when `pred` holds the same rows as `gold`, as multisets unless `ordered`.

    As in test-suite accuracy, columns may come in another order (aliases do not matter).
    """
    if len(gold) != len(pred):
        return False
    if not gold:
        return True
    if len(gold[0]) != len(pred[0]):
        return False
    gold_rows = [tuple(_canon(v) for v in row) for row in gold]
    for order in _column_orders(gold, pred):
        pred_rows = [tuple(_canon(row[j]) for j in order) for row in pred]
        if (gold_rows == pred_rows) if ordered else (Counter(gold_rows) == Counter(pred_rows)):
            return True
    return False


def _attempt(run: Callable[[], _Rows]) -> _Rows | None:
    """Return the rows of `run()`, or None when SQLite refuses, fails or times out."""
    try:
        return run()
    except (sqlite3.Error, OverflowError, ValueError, MemoryError, RecursionError):
        return None


class SqlTask:
    """Scores text-to-SQL predictions by execution on generated databases, validity and exact match."""

    name = "sql"
    primary_metric = "execution_accuracy"

    def __init__(
        self,
        context_field: str = "context",
        databases: int = 3,
        rows_per_table: int = 30,
        timeout_s: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.context_field = context_field
        self.databases = databases
        self.rows_per_table = rows_per_table
        self.timeout_s = timeout_s
        self.seed = seed

    def _context(self, fields: Mapping[str, Any] | None) -> str:
        """Return the CREATE TABLE context of a row, or raise DataError naming the missing field."""
        if not fields or not isinstance(fields.get(self.context_field), str):
            keys = sorted(fields) if fields else []
            raise DataError(
                f"sql task: the data row has no string field {self.context_field!r} with the CREATE TABLE "
                f"context (row keys: {keys}); set the task's context_field or pass the row as `fields`."
            )
        return fields[self.context_field]

    def _execution(self, context: str, gold: str, pred_ok: bool, prediction: str) -> tuple[float, float, int]:
        """Return (correct, valid, databases where gold ran) from running both queries on each database."""
        literals = gold_literals(gold)
        ordered = bool((tree := parse_select(gold)) and tree.args.get("order"))
        correct, valid, counted = True, False, 0
        for index in range(self.databases):
            rng = random.Random(f"{self.seed}:{index}:{context}:{gold}")
            try:
                repeat_rate = _REPEAT_RATES[index % len(_REPEAT_RATES)]
                conn = build_database(
                    context, literals, rng, self.rows_per_table, self.timeout_s, repeat_rate
                )
            except (sqlite3.Error, OverflowError) as error:
                log.debug("sql task: context does not build a database: %s", error)
                continue
            try:
                gold_rows = _attempt(functools.partial(run_query, conn, gold, self.timeout_s))
                pred_rows = (
                    _attempt(functools.partial(run_query, conn, prediction, self.timeout_s))
                    if pred_ok
                    else None
                )
            finally:
                conn.close()
            valid = valid or (index == 0 and pred_rows is not None)
            if gold_rows is None:
                continue
            counted += 1
            if pred_rows is None or not results_match(gold_rows, pred_rows, ordered):
                correct = False
                break  # already wrong; skip the other databases (a slow prediction costs one timeout)
        return float(correct and counted > 0), float(valid), counted

    def score(
        self, prediction: str, reference: str, fields: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Return execution accuracy, valid SQL (1/0) and exact match (1/0) for one prediction.

        When the gold query fails on every database, execution accuracy falls back to exact match.
        """
        context = self._context(fields)
        prediction, gold = clean_prediction(prediction), clean_prediction(reference)
        pred_ok = parse_select(prediction) is not None
        exact = float(normalize_sql(prediction) == normalize_sql(gold))
        correct, valid, counted = self._execution(context, gold, pred_ok, prediction)
        if counted == 0:
            correct = exact
        return {"execution_accuracy": correct, "valid_sql": valid, "exact_match": exact}

    def aggregate(self, scores: list[dict[str, float]]) -> dict[str, float]:
        """Return execution accuracy, the valid-SQL rate, exact match and the row count."""
        n = len(scores)

        def mean(key: str) -> float:
            return sum(float(s.get(key, 0.0)) for s in scores) / n if n else 0.0

        return {
            "execution_accuracy": mean("execution_accuracy"),
            "valid_sql_rate": mean("valid_sql"),
            "exact_match": mean("exact_match"),
            "rows": n,
        }
