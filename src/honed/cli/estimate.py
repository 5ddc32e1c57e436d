"""`honed estimate RECIPE [key=value ...]`: a run's peak memory and time, predicted before it runs."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from honed.cli._common import add_overrides, add_task_files

if TYPE_CHECKING:  # types only: keeps `honed --help` fast
    from honed.config.schema import Recipe
    from honed.sizing.estimate import Estimate


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "estimate",
        help="Predict a recipe's peak memory and training time, and whether it fits this machine.",
        description="Predict peak memory (weights, gradients, AdamW state, activations, backward and "
        "runtime) and time per step and per run for the recipe's model, adapter, batch, sequence lengths "
        "and device, from the architecture and the tokenized training data. --calibrate N also loads the "
        "model and runs N real steps to measure them. If the run will not fit, prints the cheapest "
        "change that would.",
    )
    parser.add_argument("recipe", help="Recipe YAML file.")
    add_overrides(parser)
    parser.add_argument(
        "--calibrate",
        type=int,
        default=3,
        metavar="STEPS",
        help="Real optimizer steps to measure memory and speed (default 3; 0: prediction only).",
    )
    parser.add_argument("--json", action="store_true", help="Print the estimate as JSON.")
    add_task_files(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.sizing.fit import estimate_recipe

    recipe = load_recipe(args.recipe, args.overrides, task_files=args.task_files)
    result, change = estimate_recipe(recipe, calibrate_steps=max(0, args.calibrate))
    if args.json:
        print(json.dumps({**result.as_dict(), "cheapest_fit": change}, indent=2))
        return 0
    print(render(recipe, result, change))
    return 0 if result.fits else 1


def render(recipe: Recipe, result: Estimate, change: list[str] | None) -> str:
    """The estimate as a short text report."""
    # imported here, not at module level: keeps `honed --help` fast
    from honed.sizing.estimate import GIB

    mem = result.memory
    lines = [
        f"{recipe.model.base} · {recipe.adapter} · batch {recipe.train.batch_size} x "
        f"{recipe.train.grad_accum_steps} accumulation · {result.device} {result.dtype}",
        f"parameters {result.params / 1e6:,.1f}M, trainable {result.trainable / 1e6:,.2f}M",
        f"peak memory  {mem.total / GIB:6.2f} GiB predicted"
        + (f" of {result.available_bytes / GIB:.1f} GiB available" if result.available_bytes else ""),
    ]
    for name, value in mem.as_dict().items():
        if name != "total":
            lines.append(f"  {name:<12}{value / GIB:6.2f} GiB")
    lines.append(
        f"  activations: {result.activation_bytes_per_token / 1024:.1f} KiB per token of the largest "
        "micro-batch"
    )
    # step_s, train_s and throughput_flops are set together; each is tested so the type checker knows
    if result.step_s is not None and result.train_s is not None and result.throughput_flops is not None:
        lines.append(
            f"time         {result.step_s:6.2f} s per step x {result.steps} steps = "
            f"{result.train_s / 60:.1f} min ({result.throughput_flops / 1e9:.0f} GFLOP/s"
            f"{' measured' if result.calibrated else ' assumed'})"
        )
    if result.calibrated:
        lines += _measured(result)
    if result.fits:
        lines.append("fits: yes")
    else:
        lines.append(
            "fits: NO"
            + (f"; cheapest change that fits: {' '.join(change)}" if change else "; nothing honed knows fits")
        )
    return "\n".join(lines)


def _measured(result: Estimate) -> list[str]:
    """What the real steps measured, beside what was predicted for them."""
    # imported here, not at module level: keeps `honed --help` fast
    from honed.sizing.estimate import GIB

    measured = result.calibrated
    steps = ", ".join(f"{s:.2f}" for s in measured["step_s"])
    per_token = measured["activation_bytes_per_token"] / 1024
    return [
        f"measured over {measured['steps']} real steps:",
        f"  peak memory {measured['peak_memory_bytes'] / GIB:.2f} GiB "
        f"(predicted {result.memory.total / GIB:.2f})",
        f"  activations {per_token:.1f} KiB per token (predicted "
        f"{result.activation_bytes_per_token / 1024:.1f}; with checkpointing the prediction adds the layer "
        "being recomputed)",
        f"  step time {steps} s (predicted {measured['uncalibrated_step_s']:.2f} s before measuring; "
        "the first step pays one-off costs)",
    ]
