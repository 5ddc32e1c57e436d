"""`honed eval RUN`: score a finished run's tuned model and the base on the same rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from honed.cli._common import show_progress


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "eval",
        help="Score a run's tuned model against the base.",
        description="Generate greedily for the run's evaluation rows with the tuned model "
        "and the base model, score both, and rewrite summary.json and "
        "report.html.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run directory (runs/<run-id>).")
    parser.add_argument("--no-base", action="store_true", help="Score only the tuned model.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from honed.evaluation.evaluate import evaluate_run

    evaluate_run(args.run_dir, base=not args.no_base, progress=show_progress(args))
    print_scores(Path(args.run_dir))
    return 0


def print_scores(run_dir: Path) -> None:
    """Base and tuned metrics side by side, from the run's summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = summary["eval"]
    base, tuned = evaluation.get("base") or {}, evaluation.get("tuned") or {}
    names = [k for k, v in tuned.items() if isinstance(v, float) and k != "rows"]
    print(f"\n{evaluation['task']} on {evaluation['rows']} rows       base     tuned")
    for name in names:
        before = f"{base[name]:8.3f}" if name in base else "       -"
        print(f"  {name:<24}{before}  {tuned[name]:8.3f}")
    print(f"\nrun: {run_dir}\nreport: {run_dir / 'report.html'}")
