"""Export a run's tuned model as merged safetensors that plain `transformers` loads.

The LoRA update is folded into the base weights (PEFT `merge_and_unload`), and the folder gets the
tokenizer and the chat template the run trained with, so `AutoModelForCausalLM.from_pretrained(DIR)` gives
the same logits as base + adapter. A parity check on golden prompts runs before the export is reported
done, and fails loudly on mismatch.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from honed.errors import ExportError

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-3  # fp32 max |logit difference| between adapter and merged model


def export_merged(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Write merged weights + tokenizer to `out_dir`; return the parity figures."""
    from transformers import AutoModelForCausalLM

    from honed.training.run_dir import load_run_recipe
    from honed.training.sft import load_tuned

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty; choose another folder or pass --overwrite")
    recipe = load_run_recipe(run_dir)
    model, tokenizer = load_tuned(run_dir, recipe)
    model = model.float().eval()
    golden = _golden_inputs(tokenizer, run_dir)
    expected = _logits(model, golden)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    staging = Path(
        tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent if out_dir.parent.exists() else None)
    )
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    reloaded = AutoModelForCausalLM.from_pretrained(staging, dtype=torch.float32, use_safetensors=True).eval()
    max_diff = float((_logits(reloaded, golden) - expected).abs().max())
    if max_diff > PARITY_ATOL:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(
            f"merged export does not match the adapter model: max |logit diff| {max_diff:.2e} > "
            f"{PARITY_ATOL:.0e}; nothing was written to {out_dir}"
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), out_dir)
    log.info(
        "merged model written to %s (parity: max |logit diff| %.2e on %d golden prompts)",
        out_dir,
        max_diff,
        len(golden),
    )
    return {"out_dir": str(out_dir), "max_abs_logit_diff": max_diff, "golden_prompts": len(golden)}


def _golden_inputs(tokenizer, run_dir: Path, count: int = 4) -> list[torch.Tensor]:
    """Token ids of a few prompts: the run's own evaluation prompts when present, else fixed text."""
    import json

    from honed.data.tokenize import render_prompt

    texts = []
    predictions = run_dir / "eval" / "tuned" / "predictions.jsonl"
    if predictions.is_file():
        for line in predictions.read_text().splitlines()[:count]:
            texts.append(render_prompt(tokenizer, [{"role": "user", "content": json.loads(line)["prompt"]}]))
    if not texts:
        texts = [render_prompt(tokenizer, [{"role": "user", "content": "Hello! What can you do?"}])]
    return [torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"]]) for t in texts]


def _logits(model, inputs: list[torch.Tensor]) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(input_ids=ids.to(device)).logits[0].float().cpu() for ids in inputs])
