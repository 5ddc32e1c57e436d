"""`honed serve [NAME=]RUN|MODEL ...`: an OpenAI-compatible API over one base and its adapters."""

from __future__ import annotations

import argparse

from honed.cli.feedback import DEFAULT_STORE  # one default for the server and `honed feedback`


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help="Serve runs and models over an OpenAI-compatible HTTP API.",
        description="Serve one base model and any number of LoRA adapters on it, each under its own model "
        "name (a run's directory name, or NAME=RUN). Requests naming different adapters are decoded in the "
        "same batch. Endpoints: /v1/models, /v1/chat/completions, /v1/completions (stream: true for SSE), "
        "/v1/feedback, /health, /metrics. Every request and answer is stored for feedback unless --store "
        "off. Example: honed serve runs/viggo-20261127-101500 --port 8000",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="[NAME=]RUN|MODEL",
        help="A run directory (its adapter, or its full weights) or a base model (the embedded name, a "
        "folder, a .gguf, a hub id). The runs' base is served too, under its own name.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    parser.add_argument("--max-batch-size", type=int, default=16, help="Sequences decoded together.")
    parser.add_argument(
        "--max-queue", type=int, default=64, help="Requests that may wait; one more gets HTTP 429."
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=120.0,
        help="A request still unfinished after this many seconds (queue wait included) is stopped and "
        "answered with HTTP 504.",
    )
    parser.add_argument(
        "--max-tokens-limit", type=int, default=1024, help="The most tokens one answer may ask for."
    )
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help="Where requests, answers and feedback are kept: a SQLAlchemy URL (sqlite:///feedback.db, "
        "postgresql+psycopg://user@host/db) or a .db path; 'off' stores nothing.",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from honed.serve.app import ServeSettings, run_server

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout_s,
        max_tokens_limit=args.max_tokens_limit,
        store=args.store,
        device=args.device,
        dtype=args.dtype,
    )
    print(f"serving on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", flush=True)
    run_server(args.sources, settings)
    return 0
