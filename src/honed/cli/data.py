"""`honed data inspect FILE` and `honed data prepare RECIPE`: look at data, then prepare it for training."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from honed.cli._common import add_overrides, show_progress

if TYPE_CHECKING:  # types only: keeps `honed --help` fast
    from transformers import PreTrainedTokenizerBase


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("data", help="Inspect data files and prepare versioned datasets.")
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_inspect(data_sub)
    _add_prepare(data_sub)


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "inspect",
        help="Rows, format, token lengths, duplicates, PII and a rendered example of a data file.",
        description="Read a data file (or folder, or dataset) once and report: rows and detected format, "
        "malformed rows, the token-length histogram under the model's tokenizer and chat template, what "
        "cleaning would change, exact and near duplicates, personal data and secrets per type, and one "
        "example with the trained tokens marked [[like this]]. Nothing is written.",
    )
    parser.add_argument("source", help="A .jsonl/.csv/.parquet file, a text folder, or a saved dataset.")
    parser.add_argument(
        "--recipe", help="Take the format, templates, model and prepare settings from this recipe."
    )
    parser.add_argument(
        "--model", help="Tokenizer to measure with (default: the recipe's, or the embedded one)."
    )
    parser.add_argument("--format", help="Declare the format instead of detecting it (e.g. template).")
    parser.add_argument("--prompt-template", help="With --format template: e.g. '{question}'.")
    parser.add_argument("--completion-template", help="With --format template: e.g. '{answer}'.")
    parser.add_argument("--max-rows", type=int, help="Read only the first N rows.")
    parser.add_argument(
        "--no-near-duplicates", action="store_true", help="Skip near-duplicate detection (faster)."
    )
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    parser.set_defaults(run=run_inspect)


def _add_prepare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "prepare",
        help="Clean, deduplicate, scrub PII, split and leakage-check a recipe's data into a "
        "versioned folder.",
        description="Run the recipe's `prepare:` steps on its data and write "
        "<prepare.output_dir>/<name>-<content hash>/ with train/validation/test JSONL, dropped.jsonl "
        "(where and why each row was dropped) and manifest.json (inputs, settings, counts per step). "
        "Train on it with: honed train RECIPE data.train=<folder>/train.jsonl "
        "data.validation=<folder>/validation.jsonl; the run records the dataset's content hash.",
    )
    parser.add_argument("recipe", help="Recipe YAML file.")
    add_overrides(parser)
    parser.add_argument("--json", action="store_true", help="Print the manifest as JSON.")
    parser.set_defaults(run=run_prepare)


def run_inspect(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.config.prepare import PrepareConfig
    from honed.config.schema import DataConfig
    from honed.data.inspect import inspect_source

    started = time.perf_counter()
    if args.recipe:
        recipe = load_recipe(args.recipe)
        data, prepare, base = recipe.data, recipe.prepare, recipe.model.base
    else:
        data, prepare, base = DataConfig(train=args.source), PrepareConfig(), "smollm2-135m-instruct"
    overrides = {
        "format": args.format,
        "prompt_template": args.prompt_template,
        "completion_template": args.completion_template,
    }
    data = DataConfig(**{**data.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
    tokenizer = _tokenizer(args.model or base)
    report = inspect_source(
        args.source, data, prepare, tokenizer, args.max_rows, not args.no_near_duplicates, show_progress(args)
    )
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render_inspect(report))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.config.load import load_recipe
    from honed.data.prepare import prepare

    recipe = load_recipe(args.recipe, args.overrides)
    prepared = prepare(recipe, progress=show_progress(args))
    if args.json:
        print(json.dumps({"folder": str(prepared.folder), **prepared.manifest}, indent=2, ensure_ascii=False))
        return 0
    print(render_prepare(prepared.folder, prepared.manifest, prepared.reused))
    files = " ".join(
        f"data.{split}={(prepared.folder / info['file']).resolve()}"
        for split, info in prepared.manifest["outputs"].items()
        if split in ("train", "validation")
    )
    print(f"\ntrain on it:  honed train {args.recipe} {files}")
    return 0


def _tokenizer(base: str) -> PreTrainedTokenizerBase:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.models.load import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base(base).folder)


def render_inspect(report: dict[str, Any]) -> str:
    """The inspect report as text for a terminal."""
    lines = [f"{report['source']}: {report['rows']} rows, format {report['format'] or 'not detected'}"]
    if report["format_note"]:
        lines.append(f"  {report['format_note']}")
    lines.append("fields: " + ", ".join(f"{k} ({v})" for k, v in report["fields"].items()))
    malformed = report["malformed"]
    lines.append(f"malformed rows: {malformed['rows']}")
    lines += [f"  {problem}" for problem in malformed["first"]]
    lines += _render_tokens(report)
    cleaning = report["cleaning"]
    lines.append(
        "cleaning would change {} rows; drop {} empty, {} too short, {} too long".format(
            cleaning.get("rows_changed", 0),
            cleaning.get("empty", 0),
            cleaning.get("too_short", 0),
            cleaning.get("too_long", 0),
        )
    )
    dups = report["duplicates"]
    lines.append(f"duplicates: {dups.get('exact', 0)} exact, {dups.get('near', 0)} near")
    lines += [f"  {d['row']}: {d['kind']} duplicate of {d['of']}" for d in dups["first"]]
    pii = report["pii"]
    found = ", ".join(f"{k} {v}" for k, v in sorted(pii["found"].items())) or "none"
    lines.append(f"personal data and secrets: {found} (in {pii['rows']} rows)")
    lines += [f"  {p['row']}: {', '.join(p['types'])}" for p in pii["first"]]
    if report["example"]:
        lines += ["", "first example, trained tokens in [[ ]]:", report["example"]["masked"]]
        if "rejected" in report["example"]:
            lines += ["rejected answer:", report["example"]["rejected"]]
    lines.append(f"\n{report['seconds']} s")
    return "\n".join(lines)


def _render_tokens(report: dict[str, Any]) -> list[str]:
    tokens = report["tokens"]
    if "rows" not in tokens:
        return []
    lines = [
        f"tokens per row: min {tokens['min']}, p50 {tokens['p50']}, mean {tokens['mean']}, "
        f"p95 {tokens['p95']}, max {tokens['max']}; {tokens['longer_than_max_seq_len']} longer than "
        f"max_seq_len {tokens['max_seq_len']}"
    ]
    trained = report["trained_tokens"]
    if trained:
        lines.append(
            f"trained tokens per row: p50 {trained['p50']}, mean {trained['mean']}, max {trained['max']}"
        )
    widest = max(b["rows"] for b in tokens["histogram"])
    for b in tokens["histogram"]:
        label = f"{b['from']}-{b['to']}" if b["to"] else f">{b['from'] - 1}"
        bar = "#" * max(1, round(40 * b["rows"] / widest))
        lines.append(f"  {label:>11} {b['rows']:>8}  {bar}")
    return lines


def render_prepare(folder: Path, manifest: dict[str, Any], reused: bool) -> str:
    """The prepare manifest as text: what each step did, per split."""
    state = "already prepared (same content)" if reused else "written"
    lines = [f"{folder}: {state}, content hash {manifest['content_hash'][:12]}, format {manifest['format']}"]
    for step in manifest["steps"]:
        name = step["step"]
        details = {k: v for k, v in step.items() if k not in ("step", "rows")}
        lines.append(f"{name}: " + json.dumps(details, ensure_ascii=False))
        for row in step.get("rows", [])[:10]:
            lines.append(
                f"  {row['row']}: {row['overlap']:.0%} of its n-grams in {', '.join(row['held_out'])}"
            )
    outputs = ", ".join(f"{split} {info['rows']}" for split, info in manifest["outputs"].items())
    lines.append(f"rows written: {outputs}  ({manifest['seconds']} s)")
    return "\n".join(lines)
