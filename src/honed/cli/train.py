"""`honed train RECIPE [key=value ...]` and `honed train --resume RUN`."""

from __future__ import annotations

import argparse

from honed.cli._common import add_overrides, add_task_files, show_progress
from honed.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "train",
        help="Fine-tune a model from a recipe (or resume a run).",
        description="Fine-tune from a YAML recipe: base evaluation, training, tuned "
        "evaluation, report. Ctrl-C saves a checkpoint; --resume RUN continues it exactly.",
    )
    parser.add_argument("recipe", nargs="?", help="Recipe YAML file.")
    add_overrides(parser)
    parser.add_argument("--resume", metavar="RUN", help="Continue an interrupted run directory.")
    parser.add_argument(
        "--force",
        action="store_true",
        help="Train even if the predicted peak memory exceeds what the device has (see honed estimate).",
    )
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.pipeline.finetune import finetune

    if args.resume:
        if args.recipe or args.overrides:
            raise ConfigError(
                "--resume RUN continues a run with its saved recipe; give no recipe or overrides"
            )
        run_dir = finetune(resume=args.resume, progress=show_progress(args), task_files=args.task_files)
    else:
        if not args.recipe:
            raise ConfigError("give a recipe file (honed train RECIPE) or a run to resume (--resume RUN)")
        run_dir = finetune(
            load_recipe(args.recipe, args.overrides, task_files=args.task_files),
            progress=show_progress(args),
            task_files=args.task_files,
            force=args.force,
        )
    from honed.cli.evaluate import print_scores

    print_scores(run_dir)
    return 0
