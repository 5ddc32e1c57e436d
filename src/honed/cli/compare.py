"""`honed compare SYSTEM SYSTEM ...`: paired bootstrap confidence intervals, slices, regressions."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from honed.cli._common import add_task_files, show_progress


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "compare",
        help="Compare runs or models on the same rows, with confidence intervals.",
        description="Compare systems on the same evaluation rows; the first is the reference. A system is "
        "RUN (its tuned model), RUN:base, RUN:few_shot, RUN:tuned, or, with --recipe, a model (the embedded "
        "name, a folder, a .gguf, a hub id) scored zero-shot on the recipe's rows. Prints the metric table "
        "and writes comparison.json, comparison.md and comparison.html.",
    )
    parser.add_argument("systems", nargs="+", metavar="SYSTEM", help="RUN, RUN:base, RUN:few_shot or MODEL.")
    parser.add_argument("--recipe", help="Recipe whose evaluation rows and task score MODEL systems.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a --recipe key, e.g. --set eval.max_rows=200 (repeatable).",
    )
    parser.add_argument("--out", help="Output folder (default: comparisons/<timestamp>).")
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples (default 1000).")
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.evaluation.compare_render import render_markdown
    from honed.evaluation.systems import compare

    recipe = load_recipe(args.recipe, args.overrides, task_files=args.task_files) if args.recipe else None
    out = Path(args.out or f"comparisons/{time.strftime('%Y%m%d-%H%M%S')}")
    result = compare(
        args.systems,
        out,
        recipe=recipe,
        task_files=args.task_files,
        resamples=args.resamples,
        seed=args.seed,
        progress=show_progress(args),
    )
    print(render_markdown(result).split("\n## Regressions")[0])
    print(f"written: {', '.join(result['files'].values())}")
    return 0
