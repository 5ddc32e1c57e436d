"""Export a run's tuned model as merged safetensors that plain `transformers` loads.

The LoRA update is folded into the base weights (PEFT `merge_and_unload`), and the folder gets the
tokenizer and the chat template the run trained with, so `AutoModelForCausalLM.from_pretrained(DIR)` gives
the same logits as base + adapter. A parity check on golden prompts runs before the export is reported
done, and fails loudly on mismatch.

This module also owns what every export shares: the merge (`merge_run`), the golden prompts parity is
checked on (`golden_rows`), and the staging folder an export is written to before it is moved into place
(`staging_dir`, `publish`), so a failed export leaves nothing behind. export/gguf.py builds on these.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from honed.config.schema import Recipe
from honed.data.tokenize import render_prompt
from honed.errors import ExportError
from honed.runs.directory import load_run_recipe
from honed.runs.final import load_tuned

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-3  # fp32 max |logit difference| between adapter and merged model
GOLDEN_PROMPTS = 8  # prompts every parity check runs on

# Used when a run has no evaluation predictions (or fewer than GOLDEN_PROMPTS): digits, punctuation,
# accents, code and line breaks, so tokenizer and numeric drift both have a chance to show.
FIXED_PROMPTS = (
    "Hello! What can you do?",
    "Summarise in one sentence: the meeting moved from 3pm to 4:30pm on 12 March 2024.",
    "Translate to French: Where is the train station?",
    "Write a Python function that returns the square of x.",
    "List three colours, one per line.",
    "What is 17 * 23? Answer with the number only.",
    "Café, naïve, jalapeño: write these words in capitals.",
    "Answer yes or no: is the Pacific the largest ocean?",
)


@dataclass(frozen=True)
class Golden:
    """One golden prompt: the rendered text a model continues, and its reference answer if the run has one."""

    prompt: str
    reference: str | None = None


@dataclass
class MergedRun:
    """A finished run's model with its adapter folded in (float32, eval mode), and what parity needs."""

    run_dir: Path
    recipe: Recipe
    model: PreTrainedModel  # no PEFT wrapper
    tokenizer: PreTrainedTokenizerBase
    golden: list[Golden]
    adapter_logits: torch.Tensor  # (total golden tokens, vocab): the adapter model's, before merging


def merge_run(run_dir: str | Path, golden_count: int = GOLDEN_PROMPTS) -> MergedRun:
    """Load a finished run, score the golden prompts with the adapter model, then fold the adapter in."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir)
    log.info("merge: loading %s and folding its adapter into the base weights", run_dir)
    model, tokenizer = load_tuned(run_dir, recipe)
    model = model.float().eval()
    golden = golden_rows(tokenizer, run_dir, recipe.data.system_prompt, golden_count)
    adapter_logits = logits(model, golden_ids(tokenizer, golden))
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    return MergedRun(run_dir, recipe, merged.eval(), tokenizer, golden, adapter_logits)


def export_merged(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write merged weights + tokenizer to `out_dir`; return the parity figures."""
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    merged = merge_run(run_dir)
    staging = staging_dir(out_dir)
    try:
        merged.model.save_pretrained(staging)
        merged.tokenizer.save_pretrained(staging)
        reloaded = AutoModelForCausalLM.from_pretrained(staging, dtype=torch.float32, use_safetensors=True)
        got = logits(reloaded.eval(), golden_ids(merged.tokenizer, merged.golden))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    max_diff = float((got - merged.adapter_logits).abs().max())
    if max_diff > PARITY_ATOL:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(
            f"merged export does not match the adapter model: max |logit diff| {max_diff:.2e} > "
            f"{PARITY_ATOL:.0e}; nothing was written to {out_dir}"
        )
    publish(staging, out_dir)
    log.info(
        "merged model written to %s (parity: max |logit diff| %.2e on %d golden prompts)",
        out_dir,
        max_diff,
        len(merged.golden),
    )
    return {"out_dir": str(out_dir), "max_abs_logit_diff": max_diff, "golden_prompts": len(merged.golden)}


def golden_rows(
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    system_prompt: str | None = None,
    count: int = GOLDEN_PROMPTS,
) -> list[Golden]:
    """`count` prompts: the run's own evaluation prompts and references first, then fixed text.

    Prompts are rendered with `render_prompt`, the recipe's system prompt first when it has one, as the
    run's evaluation rendered them (predictions.jsonl keeps only the last user message).
    """

    def render(text: str) -> str:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return render_prompt(tokenizer, [*system, {"role": "user", "content": text}])

    rows = []
    predictions = Path(run_dir) / "eval" / "tuned" / "predictions.jsonl"
    if predictions.is_file():
        for line in predictions.read_text().splitlines()[:count]:
            row = json.loads(line)
            if isinstance(row.get("prompt"), str):
                rows.append(Golden(render(row["prompt"]), row.get("reference")))
    for text in FIXED_PROMPTS[: max(0, count - len(rows))]:
        rows.append(Golden(render(text)))
    return rows


def golden_ids(tokenizer: PreTrainedTokenizerBase, golden: list[Golden]) -> list[torch.Tensor]:
    """Each golden prompt's token ids, shape (1, tokens), as evaluation encodes them (no added specials)."""
    return [torch.tensor([tokenizer(g.prompt, add_special_tokens=False)["input_ids"]]) for g in golden]


def logits(model: torch.nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The model's float32 logits at every position of every input, concatenated: (tokens, vocab)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(input_ids=ids.to(device)).logits[0].float().cpu() for ids in inputs])


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out_dir` unless `overwrite`, before any work is done."""
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty; choose another folder or pass --overwrite")


def staging_dir(out_dir: Path) -> Path:
    """A fresh hidden folder beside `out_dir` (same filesystem, so `publish` is a rename)."""
    parent = out_dir.parent if out_dir.parent.exists() else None
    return Path(tempfile.mkdtemp(prefix=".export-", dir=parent))


def publish(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` with the finished `staging` folder."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), out_dir)
