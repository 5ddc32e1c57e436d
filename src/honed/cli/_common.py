"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Recipe overrides, e.g. train.lr=1e-4 data.max_train_rows=200",
    )


def show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


def add_task_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-file",
        action="append",
        default=[],
        metavar="FILE.py",
        dest="task_files",
        help="A local Python file defining custom evaluation tasks (TASKS = {name: class}); "
        "repeatable. Recipes can only name tasks, never import code.",
    )
