"""Measure base-model candidates on the user's own task: the part of `honed select` that runs models.

For each candidate (a registry name, a local folder, a .gguf file or a hub id) it gathers the facts
(parameters, context length, license, chat template: from the registry, config.json or GGUF metadata)
and, when the weights are on this machine, scores the base model zero-shot and k-shot on a sample of the
recipe's evaluation rows with the recipe's task, times single-request generation, predicts training
memory and time per epoch for the recipe (training/estimate.py) and, if asked, fine-tunes a LoRA adapter
for a fixed number of steps and scores it again. A candidate whose weights are not here (a hub id,
offline) keeps its registry facts and an estimate from another candidate's token lengths, marked as not
evaluated. Ranking and the report are selection/rank.py and selection/render.py.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from honed.config.schema import Recipe
from honed.data.cache import cached_examples
from honed.data.dataset import EvalRow
from honed.data.tokenize import Encoded, render_prompt
from honed.errors import ModelError
from honed.evaluation.evaluate import EvalTask, build_eval, draw_shots, evaluate_model, with_shots
from honed.models.decoding import generate
from honed.models.load import (
    EMBEDDED,
    load_model,
    load_tokenizer,
    resolve_base,
    resolve_device,
    resolve_dtype,
)
from honed.models.registry import architecture_from_config, architecture_from_gguf, lookup, param_count
from honed.pipeline.finetune import train_model
from honed.selection.rank import Constraints, rank, recommend
from honed.selection.render import write_report
from honed.sizing.calibrate import matmul_peak_flops
from honed.sizing.estimate import DEFAULT_UTILISATION, estimate
from honed.sizing.fit import config_from_architecture, model_config, workload_of

if TYPE_CHECKING:  # torch and transformers are heavy: only the type checker imports them here
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_LATENCY_ROWS = 5  # prompts generated one at a time to time a single request
_EXAMPLES = 3


def select(
    recipe: Recipe,
    candidates: list[str],
    sample_rows: int = 50,
    few_shot_k: int = 3,
    trial_steps: int = 0,
    constraints: Constraints | None = None,
    folder: Path | None = None,
    progress: bool = True,
) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """Measure every candidate on `recipe`'s task, rank them under `constraints`, write the report.

    Returns the report folder, the ranked candidates and the recommendation.
    """
    import torch

    constraints = constraints or Constraints()
    start = time.perf_counter()
    device = resolve_device(recipe.train.device)
    throughput = matmul_peak_flops(device) * DEFAULT_UTILISATION.get(device.type, 0.25)
    sampled = _sampled(recipe, sample_rows, few_shot_k)
    results: list[dict[str, Any]] = []
    lengths: list[Encoded] | None = None
    for name in candidates:
        log.info("candidate %s", name)
        found, examples = _measure(name, sampled, trial_steps, device, throughput, lengths, progress)
        lengths = lengths or examples
        results.append(found)
        gc.collect()
    for found in results:  # candidates measured before any tokenizer was here get estimates now
        if found["train_memory_bytes"] is None and lengths is not None:
            _estimate_into(found, sampled, lengths, device.type, throughput, proxy=True)
    ranked = rank(results, constraints)
    recommendation = recommend(ranked, constraints)
    meta = {
        "recipe": recipe.name,
        "task": recipe.eval.task,
        "sample_rows": sample_rows,
        "few_shot_k": few_shot_k,
        "trial_steps": trial_steps,
        "device": f"{device.type} ({torch.get_num_threads()} threads)",
        "wall_s": round(time.perf_counter() - start, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    folder = folder or Path(recipe.output.runs_dir) / f"select-{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    write_report(folder, ranked, recommendation, constraints, meta)
    return folder, ranked, recommendation


def _sampled(recipe: Recipe, rows: int, k: int) -> Recipe:
    """The recipe scoring `rows` evaluation rows with `k` in-context examples."""
    return recipe.model_copy(
        update={"eval": recipe.eval.model_copy(update={"max_rows": rows, "few_shot_k": k})}
    )


def facts(name: str) -> dict[str, Any]:
    """What is known of a candidate without loading it: registry entry, config.json or GGUF metadata."""
    import json

    known = lookup(name)
    path = Path(name).expanduser()
    base = {
        "name": name,
        "context_length": None,
        "license": None,
        "commercial_use": None,
        "chat_template": None,
    }
    if known is not None and not path.exists():
        return {
            **base,
            "source": "registry",
            "params": known.params,
            "context_length": known.context_length,
            "license": known.license,
            "commercial_use": known.commercial_use,
            "chat_template": known.chat_template,
        }
    if path.suffix == ".gguf" and path.is_file():
        arch, context = architecture_from_gguf(path)
        return {**base, "source": "gguf", "params": param_count(arch), "context_length": context}
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        arch = architecture_from_config(config, str(path / "config.json"))
        context = config.get("max_position_embeddings")
        return {**base, "source": "folder", "params": param_count(arch), "context_length": context}
    return {**base, "source": "hub", "params": None}


def _measure(
    name: str,
    recipe: Recipe,
    trial_steps: int,
    device: torch.device,
    throughput: float,
    lengths: list[Encoded] | None,
    progress: bool,
) -> tuple[dict[str, Any], list[Encoded] | None]:
    """One candidate's row for the ranking, and its tokenized training examples (None if not loaded)."""
    found = {
        **facts(name),
        "evaluated": False,
        "not_evaluated_reason": None,
        "primary_metric": None,
        "zero_shot": None,
        "few_shot": None,
        "few_shot_k": recipe.eval.few_shot_k,
        "trial": None,
        "trial_steps": trial_steps or None,
        "latency_s": None,
        "tokens_per_s": None,
        "train_memory_bytes": None,
        "train_epoch_s": None,
        "examples": [],
    }
    folder = _local_folder(name, recipe)
    if folder is None:
        found["not_evaluated_reason"] = (
            "weights not on this machine (offline, or not fetched); registry facts only"
        )
        return found, None
    candidate = recipe.model_copy(update={"model": recipe.model.model_copy(update={"base": name})})
    examples = _evaluate(found, candidate, folder, trial_steps, device, throughput, progress)
    return found, examples


