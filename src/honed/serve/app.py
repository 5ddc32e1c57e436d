"""The HTTP app: a thin FastAPI router over the completion service, the engine and the request store.

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both stream with SSE when asked),
POST /v1/feedback, GET /health, GET /metrics (Prometheus text). Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, with a proper status: 400 for a bad request, 404 for an
unknown model or request id, 429 when the queue is full, 504 when a request runs past its timeout.

`create_app` builds everything from arguments (no module globals), so tests run several apps in one
process; `run_server` is what `honed serve` calls.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from honed.errors import HonedError, NotFoundError
from honed.serve.completions import ApiError, CompletionService
from honed.serve.engine import Engine, EngineSettings, QueueFull
from honed.serve.metrics import ServerMetrics
from honed.serve.protocol import ChatCompletionRequest, CompletionRequest, FeedbackRequest, error_body
from honed.serve.store import DEFAULT_STORE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Everything `honed serve` takes besides what to serve; the CLI flags have the same names."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 16
    max_queue: int = 64
    request_timeout_s: float = 120.0
    max_tokens_limit: int = 1024  # the most tokens one choice may ask for
    store: str | None = DEFAULT_STORE  # SQLAlchemy URL or path; None or "off": nothing is stored
    device: str = "auto"
    dtype: str = "auto"


def create_app(sources: list[str], settings: ServeSettings = ServeSettings()) -> FastAPI:
    """Load what `sources` name (`[NAME=]RUN|MODEL`), start the engine, and return the app."""
    from honed.models.load import resolve_device, resolve_dtype
    from honed.serve.models import load_served, parse_sources
    from honed.serve.store import open_store

    store = open_store(settings.store)
    device = resolve_device(settings.device)
    served = load_served(parse_sources(sources), device, resolve_dtype(settings.dtype, device))
    engine_settings = EngineSettings(settings.max_batch_size, settings.max_queue, settings.request_timeout_s)
    adapters = sorted({a for a in served.adapter_ids.values() if a != "__base__"})
    engine = Engine(served.model, served.tokenizer, engine_settings, adapters).start()
    return build_app(served, engine, store, settings)


def build_app(served, engine: Engine, store, settings: ServeSettings) -> FastAPI:
    """The routes over an already running engine (tests build engines on tiny models directly)."""
    metrics = ServerMetrics(engine)
    service = CompletionService(
        served, engine, metrics, store, settings.max_tokens_limit, settings.request_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.stop()
        if store is not None:
            store.close()

    app = FastAPI(title="honed", summary="OpenAI-compatible serving of honed models", lifespan=lifespan)
    app.state.engine, app.state.store, app.state.service = engine, store, service
    started = time.time()

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, str(exc.status)), exc.status)

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull):
        metrics.rejected.inc()
        return JSONResponse(error_body(str(exc), "rate_limit_exceeded", None, "429"), 429)

    @app.exception_handler(HonedError)
    async def _honed_error(_request: Request, exc: HonedError):
        status = 404 if isinstance(exc, NotFoundError) else 400
        return JSONResponse(error_body(str(exc), "invalid_request_error", None, str(status)), status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body(message, "invalid_request_error", where, "400"), 400)

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "uptime_s": round(time.time() - started, 1),
            "models": sorted(served.sources),
            "waiting": engine.waiting,
            "running": engine.running,
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models() -> dict:
        data = [
            {
                "id": name,
                "object": "model",
                "created": int(started),
                "owned_by": f"honed:{source.kind}",
                "root": source.origin,
            }
            for name, source in served.sources.items()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        return await _answer(service, body)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        return await _answer(service, body)

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest) -> dict:
        if store is None:
            raise ApiError(501, "feedback_disabled", "this server stores nothing (started with --store off)")
        feedback_id = store.add_feedback(body.request_id, body.rating, body.correction, body.comment)
        return {"id": feedback_id, "object": "feedback", "request_id": body.request_id}

    return app


async def _answer(service: CompletionService, body):
    job = service.start(body)
    if body.stream:
        return StreamingResponse(service.stream(job), media_type="text/event-stream")
    return await service.complete(job)


def run_server(sources: list[str], settings: ServeSettings = ServeSettings()) -> None:
    """Serve until interrupted (what `honed serve` runs)."""
    import uvicorn

    app = create_app(sources, settings)
    log.info("listening on http://%s:%d/v1 (OpenAI-compatible)", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


class BackgroundServer:
    """Run an app with uvicorn on a thread (port 0: a free one), for tests and the load benchmark.

    with BackgroundServer(app) as server: OpenAI(base_url=server.base_url, api_key="-")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="honed-uvicorn", daemon=True)
        self.base_url = ""

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
