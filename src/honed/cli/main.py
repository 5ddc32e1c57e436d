"""The `honed` command: parse arguments, call the public Python API, print.

Each subcommand lives in its own module with `add_parser` and `run`. Heavy imports (torch, transformers)
happen inside `run`, so `honed --help` answers at once. A HonedError (the user's mistake or environment)
prints one line and exits 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from honed import __version__
from honed.cli import (
    compare,
    data,
    demo,
    estimate,
    evaluate,
    export,
    feedback,
    models,
    select,
    serve,
    train,
    tune_hp,
    validate,
)
from honed.errors import HonedError, TrainingInterrupted

COMMANDS = [
    demo,
    models,
    select,
    data,
    estimate,
    train,
    tune_hp,
    validate,
    evaluate,
    compare,
    export,
    serve,
    feedback,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="honed", description="Fine-tune a small open-weight model into a specialist on your own data."
    )
    parser.add_argument("--version", action="version", version=f"honed {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="Only warnings and errors; no progress bars."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_output(args.quiet)
    try:
        return args.run(args) or 0
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except HonedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _configure_output(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, format="honed: %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "huggingface_hub", "transformers", "peft", "sqlglot", "gguf"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="(transformers|peft|torch)")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
