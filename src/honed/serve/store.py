"""Every request `honed serve` answers, and the feedback users post on it, in one SQL database.

This module owns the two tables (`served_requests`, `feedback`) and the only code that reads or writes
them, through SQLAlchemy Core, so any database it speaks works: SQLite files by default, PostgreSQL for a
shared store. It knows nothing about HTTP, models or datasets: the server records and adds feedback;
`honed.feedback` reads `entries()` back to build training data.

Feedback is appended, never updated: a request may be rated again, and the latest rating (highest `seq`)
is the one `entries()` reports. The SQL is portable (no dialect-specific statements); the only SQLite
specifics are connection settings (WAL journal, a busy timeout, use from several threads).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from honed.errors import ConfigError, DataError, NotFoundError
from honed.serve.settings import DEFAULTS

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection

log = logging.getLogger(__name__)

RATINGS = {-1: "bad", 0: "neutral", 1: "good"}
SQLITE_BUSY_TIMEOUT_S = 30
# The package to install for a database driver SQLAlchemy cannot import.
_DRIVER_HINTS = {
    "psycopg": "pip install psycopg",
    "psycopg2": "pip install psycopg2-binary",
    "asyncpg": "pip install asyncpg",
    "pymysql": "pip install pymysql",
    "mysqldb": "pip install mysqlclient",
}


@dataclass
class ServedRequest:
    """One answered request, as the server stores it (one row of `served_requests`)."""

    id: str  # the OpenAI response id, e.g. "chatcmpl-<hex>" / "cmpl-<hex>"
    created_s: float  # unix time
    model: str  # the model name the client asked for (adapter name)
    source: str | None  # what serves that name: a run directory path, or a model path/id for the base
    kind: str  # "chat" or "completion"
    messages: list[dict] | None  # chat: the request's messages; completion: None
    prompt: str  # the exact rendered prompt text the model continued
    response: str  # the generated text returned
    finish_reason: str  # "stop" | "length" | ...
    params: dict  # max_tokens, temperature, top_p, seed, stop
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


_METADATA = sa.MetaData()

REQUESTS = sa.Table(
    "served_requests",
    _METADATA,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("created_s", sa.Float, nullable=False, index=True),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("source", sa.Text),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("messages", sa.JSON(none_as_null=True)),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("finish_reason", sa.String(32), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("latency_s", sa.Float, nullable=False),
)

FEEDBACK = sa.Table(
    "feedback",
    _METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # order of arrival: latest wins
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("request_id", sa.String(128), sa.ForeignKey("served_requests.id"), nullable=False, index=True),
    sa.Column("created_s", sa.Float, nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("correction", sa.Text),
    sa.Column("comment", sa.Text),
)


class RequestStore:
    """The served requests and their feedback in the database at `url` (tables created if missing).

    Safe to share between threads: the server records from a worker thread while request handlers add
    feedback. `create=False` refuses a SQLite file that does not exist yet (for readers, so a typo in
    a path is an error rather than an empty store).
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = normalize_url(url)
        self.shown = hide_password(self.url)
        self._engine = _create_engine(self.url, self.shown, create)
        # SQLite allows one writer at a time; serialising this process's writes avoids busy retries.
        self._write_lock = threading.Lock() if self._engine.dialect.name == "sqlite" else None
        try:
            _METADATA.create_all(self._engine)
        except sa.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise ConfigError(f"store {self.shown}: cannot open the database ({_reason(exc)})") from None

    def record(self, entry: ServedRequest) -> None:
        """Store one answered request. A request id stored before is a DataError."""
        try:
            with self._writing() as conn:
                conn.execute(REQUESTS.insert().values(**asdict(entry)))
        except sa.exc.IntegrityError:
            raise DataError(f"store {self.shown}: request {entry.id!r} is already stored") from None

    def add_feedback(
        self, request_id: str, rating: int, correction: str | None = None, comment: str | None = None
    ) -> str:
        """Store a rating (-1 bad, 0 neutral, 1 good), an optional corrected answer and a comment for a
        stored request; return the feedback id ("fb-<hex>"). NotFoundError for an unknown request id."""
        _check_feedback(rating, correction)
        feedback_id = f"fb-{uuid.uuid4().hex}"
        with self._writing() as conn:
            known = conn.execute(sa.select(REQUESTS.c.id).where(REQUESTS.c.id == request_id)).first()
            if known is None:
                raise NotFoundError(
                    f"request {request_id!r} is not stored in {self.shown}; feedback needs the id of an "
                    "answer this server returned (the response's `id`, e.g. chatcmpl-...)"
                )
            conn.execute(
                FEEDBACK.insert().values(
                    id=feedback_id,
                    request_id=request_id,
                    created_s=time.time(),
                    rating=rating,
                    correction=correction,
                    comment=comment,
                )
            )
        return feedback_id

    def entries(self, since_s: float | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Every stored request (created at or after `since_s`, served as `model`), oldest first, each with
        `feedback`: its latest feedback as {id, created_s, rating, correction, comment}, or None."""
        latest = (
            sa.select(FEEDBACK.c.request_id, sa.func.max(FEEDBACK.c.seq).label("seq"))
            .group_by(FEEDBACK.c.request_id)
            .subquery()
        )
        fb = [FEEDBACK.c[name].label(f"fb_{name}") for name in _FEEDBACK_FIELDS]
        query = (
            sa.select(REQUESTS, *fb)
            .select_from(
                REQUESTS.outerjoin(latest, latest.c.request_id == REQUESTS.c.id).outerjoin(
                    FEEDBACK, FEEDBACK.c.seq == latest.c.seq
                )
            )
            .order_by(REQUESTS.c.created_s, REQUESTS.c.id)
        )
        if since_s is not None:
            query = query.where(REQUESTS.c.created_s >= since_s)
        if model is not None:
            query = query.where(REQUESTS.c.model == model)
        with self._engine.connect() as conn:
            return [_entry(row._mapping) for row in conn.execute(query)]

    def count(self) -> dict[str, int]:
        """{"requests": stored requests, "feedback": stored feedback posts (every one, not only latest)}."""
        with self._engine.connect() as conn:
            requests = conn.execute(sa.select(sa.func.count()).select_from(REQUESTS)).scalar_one()
            feedback = conn.execute(sa.select(sa.func.count()).select_from(FEEDBACK)).scalar_one()
        return {"requests": int(requests), "feedback": int(feedback)}

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def _writing(self) -> _Locked:
        """A transaction, committed on success; SQLite writes from this process go one at a time."""
        return _Locked(self._engine, self._write_lock)


_FEEDBACK_FIELDS = ("id", "created_s", "rating", "correction", "comment")


class _Locked:
    """`engine.begin()` under an optional lock."""

    def __init__(self, engine: sa.Engine, lock: threading.Lock | None) -> None:
        self._engine, self._lock = engine, lock
        self._begin: AbstractContextManager[sa.Connection] | None = None

    def __enter__(self) -> sa.Connection:
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._begin = self._engine.begin()
            return self._begin.__enter__()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            assert self._begin is not None, "__exit__ runs only after a successful __enter__"
            return self._begin.__exit__(exc_type, exc, tb)
        finally:
            if self._lock is not None:
                self._lock.release()


def open_store(url: str | None) -> RequestStore | None:
    """The store at `url`, or None when storage is off (`None` or "off"). A bare path ("feedback.db")
    means a SQLite file."""
    if url is None or url.strip().lower() == "off":
        return None
    return RequestStore(url)


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL: unchanged when it has a scheme, else a SQLite file path ("x.db" -> sqlite:///x.db)."""
    url = url.strip()
    if not url:
        raise ConfigError("store: empty URL; give a SQLite path (feedback.db) or a database URL")
    if "://" in url:
        return url
    return f"sqlite:///{Path(url).expanduser()}"


def hide_password(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def _create_engine(url: str, shown: str, create: bool) -> sa.Engine:
    """An engine for `url`, or a ConfigError that names the URL and the fix."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"store {shown}: not a database URL; expected a SQLite path (feedback.db), "
            "sqlite:///path/feedback.db or postgresql+psycopg://user:password@host/db"
        ) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs = _sqlite_options(parsed, shown, create)
    try:
        engine = sa.create_engine(url, **kwargs)
    except sa.exc.NoSuchModuleError:
        raise ConfigError(
            f"store {shown}: SQLAlchemy knows no database {parsed.drivername!r}; use sqlite:///PATH or "
            "postgresql+psycopg://user:password@host/db"
        ) from None
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        fix = _DRIVER_HINTS.get(missing.lower(), f"install the Python driver for {parsed.drivername}")
        raise ConfigError(f"store {shown}: the database driver {missing!r} is not installed; {fix}") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_options(parsed: sa.engine.URL, shown: str, create: bool) -> dict[str, Any]:
    """Connection options for SQLite: usable from several threads, a busy timeout, and for an in-memory
    database one shared connection (each new connection would otherwise see an empty database)."""
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}}
    database = parsed.database
    if not database or database == ":memory:":
        options["poolclass"] = sa.pool.StaticPool
        return options
    path = Path(database)
    if not create and not path.is_file():
        raise ConfigError(
            f"store {shown}: no such SQLite file {path}; `honed serve` writes ./{DEFAULTS.store} by default, "
            "pass --store PATH or URL of the store it used"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"store {shown}: cannot create the folder {path.parent} ({exc.strerror})") from None
    return options


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: sa.pool.ConnectionPoolEntry) -> None:
    """WAL lets readers (feedback export) run while the server writes; foreign keys on as elsewhere."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _check_feedback(rating: Any, correction: str | None) -> None:
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        raise ConfigError(f"rating: must be -1 (bad), 0 (neutral) or 1 (good), got {rating!r}")
    if correction is not None and not correction.strip():
        raise ConfigError("correction: empty; leave it out, or give the answer the model should have given")


def _entry(row: sa.RowMapping) -> dict[str, Any]:
    entry = {column.name: row[column.name] for column in REQUESTS.columns}
    fb = {name: row[f"fb_{name}"] for name in _FEEDBACK_FIELDS}
    entry["feedback"] = fb if fb["id"] is not None else None
    return entry


def _reason(exc: Exception) -> str:
    """The driver's message, first line only, without SQLAlchemy's background link."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
