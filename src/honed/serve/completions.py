"""Chat completions and completions: from an OpenAI request to engine rows, and back to responses or SSE.

The prompt of a chat request is rendered by `honed.data.tokenize.render_prompt`, the function training and
evaluation use, so a served model sees exactly the prompts it was trained and scored on. Each choice is
one engine row; its events cross from the engine's thread to the event loop through an asyncio queue.
Every finished request is stored (when a store is configured) under the response id that
`POST /v1/feedback` refers to. Refusals are `ApiError`s with their HTTP status; the app turns them into
responses. This module knows nothing about routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from honed.data.tokenize import render_prompt
from honed.errors import ApiError
from honed.models.decoding import Sampling
from honed.serve.engine import Engine, Event, GenerationRequest
from honed.serve.metrics import ServerMetrics
from honed.serve.models import Served
from honed.serve.protocol import ChatCompletionRequest, CompletionRequest, usage
from honed.serve.settings import ServeSettings
from honed.serve.store import RequestStore, ServedRequest

log = logging.getLogger(__name__)

# The engine answers every row by its deadline; this wait only guards against an event that never comes.
EVENT_GRACE_S = 30.0

ApiRequest = ChatCompletionRequest | CompletionRequest


@dataclass
class Job:
    """One API request: its choices' engine rows and the events they send back."""

    id: str
    kind: str  # "chat" | "completion"
    model: str
    request: ApiRequest
    prompts: list[str]  # rendered prompt text of each choice
    rows: list[GenerationRequest] = field(default_factory=list)
    events: asyncio.Queue[tuple[int, Event]] = field(default_factory=asyncio.Queue)
    arrived_s: float = field(default_factory=time.monotonic)
    created: int = field(default_factory=lambda: int(time.time()))


