"""`honed export RUN --merged DIR`: merged safetensors + tokenizer, parity-checked."""

from __future__ import annotations

import argparse

from honed.errors import ConfigError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "export",
        help="Export a run's model (merged safetensors).",
        description="Fold the run's LoRA adapter into the base weights and write a folder "
        "that transformers.AutoModelForCausalLM loads, with the tokenizer and "
        "chat template. Logits are checked against the adapter model.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run directory (runs/<run-id>).")
    parser.add_argument("--merged", metavar="DIR", help="Write merged safetensors here.")
    parser.add_argument("--overwrite", action="store_true", help="Replace DIR if it exists.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from honed.export.merged import export_merged

    if not args.merged:
        raise ConfigError("choose an export: --merged DIR")
    result = export_merged(args.run_dir, args.merged, overwrite=args.overwrite)
    print(
        f"merged model: {result['out_dir']} (parity: max |logit diff| {result['max_abs_logit_diff']:.2e} "
        f"on {result['golden_prompts']} golden prompts)"
    )
    return 0
