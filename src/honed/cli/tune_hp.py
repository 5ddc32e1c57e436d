"""`honed tune-hp RECIPE [key=value ...]`: search the recipe's `tune.space` with real fine-tuning trials."""

from __future__ import annotations

import argparse
import json
import sys

from honed.cli._common import add_overrides, add_task_files, show_progress


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tune-hp",
        help="Search hyperparameters (tune.space in the recipe) with real fine-tuning trials (Optuna).",
        description="Each trial fine-tunes the recipe with values drawn from tune.space (seeded TPE), "
        "scores it by tune.objective (final validation loss, or the eval task's primary metric) and, with "
        "tune.prune, stops trials whose validation loss trails the median. Writes study.db, tune.json, "
        "tune.md, best.yaml and one run directory per trial to the output folder; running again with the "
        "same --output resumes the study. Ctrl-C stops the search and still writes the table.",
    )
    parser.add_argument("recipe", help="Recipe YAML file with a tune section.")
    add_overrides(parser)
    parser.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="Trials the study should hold in total (overrides tune.trials).",
    )
    parser.add_argument(
        "--timeout-min",
        type=float,
        metavar="M",
        help="Stop starting trials after M minutes (overrides tune.timeout_min).",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="Output folder (default <runs_dir>/<name>-tune-<time>); an existing one resumes its study.",
    )
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.tuning.report import render_table
    from honed.tuning.search import tune_hp

    recipe = load_recipe(args.recipe, args.overrides, task_files=args.task_files)
    result = tune_hp(
        recipe,
        trials=args.trials,
        timeout_min=args.timeout_min,
        output=args.output,
        progress=show_progress(args),
        task_files=args.task_files,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(render_table(result))
        if result.best is not None:
            print(f"best: trial {result.best.number} ({result.metric} {result.best.value:.4f})")
            print(f"train it: honed train {result.output / 'best.yaml'}")
        print(f"table: {result.output / 'tune.md'}")
    if result.interrupted:
        print(
            f"\ninterrupted; resume with: honed tune-hp {args.recipe} --output {result.output}",
            file=sys.stderr,
        )
        return 130
    return 0
