"""`honed select RECIPE --candidates a,b,c`: rank base models on the recipe's own task before training."""

from __future__ import annotations

import argparse

from honed.cli._common import add_overrides, add_task_files, show_progress


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "select",
        help="Rank candidate base models on your task: zero/few-shot metric, latency, training cost.",
        description="For each candidate (registry name, local folder, .gguf file or hub id): zero-shot and "
        "few-shot task metric on a sample of the recipe's evaluation rows, single-request latency and "
        "tokens/s on this machine, predicted training memory and time per epoch, license and context "
        "length; optionally a short LoRA trial fine-tune. Prints a ranked table and a recommendation under "
        "your constraints and writes select.json and report.html.",
    )
    parser.add_argument("recipe", help="Recipe YAML file (its data, task and training settings are used).")
    add_overrides(parser)
    parser.add_argument(
        "--candidates",
        required=True,
        metavar="A,B,C",
        help="Comma-separated base models, e.g. smollm2-135m-instruct,gemma-3-270m-q4_k_m,./my-model",
    )
    parser.add_argument("--sample-rows", type=int, default=50, help="Evaluation rows scored (default 50).")
    parser.add_argument("--few-shot-k", type=int, default=3, help="In-context examples (default 3; 0: off).")
    parser.add_argument(
        "--trial-steps",
        type=int,
        default=0,
        help="Also fine-tune each for N LoRA steps and score it (0: off).",
    )
    parser.add_argument("--max-memory-gb", type=float, help="Exclude candidates needing more GiB to train.")
    parser.add_argument("--max-latency-s", type=float, help="Exclude candidates slower per answer.")
    parser.add_argument(
        "--commercial", action="store_true", help="Exclude licenses that do not allow commercial use."
    )
    parser.add_argument("--output", metavar="DIR", help="Report folder (default runs/select-<name>-<time>).")
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.errors import ConfigError
    from honed.selection.rank import Constraints
    from honed.selection.render import render_text
    from honed.selection.run import parse_candidates, select

    candidates = parse_candidates(args.candidates)
    if not candidates:
        raise ConfigError("--candidates: give at least one model, e.g. --candidates smollm2-135m-instruct")
    if args.sample_rows < 1 or args.few_shot_k < 0 or args.trial_steps < 0:
        raise ConfigError("--sample-rows must be at least 1; --few-shot-k and --trial-steps at least 0")
    recipe = load_recipe(args.recipe, args.overrides, task_files=args.task_files)
    constraints = Constraints(args.max_memory_gb, args.max_latency_s, args.commercial)
    folder, ranked, recommendation = select(
        recipe,
        candidates,
        sample_rows=args.sample_rows,
        few_shot_k=args.few_shot_k,
        trial_steps=args.trial_steps,
        constraints=constraints,
        folder=Path(args.output) if args.output else None,
        progress=show_progress(args),
    )
    print(render_text(ranked, recommendation, constraints))
    print(f"report: {folder / 'report.html'}")
    return 0
