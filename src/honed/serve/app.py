"""The HTTP app of `honed serve`: built from settings, its state on `app.state`, the routes of `routes.py`,
and the one place where honed's exceptions become HTTP statuses.

Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with a proper status
(`error_status`): an `ApiError` carries its own (404 unknown model, 501 feedback off, 504 past its timeout,
...); `QueueFull` is 429, `NotFoundError` (unknown request id) 404, any other HonedError and a request
that fails validation 400.

`create_app` builds everything from arguments (no module globals), so tests run several apps in one
process; `run_server` is what `honed serve` calls; `BackgroundServer` runs an app on a thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from honed.errors import ApiError, HonedError, NotFoundError
from honed.models.load import resolve_device, resolve_dtype
from honed.serve.completions import CompletionService
from honed.serve.engine import BASE_ADAPTER, Engine, QueueFull
from honed.serve.metrics import ServerMetrics
from honed.serve.models import Served, load_served, parse_sources
from honed.serve.protocol import error_body
from honed.serve.routes import router
from honed.serve.settings import DEFAULTS, ServeSettings
from honed.serve.store import RequestStore, open_store

__all__ = ["BackgroundServer", "ServeSettings", "build_app", "create_app", "error_status", "run_server"]

log = logging.getLogger(__name__)

# HonedError class -> (HTTP status, OpenAI error type); the first row `exc` is an instance of wins.
_STATUS: tuple[tuple[type[HonedError], int, str], ...] = (
    (QueueFull, 429, "rate_limit_exceeded"),
    (NotFoundError, 404, "invalid_request_error"),
    (HonedError, 400, "invalid_request_error"),
)


def error_status(exc: HonedError) -> tuple[int, str]:
    """The HTTP status and OpenAI error type that answer `exc`: an ApiError's own, else `_STATUS`'s."""
    if isinstance(exc, ApiError):
        return exc.status, exc.kind
    return next((status, kind) for cls, status, kind in _STATUS if isinstance(exc, cls))


def create_app(sources: list[str], settings: ServeSettings = DEFAULTS) -> FastAPI:
    """Load what `sources` name (`[NAME=]RUN|MODEL`), start the engine, and return the app."""
    store = open_store(settings.store)
    device = resolve_device(settings.device)
    served = load_served(parse_sources(sources), device, resolve_dtype(settings.dtype, device))
    adapters = sorted({a for a in served.adapter_ids.values() if a != BASE_ADAPTER})
    engine = Engine(served.model, served.tokenizer, settings, adapters).start()
    return build_app(served, engine, store, settings)


def build_app(served: Served, engine: Engine, store: RequestStore | None, settings: ServeSettings) -> FastAPI:
    """The app over an already running engine (tests build engines on tiny models directly); it stops
    the engine and closes the store when it shuts down."""
    metrics = ServerMetrics(engine)
    app = FastAPI(title="honed", summary="OpenAI-compatible serving of honed models", lifespan=_lifespan)
    app.state.served, app.state.engine, app.state.store, app.state.metrics = served, engine, store, metrics
    app.state.service = CompletionService(served, engine, metrics, store, settings)
    app.state.started_s = time.time()
    app.include_router(router)
    app.add_exception_handler(HonedError, _honed_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the app; on shutdown stop its engine and close its store."""
    yield
    app.state.engine.stop()
    if app.state.store is not None:
        app.state.store.close()


async def _honed_error(request: Request, exc: HonedError) -> JSONResponse:
    """Any HonedError (ApiError and QueueFull included) in OpenAI's error shape, with its status."""
    status, kind = error_status(exc)
    if isinstance(exc, QueueFull):
        request.app.state.metrics.rejected.inc()
    param = exc.param if isinstance(exc, ApiError) else None
    return JSONResponse(error_body(str(exc), kind, param, str(status)), status)


async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 naming every invalid field; `param` is the first one."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
    return JSONResponse(error_body(message, "invalid_request_error", where, "400"), 400)


def run_server(sources: list[str], settings: ServeSettings = DEFAULTS) -> None:
    """Serve until interrupted (what `honed serve` runs)."""
    import uvicorn

    app = create_app(sources, settings)
    log.info("listening on http://%s:%d/v1 (OpenAI-compatible)", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


class BackgroundServer:
    """Run an app with uvicorn on a thread (port 0: a free one), for tests and the load benchmark.

    with BackgroundServer(app) as server: OpenAI(base_url=server.base_url, api_key="-")
    """

    def __init__(self, app: FastAPI, host: str = DEFAULTS.host, port: int = 0) -> None:
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

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
