"""`honed validate RECIPE [key=value ...]`: check the recipe and read its data without training."""

from __future__ import annotations

import argparse
import json

from honed.cli._common import add_overrides, add_task_files


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate",
        help="Check a recipe and its data without training.",
        description="Validate the recipe, read every data row (format, row errors) and "
        "tokenize it with the model's tokenizer (token lengths), without training.",
    )
    parser.add_argument("recipe", help="Recipe YAML file.")
    add_overrides(parser)
    parser.add_argument("--json", action="store_true", help="Print the data report as JSON.")
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.methods.registry import validate

    recipe = load_recipe(args.recipe, args.overrides, task_files=args.task_files)
    report = validate(recipe)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"recipe {args.recipe}: ok ({recipe.method}, {recipe.adapter}, base {recipe.model.base})")
    for split, info in report.items():
        tokens = info["tokens"]
        print(
            f"{split}: {info['examples']} examples from {info['rows_read']} rows; "
            f"{info['skipped_bad_rows']} malformed skipped; {info['too_long']} longer than "
            f"max_seq_len ({info['too_long_action']}); tokens min {tokens['min']} mean {tokens['mean']} "
            f"p95 {tokens['p95']} max {tokens['max']}"
        )
        for problem in info["problems"]:
            print(f"  {problem}")
    return 0