def _local_folder(name: str, recipe: Recipe) -> Path | None:
    """The candidate's weights folder if it is on this machine (converted once if GGUF), else None."""
    known = lookup(name)
    path = Path(name).expanduser()
    here = name == EMBEDDED or path.exists() or (known is not None and bool(known.package))
    if not here:
        here = _in_hf_cache(known.hub_id if known else name)
    if not here:
        return None
    try:
        return resolve_base(name, recipe.model.revision).folder
    except ModelError as exc:
        log.warning("candidate %s: %s", name, exc)
        return None


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _evaluate(
    found: dict[str, Any],
    recipe: Recipe,
    folder: Path,
    trial_steps: int,
    device: torch.device,
    throughput: float,
    progress: bool,
) -> list[Encoded]:
    """Fill in a loaded candidate's scores, latency, estimate and trial; return its training examples."""
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    if found["chat_template"] is None:
        found["chat_template"] = "own" if _ships_template(folder) else "fallback"
    model = load_model(
        folder, resolve_dtype(recipe.model.dtype, device), device, recipe.model.trust_remote_code
    )
    task, rows = build_eval(recipe)
    zero, zero_predictions = evaluate_model(model, tokenizer, rows, recipe, task, "zero-shot", progress)
    found.update(evaluated=True, primary_metric=task.primary_metric, zero_shot=_numbers(zero))
    few_predictions = None
    if recipe.eval.few_shot_k and not hasattr(task, "run"):
        shot_rows = with_shots(rows, draw_shots(recipe))
        few, few_predictions = evaluate_model(model, tokenizer, shot_rows, recipe, task, "few-shot", progress)
        found["few_shot"] = _numbers(few)
    found["examples"] = _examples(zero_predictions, few_predictions)
    found["latency_s"], found["tokens_per_s"] = _latency(model, tokenizer, rows, recipe)
    examples, _ = cached_examples(recipe.data, tokenizer, "train")
    _estimate_into(found, recipe, examples, device.type, throughput, proxy=False, folder=folder)
    if trial_steps:
        found["trial"] = _trial(model, tokenizer, examples, recipe, task, rows, trial_steps, progress)
    del model
    return examples


def _ships_template(folder: Path) -> bool:
    import json

    config = folder / "tokenizer_config.json"
    return (folder / "chat_template.jinja").is_file() or (
        config.is_file() and "chat_template" in json.loads(config.read_text())
    )


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _examples(zero: list[dict[str, Any]], few: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {
            "prompt": row["prompt"],
            "reference": row["reference"],
            "zero_shot": row["prediction"],
            "few_shot": few[i]["prediction"] if few else None,
        }
        for i, row in enumerate(zero[:_EXAMPLES])
        if "prediction" in row
    ]


def _latency(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[EvalRow], recipe: Recipe
) -> tuple[float | None, float | None]:
    """Mean seconds per answer and generated tokens per second, one request at a time."""
    if not rows or not rows[0].prompt:
        return None, None
    prompts = [render_prompt(tokenizer, row.prompt) for row in rows[:_LATENCY_ROWS]]
    start = time.perf_counter()
    answers = generate(
        model, tokenizer, prompts, recipe.eval.max_new_tokens, batch_size=1, stop=recipe.eval.stop
    )
    wall = time.perf_counter() - start
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
    return wall / len(prompts), tokens / wall


def _estimate_into(
    found: dict[str, Any],
    recipe: Recipe,
    examples: list[Encoded],
    device: str,
    throughput: float,
    proxy: bool,
    folder: Path | None = None,
) -> None:
    """Predicted training memory and time per epoch of `recipe` for this candidate."""
    if folder is not None:
        arch, config = model_config(folder)
    else:
        known = lookup(found["name"])
        if known is None:
            return
        arch = known.architecture
        config = config_from_architecture(arch)
    one_epoch = recipe.model_copy(
        update={"train": recipe.train.model_copy(update={"epochs": 1.0, "max_steps": None})}
    )
    result = estimate(arch, config, one_epoch, workload_of(examples, recipe, device), device, throughput)
    found["train_memory_bytes"] = result.memory.total
    found["train_epoch_s"] = result.train_s
    found["estimate"] = {**result.as_dict(), "token_lengths_from_another_tokenizer": proxy}


def _trial(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Encoded],
    recipe: Recipe,
    task: EvalTask,
    rows: list[EvalRow],
    steps: int,
    progress: bool,
) -> dict[str, float]:
    """Fine-tune a LoRA adapter for `steps` steps on the training data, then score it on the same rows."""
    trial = recipe.model_copy(
        update={
            "adapter": "lora",
            "train": recipe.train.model_copy(
                update={"max_steps": steps, "lr_warmup_steps": min(steps // 5, 10)}
            ),
        }
    )
    with tempfile.TemporaryDirectory(prefix="honed-trial-") as run_dir:
        tuned, _ = train_model(model, tokenizer, examples, None, trial, Path(run_dir), progress=progress)
    metrics, _ = evaluate_model(tuned, tokenizer, rows, trial, task, "trial", progress)
    return _numbers(metrics)


def parse_candidates(text: str) -> list[str]:
    """`a,b,c` into names, blanks dropped, order kept, duplicates removed."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    return list(dict.fromkeys(names))
