"""`honed serve [NAME=]RUN|MODEL ...`: an OpenAI-compatible API over one base and its adapters.

The flags' defaults are `honed.serve.settings`' (a light module: no torch or FastAPI until `run`).
"""

from __future__ import annotations

import argparse

from honed.serve.settings import DEFAULTS, ServeSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `honed serve` and its flags to the CLI's subcommands."""
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
    _add_settings(parser)
    parser.set_defaults(run=run)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per `ServeSettings` field (but max_tokens_default), defaulting to its default."""
    parser.add_argument("--host", default=DEFAULTS.host, help="Interface to listen on (default %(default)s).")
    parser.add_argument("--port", type=int, default=DEFAULTS.port, help="Port (default %(default)s).")
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULTS.max_batch_size, help="Sequences decoded together."
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help="Requests that may wait; one more gets HTTP 429.",
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=DEFAULTS.request_timeout_s,
        help="A request still unfinished after this many seconds (queue wait included) is stopped and "
        "answered with HTTP 504.",
    )
    parser.add_argument(
        "--max-tokens-limit",
        type=int,
        default=DEFAULTS.max_tokens_limit,
        help="The most tokens one answer may ask for.",
    )
    parser.add_argument(
        "--store",
        default=DEFAULTS.store,
        help="Where requests, answers and feedback are kept: a SQLAlchemy URL (sqlite:///feedback.db, "
        "postgresql+psycopg://user@host/db) or a .db path; 'off' stores nothing.",
    )
    parser.add_argument("--device", default=DEFAULTS.device, choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default=DEFAULTS.dtype, choices=["auto", "float32", "bfloat16", "float16"])


def run(args: argparse.Namespace) -> int:
    """Serve `args.sources` with the flags' settings until interrupted."""
    # imported here, not at module level: torch, transformers and FastAPI would slow `honed --help`
    from honed.serve.app import run_server

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
