"""The routes of `honed serve`, on one module-level router that `app.build_app` includes.

GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both stream with SSE when asked),
POST /v1/feedback, GET /health, GET /metrics (Prometheus text).

This module owns the paths and the response bodies and nothing else: the logic is the completion
service's (`completions.py`), the state (service, engine, metrics, store, start time) is the app's, reached
through FastAPI dependencies on `request.app.state`, and a refusal is raised as a HonedError that the app's
one exception handler answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from honed.errors import ApiError
from honed.serve.completions import ApiRequest, CompletionService
from honed.serve.engine import Engine
from honed.serve.metrics import ServerMetrics
from honed.serve.models import Served
from honed.serve.protocol import ChatCompletionRequest, CompletionRequest, FeedbackRequest
from honed.serve.store import RequestStore

router = APIRouter()


def _state(name: str) -> Callable[[Request], Any]:
    """A dependency that gives the app's `app.state.<name>` (set by `build_app`)."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    return get


ServedDep = Annotated[Served, Depends(_state("served"))]
EngineDep = Annotated[Engine, Depends(_state("engine"))]
MetricsDep = Annotated[ServerMetrics, Depends(_state("metrics"))]
StoreDep = Annotated[RequestStore | None, Depends(_state("store"))]
ServiceDep = Annotated[CompletionService, Depends(_state("service"))]
StartedDep = Annotated[float, Depends(_state("started_s"))]  # unix time the app was built


@router.get("/health")
def health(served: ServedDep, engine: EngineDep, started_s: StartedDep) -> dict[str, Any]:
    """Liveness, the served names and the engine's queue."""
    return {
        "status": "ok",
        "uptime_s": round(time.time() - started_s, 1),
        "models": sorted(served.sources),
        "waiting": engine.waiting,
        "running": engine.running,
    }


@router.get("/metrics")
def prometheus(metrics: MetricsDep) -> Response:
    """The server's Prometheus metrics, in the text exposition format."""
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models")
def models(served: ServedDep, started_s: StartedDep) -> dict[str, Any]:
    """Every served name, as OpenAI's model list (`root`: the run or model it comes from)."""
    data = [
        {
            "id": name,
            "object": "model",
            "created": int(started_s),
            "owned_by": f"honed:{source.kind}",
            "root": source.origin,
        }
        for name, source in served.sources.items()
    ]
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, service: ServiceDep
) -> StreamingResponse | dict[str, Any]:
    """A chat completion: the whole response, or server-sent events when `stream` is set."""
    return await _answer(service, body)


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, service: ServiceDep) -> StreamingResponse | dict[str, Any]:
    """A text completion: the whole response, or server-sent events when `stream` is set."""
    return await _answer(service, body)


@router.post("/v1/feedback")
async def feedback(body: FeedbackRequest, store: StoreDep) -> dict[str, Any]:
    """Store a rating (and optionally a correction) of an answer this server gave."""
    if store is None:
        raise ApiError(
            "this server stores nothing (started with --store off)", status=501, kind="feedback_disabled"
        )
    feedback_id = store.add_feedback(body.request_id, body.rating, body.correction, body.comment)
    return {"id": feedback_id, "object": "feedback", "request_id": body.request_id}


async def _answer(service: CompletionService, body: ApiRequest) -> StreamingResponse | dict[str, Any]:
    job = service.start(body)
    if body.stream:
        return StreamingResponse(service.stream(job), media_type="text/event-stream")
    return await service.complete(job)