class CompletionService:
    """Turns API requests into engine rows and engine events into OpenAI responses."""

    def __init__(
        self,
        served: Served,
        engine: Engine,
        metrics: ServerMetrics,
        store: RequestStore | None,
        settings: ServeSettings,
    ) -> None:
        self.served, self.engine, self.metrics, self.store = served, engine, metrics, store
        self.tokenizer, self.settings = served.tokenizer, settings
        config = getattr(served.model, "config", None)
        self.context_len = getattr(config, "max_position_embeddings", None) or 1 << 30

    def start(self, request: ApiRequest) -> Job:
        """Check the request, render and tokenize its prompts, and queue one engine row per choice."""
        if request.model not in self.served.adapter_ids:
            names = ", ".join(sorted(self.served.adapter_ids))
            message = f"no model {request.model!r}; served: {names}"
            raise ApiError(message, status=404, kind="model_not_found", param="model")
        _refuse_unsupported(request)
        if isinstance(request, ChatCompletionRequest):
            try:
                prompts = [render_prompt(self.tokenizer, request.chat())]
            except ValueError as exc:
                raise ApiError(str(exc), param="messages") from None
            job = Job(f"chatcmpl-{uuid.uuid4().hex}", "chat", request.model, request, prompts)
        else:
            job = Job(f"cmpl-{uuid.uuid4().hex}", "completion", request.model, request, request.prompts)
        loop = asyncio.get_running_loop()
        for index, prompt in enumerate(p for p in job.prompts for _ in range(request.n)):
            job.rows.append(self._row(job, index, prompt, loop))
        try:
            for row in job.rows:
                self.engine.submit(row)  # QueueFull -> 429 in the app
        except Exception:
            for row in job.rows:
                row.cancelled = True  # the choices already queued leave without running
            raise
        return job

    def _row(self, job: Job, index: int, prompt: str, loop: asyncio.AbstractEventLoop) -> GenerationRequest:
        request = job.request
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = self.context_len - len(ids)
        wanted = request.max_completion_tokens or request.max_tokens
        if room <= 0 or (wanted and wanted > room):
            raise ApiError(
                f"the prompt has {len(ids)} tokens and max_tokens is {wanted}; the model's context is "
                f"{self.context_len} tokens",
                param="max_tokens",
            )
        seed = None if request.seed is None else request.seed + index
        return GenerationRequest(
            prompt_ids=ids,
            emit=_emitter(loop, job.events, index),
            adapter=self.served.adapter_ids[job.model],
            max_new_tokens=min(
                wanted or self.settings.max_tokens_default, room, self.settings.max_tokens_limit
            ),
            stop=request.stops,
            sampling=Sampling(request.temperature, request.top_p, seed),
        )

    async def events(self, job: Job) -> AsyncIterator[tuple[int, Event]]:
        """Each (choice index, event) until every choice has finished; cancels the rows if abandoned."""
        open_rows = set(range(len(job.rows)))
        try:
            while open_rows:
                timeout_s = self.settings.request_timeout_s + EVENT_GRACE_S
                index, event = await asyncio.wait_for(job.events.get(), timeout=timeout_s)
                if event.finish_reason is not None:
                    open_rows.discard(index)
                yield index, event
        finally:
            for index in open_rows:
                job.rows[index].cancelled = True

    async def complete(self, job: Job) -> dict:
        """The whole response of a non-streaming request (raises ApiError on timeout or failure)."""
        texts = [""] * len(job.rows)
        finish: list[str | None] = [None] * len(job.rows)
        async for index, event in self.events(job):
            texts[index] += event.text
            finish[index] = event.finish_reason or finish[index]
            if event.error:
                self._finished(job, texts, finish, _status(event))
                raise ApiError(event.error, status=_status(event), kind=event.finish_reason or "error")
        self._finished(job, texts, finish, 200)
        return self._response(job, texts, finish)

    async def stream(self, job: Job) -> AsyncIterator[str]:
        """Server-sent events: a role chunk, text deltas, each choice's finish, usage if asked, [DONE]."""
        texts = [""] * len(job.rows)
        finish: list[str | None] = [None] * len(job.rows)
        if job.kind == "chat":
            for index in range(len(job.rows)):
                yield _sse(self._chunk(job, index, {"role": "assistant", "content": ""}, None))
        status = 200
        async for index, event in self.events(job):
            texts[index] += event.text
            finish[index] = event.finish_reason or finish[index]
            if event.error:
                status = _status(event)
                yield _sse({"error": {"message": event.error, "type": event.finish_reason, "code": status}})
                break
            if event.text or event.finish_reason:
                delta = {"content": event.text} if event.text else {}
                yield _sse(self._chunk(job, index, delta, event.finish_reason))
        self._finished(job, texts, finish, status)
        if status == 200 and job.request.include_usage:
            yield _sse({**self._envelope(job, chunk=True), "choices": [], "usage": self._usage(job)})
        yield "data: [DONE]\n\n"

    def _response(self, job: Job, texts: list[str], finish: list[str | None]) -> dict:
        if job.kind == "chat":
            choices = [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f}
                for i, (t, f) in enumerate(zip(texts, finish, strict=True))
            ]
        else:
            choices = [
                {"index": i, "text": t, "logprobs": None, "finish_reason": f}
                for i, (t, f) in enumerate(zip(texts, finish, strict=True))
            ]
        return {**self._envelope(job), "choices": choices, "usage": self._usage(job)}

    def _chunk(self, job: Job, index: int, delta: dict, finish_reason: str | None) -> dict:
        if job.kind == "chat":
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": delta.get("content", ""), "finish_reason": finish_reason}
        return {**self._envelope(job, chunk=True), "choices": [choice]}

    def _envelope(self, job: Job, chunk: bool = False) -> dict:
        kind = {"chat": "chat.completion", "completion": "text_completion"}[job.kind]
        name = f"{kind}.chunk" if chunk and job.kind == "chat" else kind
        return {"id": job.id, "object": name, "created": job.created, "model": job.model}

    def _usage(self, job: Job) -> dict:
        prompt = sum(len(r.prompt_ids) for r in job.rows[:: job.request.n])
        return usage(prompt, sum(r.completion_tokens for r in job.rows))

    def _finished(self, job: Job, texts: list[str], finish: list[str | None], status: int) -> None:
        """Count the request in the metrics and store each choice (the first under the response id)."""
        latency = time.monotonic() - job.arrived_s
        endpoint = "chat" if job.kind == "chat" else "completions"
        metrics = self.metrics
        metrics.requests.labels(job.model, endpoint, str(status)).inc()
        metrics.latency.labels(job.model).observe(latency)
        firsts = [r.first_token_s for r in job.rows if r.first_token_s is not None]
        if firsts:
            metrics.first_token.labels(job.model).observe(min(firsts) - job.arrived_s)
        metrics.prompt_tokens.labels(job.model).inc(self._usage(job)["prompt_tokens"])
        metrics.completion_tokens.labels(job.model).inc(sum(r.completion_tokens for r in job.rows))
        if self.store is not None and status == 200:
            self._store(job, texts, finish, latency)

    def _store(self, job: Job, texts: list[str], finish: list[str | None], latency: float) -> None:
        assert self.store is not None, "_finished stores only when a store is configured"
        request = job.request
        params = {
            "max_tokens": request.max_tokens or request.max_completion_tokens,
            "stop": request.stops,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        messages = request.chat() if isinstance(request, ChatCompletionRequest) else None
        source = self.served.sources[job.model].origin
        try:
            for index, row in enumerate(job.rows):
                self.store.record(
                    ServedRequest(
                        id=job.id if index == 0 else f"{job.id}:{index}",
                        created_s=float(job.created),
                        model=job.model,
                        source=source,
                        kind=job.kind,
                        messages=messages,
                        prompt=job.prompts[index // request.n],
                        response=texts[index],
                        finish_reason=finish[index] or "stop",
                        params=params,
                        prompt_tokens=len(row.prompt_ids),
                        completion_tokens=row.completion_tokens,
                        latency_s=latency,
                    )
                )
        except Exception:  # storage must never cost the user their answer
            log.exception("could not store request %s", job.id)
            self.metrics.store_errors.inc()


def _emitter(
    loop: asyncio.AbstractEventLoop, events: asyncio.Queue[tuple[int, Event]], index: int
) -> Callable[[Event], None]:
    """The `emit` of choice `index`: hands each event from the engine's thread to the event loop."""

    def emit(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (index, event))

    return emit


def _refuse_unsupported(request: ApiRequest) -> None:
    for name in ("tools", "logprobs", "suffix"):
        if getattr(request, name, None):
            raise ApiError(f"{name} is not supported by honed serve", param=name)
    if getattr(request, "echo", False):
        raise ApiError("echo is not supported by honed serve", param="echo")


def _status(event: Event) -> int:
    """The HTTP status of a choice that ended without an answer (504 timeout, 499 client gone, 500)."""
    return {"timeout": 504, "cancelled": 499}.get(event.finish_reason or "", 500)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
