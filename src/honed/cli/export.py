"""`honed export RUN --merged DIR --gguf DIR`: merged safetensors and GGUF files, each parity-checked."""

from __future__ import annotations

import argparse
from typing import Any

from honed.errors import ConfigError

QUANTS = ("f16", "q8_0")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "export",
        help="Export a run's model (merged safetensors, GGUF for llama.cpp and Ollama).",
        description="Fold the run's LoRA adapter into the base weights and write a folder "
        "that transformers.AutoModelForCausalLM loads (--merged), and/or GGUF files with an Ollama "
        "Modelfile (--gguf). Every file is reloaded and checked against the tuned model on golden "
        "prompts before it is reported done; a failed check writes nothing.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="Run directory (runs/<run-id>).")
    parser.add_argument("--merged", metavar="DIR", help="Write merged safetensors here.")
    parser.add_argument("--gguf", metavar="DIR", help="Write GGUF files (llama family only) here.")
    parser.add_argument(
        "--quant",
        nargs="+",
        choices=QUANTS,
        default=list(QUANTS),
        metavar="QUANT",
        help=f"GGUF quantizations, one file each: {', '.join(QUANTS)} (default: both).",
    )
    parser.add_argument(
        "--no-ollama", dest="ollama", action="store_false", help="Do not write an Ollama Modelfile."
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace DIR if it exists.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.merged and not args.gguf:
        raise ConfigError("choose an export: --merged DIR and/or --gguf DIR")
    if args.merged:
        # imported here, not at module level: keeps `honed --help` fast
        from honed.export.merged import export_merged

        result = export_merged(args.run_dir, args.merged, overwrite=args.overwrite)
        print(
            f"merged model: {result['out_dir']} (parity: max |logit diff| "
            f"{result['max_abs_logit_diff']:.2e} on {result['golden_prompts']} golden prompts)"
        )
    if args.gguf:
        from honed.export.gguf import export_gguf

        result = export_gguf(
            args.run_dir, args.gguf, args.quant, overwrite=args.overwrite, ollama=args.ollama
        )
        for quant, figures in result["files"].items():
            print(_gguf_line(result["out_dir"], quant, figures, result["golden_prompts"]))
        if result["modelfile"]:
            print(f"ollama Modelfile: {result['out_dir']}/{result['modelfile']} (ollama create NAME -f it)")
    return 0


def _gguf_line(out_dir: str, quant: str, figures: dict[str, Any], golden: int) -> str:
    """One line per GGUF file: path, size and its parity figures."""
    delta = figures["metric_delta"]
    metric = "" if delta is None else f", task metric delta {delta:+.3f}"
    size_mb, diff = figures["bytes"] / 1e6, figures["max_abs_logit_diff"]
    return (
        f"gguf {quant}: {out_dir}/{figures['file']} ({size_mb:.1f} MB; parity: max |logit diff| {diff:.2e}, "
        f"greedy {figures['greedy_identical']}/{golden} identical{metric})"
    )
