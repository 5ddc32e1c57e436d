"""`honed feedback stats` and `honed feedback export`: what users said about served answers, and the
training data and retrain recipe made from it."""

from __future__ import annotations

import argparse
import json

from honed.cli._common import add_task_files
from honed.serve.settings import DEFAULTS  # the store `honed serve` writes; a light module (no SQLAlchemy)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `honed feedback stats` and `honed feedback export` to the CLI's subcommands."""
    parser = sub.add_parser("feedback", help="Feedback on served answers: counts, and export for retraining.")
    feedback_sub = parser.add_subparsers(dest="feedback_command", metavar="SUBCOMMAND", required=True)
    _add_stats(feedback_sub)
    _add_export(feedback_sub)


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=DEFAULTS.store,
        metavar="URL",
        help="The store `honed serve` wrote: a SQLite path or a SQLAlchemy URL such as "
        "postgresql+psycopg://user:password@host/db (default: %(default)s).",
    )


def _add_stats(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stats",
        help="Requests and feedback per served model and rating.",
        description="Count the stored requests per model, how many were rated, each rating (-1 bad, 0 "
        "neutral, 1 good; the latest feedback per request) and the corrections.",
    )
    _add_store(parser)
    parser.add_argument("--json", action="store_true", help="Print the counts as JSON.")
    parser.set_defaults(run=run_stats)


def _add_export(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="Turn feedback into training data and a recipe that continues the run.",
        description="Corrections and well-rated answers become chat examples, written after the run's own "
        "training rows (replay) in train.jsonl; the run's held-out rows go to validation.jsonl unchanged, so "
        "`honed compare OLD NEW` compares on the same rows; corrections also become chosen/rejected pairs "
        "in preference.jsonl. Duplicates (exact and near) of training rows, held-out rows and each other "
        "are dropped and counted in report.json. retrain.yaml continues the run's adapter.",
    )
    _add_store(parser)
    parser.add_argument(
        "--run", dest="run_dir", required=True, metavar="RUN", help="The served run (runs/<run-id>)."
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="Folder for the exported files.")
    parser.add_argument(
        "--min-rating",
        type=int,
        default=1,
        choices=(-1, 0, 1),
        help="Lowest rating whose served answer becomes an example (default 1: only good ones). "
        "Corrections are always used.",
    )
    parser.add_argument("--model", metavar="NAME", help="Only requests served as this model name.")
    parser.add_argument(
        "--near-threshold",
        type=float,
        default=0.85,
        help="Estimated Jaccard similarity that counts as a near duplicate (default 0.85).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an earlier export in DIR.")
    add_task_files(parser)
    parser.set_defaults(run=run_export)


def run_stats(args: argparse.Namespace) -> int:
    """Print the store's counts per model, as a table or JSON."""
    # imported here, not at module level: keeps `honed --help` fast
    from honed.feedback.export import feedback_stats

    stats = feedback_stats(args.store)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"store {stats['store']}: {stats['requests']} requests, {stats['feedback']} feedback posts")
    if stats["models"]:
        print(
            f"{'model':<32} {'requests':>8} {'rated':>6} {'bad':>5} {'neutral':>7} {'good':>5} {'fixed':>6}"
        )
    for name, row in stats["models"].items():
        ratings = row["ratings"]
        print(
            f"{name:<32} {row['requests']:>8} {row['rated']:>6} {ratings['-1']:>5} {ratings['0']:>7} "
            f"{ratings['1']:>5} {row['corrections']:>6}"
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export the store's feedback on a run as training files and a retrain recipe; print the summary."""
    # imported here, not at module level: keeps `honed --help` fast
    from honed.feedback.export import export_feedback

    report = export_feedback(
        args.store,
        args.run_dir,
        args.out,
        min_rating=args.min_rating,
        near_threshold=args.near_threshold,
        model=args.model,
        overwrite=args.overwrite,
        task_files=args.task_files,
    )
    used, dropped = report["used"], report["dropped"]
    print(
        f"{report['entries']} requests ({report['rated']} rated): {used['sft']} examples, "
        f"{used['pairs']} preference pairs; {report['replay_rows']} training rows replayed, "
        f"{report['validation_rows']} validation rows kept"
    )
    if dropped:
        print("not used: " + ", ".join(f"{n} {reason}" for reason, n in dropped.items()))
    files = report["files"]
    print(f"written: {', '.join(files.values())}, {args.out}/report.json")
    if "retrain" in files:
        print(f"next: honed train {files['retrain']}")
        print(f"then: honed compare {args.run_dir} NEW_RUN   (before serving the new run)")
    return 0
