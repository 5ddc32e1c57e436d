"""Prometheus metrics of one server (its own registry, so two apps in one process do not mix counts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from honed.serve.engine import Engine

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """Requests, latencies, tokens, queue depth and batch sizes, as `/metrics` reports them."""

    def __init__(self, engine: Engine) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "honed_requests", "Finished requests.", ["model", "endpoint", "status"], registry=registry
        )
        self.latency = Histogram(
            "honed_request_latency_seconds",
            "Time from arrival to the last token.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.first_token = Histogram(
            "honed_time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.prompt_tokens = Counter("honed_prompt_tokens", "Prompt tokens.", ["model"], registry=registry)
        self.completion_tokens = Counter(
            "honed_completion_tokens", "Generated tokens.", ["model"], registry=registry
        )
        self.rejected = Counter(
            "honed_rejected", "Requests refused with 429 (queue full).", registry=registry
        )
        self.batch_size = Histogram(
            "honed_batch_rows", "Rows in each decoding step.", buckets=BATCH_BUCKETS, registry=registry
        )
        self.store_errors = Counter(
            "honed_store_errors", "Requests that could not be stored.", registry=registry
        )
        waiting = Gauge("honed_queue_waiting", "Requests waiting to be admitted.", registry=registry)
        waiting.set_function(lambda: engine.waiting)
        running = Gauge("honed_running_rows", "Sequences being decoded.", registry=registry)
        running.set_function(lambda: engine.running)
        engine.on_step = self.batch_size.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
