"""`honed demo`: watch the embedded model become measurably better at a task, on this CPU, in minutes."""

from __future__ import annotations

import argparse
import time

from honed.cli._common import add_overrides, show_progress


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="Fine-tune the embedded model on a demo task and compare with the base.",
        description="Generate a small structured-extraction dataset (coffee-shop orders -> "
        "act(slot[value], ...)), score the embedded SmolLM2-135M-Instruct on it, "
        "fine-tune a LoRA adapter, score again and write a report.",
    )
    add_overrides(parser)
    parser.add_argument("--runs-dir", default="runs", help="Where the run directory goes (default: runs).")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.cli.evaluate import print_scores
    from honed.demo.run import run_demo

    start = time.perf_counter()
    run_dir = run_demo(args.runs_dir, args.overrides, progress=show_progress(args))
    print_scores(run_dir)
    print(f"demo wall time: {time.perf_counter() - start:.0f} s")
    return 0
