"""The settings of `honed serve`, each default written once: the engine, the app, `honed serve` and
`honed feedback` all read them from here.

This module owns the defaults and nothing else: no validation beyond types, no I/O. It imports only the
standard library, because the CLI imports it at module level to build its flags and `honed --help` must
answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """How much the engine takes on at once: the part of `ServeSettings` the engine reads."""

    max_batch_size: int = 16  # rows decoded together
    max_queue: int = 64  # requests waiting to be admitted; one more is refused (429)
    request_timeout_s: float = 120.0  # from submission to the last token (queue wait included)


@dataclass(frozen=True)
class ServeSettings(EngineSettings):
    """Everything `honed serve` takes besides what to serve; each CLI flag has its field's name
    (`--max-batch-size` is `max_batch_size`), except `max_tokens_default`, which has no flag."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_tokens_limit: int = 1024  # the most tokens one choice may ask for
    max_tokens_default: int = 256  # what a choice gets when the request names no max_tokens
    store: str | None = "feedback.db"  # SQLAlchemy URL or path; None or "off": nothing is stored
    device: str = "auto"
    dtype: str = "auto"


DEFAULTS = ServeSettings()  # what the CLI shows as flag defaults
