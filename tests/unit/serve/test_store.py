"""The request store: round trip, latest feedback wins, clear errors, storage off, and threads."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from honed.errors import ConfigError, NotFoundError
from honed.serve.store import RequestStore, ServedRequest, hide_password, open_store


def served(i: int, model: str = "demo", kind: str = "chat", created_s: float | None = None) -> ServedRequest:
    return ServedRequest(
        id=f"chatcmpl-{i:04x}",
        created_s=1000.0 + i if created_s is None else created_s,
        model=model,
        source="runs/demo-1",
        kind=kind,
        messages=[{"role": "user", "content": f"question {i}"}] if kind == "chat" else None,
        prompt=f"<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n",
        response=f"answer {i}",
        finish_reason="stop",
        params={"max_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop": ["\n"]},
        prompt_tokens=12,
        completion_tokens=3,
        latency_s=0.25,
    )


@pytest.fixture
def store(tmp_path):
    found = RequestStore(f"sqlite:///{tmp_path / 'nested' / 'feedback.db'}")  # the folder is created
    yield found
    found.close()


def test_round_trip_with_latest_feedback(store, tmp_path):
    store.record(served(2))
    store.record(served(1))
    store.record(served(3, kind="completion"))
    first = store.add_feedback("chatcmpl-0001", 1)
    latest = store.add_feedback("chatcmpl-0001", -1, correction="the right answer", comment="wrong slot")
    assert first.startswith("fb-") and latest.startswith("fb-") and first != latest

    entries = store.entries()
    assert [e["id"] for e in entries] == ["chatcmpl-0001", "chatcmpl-0002", "chatcmpl-0003"]  # oldest first
    one = entries[0]
    assert one == {
        **served(1).__dict__,
        "feedback": {
            "id": latest,
            "created_s": one["feedback"]["created_s"],
            "rating": -1,
            "correction": "the right answer",
            "comment": "wrong slot",
        },
    }
    assert entries[1]["feedback"] is None
    assert entries[2]["messages"] is None and entries[2]["kind"] == "completion"
    assert store.count() == {"requests": 3, "feedback": 2}
    assert [e["id"] for e in store.entries(since_s=1002.0)] == ["chatcmpl-0002", "chatcmpl-0003"]

    # Another process (the exporter) opening the same file sees everything.
    again = RequestStore(str(tmp_path / "nested" / "feedback.db"), create=False)
    assert again.entries() == entries
    again.close()


def test_feedback_errors(store):
    store.record(served(1))
    with pytest.raises(NotFoundError, match="'chatcmpl-ffff' is not stored"):
        store.add_feedback("chatcmpl-ffff", 1)
    for rating in (2, -2, True, 1.0, "1"):
        with pytest.raises(ConfigError, match=r"rating: must be -1 \(bad\), 0 \(neutral\) or 1 \(good\)"):
            store.add_feedback("chatcmpl-0001", rating)
    with pytest.raises(ConfigError, match="correction: empty"):
        store.add_feedback("chatcmpl-0001", -1, correction="  ")
    assert store.count() == {"requests": 1, "feedback": 0}


def test_store_off_and_bare_paths(tmp_path, monkeypatch):
    assert open_store(None) is None
    assert open_store("off") is None
    monkeypatch.chdir(tmp_path)
    store = open_store("feedback.db")
    store.record(served(1))
    store.close()
    with sqlite3.connect(tmp_path / "feedback.db") as conn:  # a plain SQLite file with the two tables
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"served_requests", "feedback"} <= tables


def test_unopenable_stores_name_the_url_and_the_fix(tmp_path):
    with pytest.raises(
        ConfigError, match=r"postgresql\+psycopg://honed:\*\*\*@db/feedback.*pip install psycopg"
    ):
        RequestStore("postgresql+psycopg://honed:s3cret@db/feedback")
    with pytest.raises(ConfigError, match="knows no database 'nosuchdb'") as found:
        RequestStore("nosuchdb://user:s3cret@host/db")
    assert "s3cret" not in str(found.value)
    with pytest.raises(ConfigError, match="no such SQLite file"):
        RequestStore(str(tmp_path / "typo.db"), create=False)
    assert not (tmp_path / "typo.db").exists()
    assert hide_password("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"


def test_two_threads_record_while_feedback_arrives(store):
    """The server records from a worker thread while handlers add feedback: nothing is lost or locked."""
    store.record(served(0))
    errors: list[BaseException] = []

    def record(offset: int) -> None:
        try:
            for i in range(offset, offset + 40):
                store.record(served(i, created_s=2000.0 + i))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    def rate() -> None:
        try:
            for _ in range(40):
                store.add_feedback("chatcmpl-0000", 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(1,)), threading.Thread(target=record, args=(101,))]
    threads.append(threading.Thread(target=rate))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.count() == {"requests": 81, "feedback": 40}
    assert len({e["id"] for e in store.entries()}) == 81


def test_in_memory_store_is_one_database(tmp_path):
    store = RequestStore("sqlite://")
    store.record(served(1))
    store.add_feedback("chatcmpl-0001", 0)
    assert store.entries()[0]["feedback"]["rating"] == 0
    store.close()
