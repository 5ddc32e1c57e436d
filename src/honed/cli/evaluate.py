"""`honed eval RUN`: score a finished run's tuned model and the base on the same rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from honed.cli._common import add_task_files, show_progress


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "eval",
        help="Score a run's tuned model against the base.",
        description="Generate greedily for the run's evaluation rows with the tuned model and the base "
        "model (zero-shot, and k-shot with eval.few_shot_k), score them, and rewrite summary.json, "
        "comparison.* and report.html.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run directory (runs/<run-id>).")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="eval.KEY=VALUE",
        help="Change eval settings, e.g. eval.few_shot_k=5 eval.max_rows=500 eval.task=sql",
    )
    parser.add_argument("--no-base", action="store_true", help="Score only the tuned model.")
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.evaluation.run import evaluate_run

    evaluate_run(
        args.run_dir,
        base=not args.no_base,
        overrides=args.overrides,
        task_files=args.task_files,
        progress=show_progress(args),
    )
    print_scores(Path(args.run_dir))
    return 0


def print_scores(run_dir: Path) -> None:
    """Base, few-shot and tuned metrics side by side (and the forgetting probe), from summary.json."""
    evaluation = json.loads((run_dir / "summary.json").read_text())["eval"]
    labels = [label for label in ("base", "few_shot", "tuned") if evaluation.get(label)]
    if labels:
        names = [k for k, v in evaluation[labels[-1]].items() if isinstance(v, float) and k != "rows"]
        print(
            f"\n{evaluation['task']} on {evaluation['rows']} rows".ljust(34)
            + "".join(f"{x:>10}" for x in labels)
        )
        for name in names:
            values = [evaluation[label].get(name) for label in labels]
            print(
                f"  {name:<32}"
                + "".join(f"{v:10.3f}" if isinstance(v, float) else f"{'-':>10}" for v in values)
            )
    timing = [
        f"{label} {evaluation[label]['timing']['wall_s']:.0f} s"
        for label in labels
        if "timing" in evaluation[label]
    ]
    if timing:
        print("  evaluation wall time: " + ", ".join(timing))
    probe = evaluation.get("probe") or {}
    if probe.get("base") and probe.get("tuned"):
        print("  forgetting probe (lower is better)")
        for name, before in probe["base"].items():
            print(f"  {name:<32}{before:10.3f}{probe['tuned'][name]:10.3f}")
    comparison = run_dir / "comparison.md"
    print(
        f"\nrun: {run_dir}\nreport: {run_dir / 'report.html'}"
        + (f"\ncomparison: {comparison}" if comparison.exists() else "")
    )
