"""Will this recipe fit, and how long will it take: the estimate for a recipe, and the check before training.

`estimate_recipe` (behind `honed estimate`) tokenizes the recipe's training data with the model's own
tokenizer, predicts memory and time from the architecture (sizing/estimate.py), and, when asked,
loads the model and runs a few real steps (sizing/calibrate.py) to measure them. `check_fit` is what
`honed train` runs before loading the model: a prediction only (no steps), and a ResourceError naming the
numbers and the cheapest change that fits when the run would not, unless forced.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from honed.config.schema import Recipe
from honed.data.cache import cached_examples
from honed.data.tokenize import Encoded
from honed.errors import ResourceError
from honed.models.load import load_tokenizer, resolve_base, resolve_device
from honed.models.prepare import load_training_model, prepare_model
from honed.models.registry import Architecture, architecture_from_config
from honed.sizing.calibrate import available_bytes, calibrate, matmul_peak_flops
from honed.sizing.estimate import (
    DEFAULT_UTILISATION,
    GIB,
    HEADROOM,
    Estimate,
    Workload,
    cheapest_fit,
    estimate,
    step_shape,
)

log = logging.getLogger(__name__)


def model_config(folder: Path) -> tuple[Architecture, dict[str, Any]]:
    """The architecture numbers and raw config.json of a model folder."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    return architecture_from_config(config, str(path)), config


def config_from_architecture(arch: Architecture) -> dict[str, Any]:
    """A config.json-like dict for a model known only by its numbers (registry entries not on this
    machine): the transformers class is inferred from the architecture's traits."""
    if arch.qkv_bias:
        model_type = "qwen2"
    elif arch.qk_norm:
        model_type = "gemma3_text" if arch.head_dim == 256 else "qwen3"
    else:
        model_type = "llama"
    return {
        "model_type": model_type,
        "num_attention_heads": arch.heads,
        "num_key_value_heads": arch.kv_heads,
        "tie_word_embeddings": arch.tied_embeddings,
    }


def workload_of(
    examples: list[Encoded], recipe: Recipe, device: str, sequences_per_example: int = 1
) -> Workload:
    """The training sequences as the estimate sees them, for `recipe`'s batch and packing on `device`
    (a micro-batch runs `sequences_per_example` x batch_size of them: 2 for DPO's pairs)."""
    packing = step_shape(recipe, device, 0.0).packing
    return Workload.from_examples(examples, recipe.train.batch_size * sequences_per_example, packing)


def estimate_recipe(
    recipe: Recipe, calibrate_steps: int = 0, measure_throughput: bool = True, progress: bool = False
) -> tuple[Estimate, list[str] | None]:
    """Predict `recipe`'s peak memory and time on this machine; with `calibrate_steps`, also load the
    model and measure that many real steps. Returns the estimate and, when it does not fit, the cheapest
    overrides that would (None if it fits or nothing does)."""
    device = resolve_device(recipe.train.device)
    folder = resolve_base(recipe.model.base, recipe.model.revision).folder
    arch, config = model_config(folder)
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    examples, _ = cached_examples(recipe.data, tokenizer, "train")
    throughput = None
    if measure_throughput:
        throughput = matmul_peak_flops(device) * DEFAULT_UTILISATION.get(device.type, 0.25)
    free = available_bytes(device)
    workload = workload_of(examples, recipe, device.type)
    result = estimate(arch, config, recipe, workload, device.type, throughput, free)
    if calibrate_steps:
        measured = _calibrate(recipe, folder, examples, arch, device, calibrate_steps)
        measured["uncalibrated_step_s"] = result.step_s
        result.calibrated = measured
        result.throughput_flops = measured["throughput_flops"]
    change = None
    if not result.fits:
        found = cheapest_fit(arch, config, recipe, examples, device.type, result.throughput_flops, free)
        change = found[0] if found else None
    return result, change


def _calibrate(
    recipe: Recipe,
    folder: Path,
    examples: list[Encoded],
    arch: Architecture,
    device: torch.device,
    steps: int,
) -> dict[str, Any]:
    model = prepare_model(load_training_model(folder, recipe, device), recipe)  # qlora: the 4-bit base
    return calibrate(model, examples, recipe, arch, device, steps)


def check_fit(
    recipe: Recipe,
    folder: Path,
    examples: list[Encoded],
    device: torch.device,
    force: bool = False,
    sequences_per_example: int = 1,
) -> Estimate:
    """Predict the run's peak memory before loading the model; refuse (ResourceError) a run that will not
    fit the device, naming the numbers and the cheapest change that would, unless `force`.

    `examples` are the sequences the model runs (`sequences_per_example` per training example)."""
    arch, config = model_config(folder)
    free = available_bytes(device)
    result = estimate(
        arch,
        config,
        recipe,
        workload_of(examples, recipe, device.type, sequences_per_example),
        device.type,
        None,
        free,
    )
    log.info(
        "estimated peak memory %.2f GiB of %.2f GiB available on %s",
        result.memory.total / GIB,
        free / GIB,
        device.type,
    )
    if result.fits:
        return result
    found = cheapest_fit(arch, config, recipe, examples, device.type, None, free, sequences_per_example)
    message = refusal(result, found)
    if not force:
        raise ResourceError(message)
    log.warning("%s; going ahead because the run was forced", message.splitlines()[0])
    return result


def refusal(result: Estimate, found: tuple[list[str], Estimate] | None) -> str:
    """Why a run does not fit, with the numbers, and the cheapest change that would."""
    parts = result.memory
    assert result.available_bytes is not None  # an estimate without it fits, so is never refused
    lines = [
        f"this run needs about {parts.total / GIB:.1f} GiB at its peak but {result.device} has "
        f"{result.available_bytes / GIB:.1f} GiB available (honed keeps {1 - HEADROOM:.0%} free)",
        f"  weights {parts.weights / GIB:.2f}, gradients {parts.gradients / GIB:.2f}, AdamW state "
        f"{parts.optimizer / GIB:.2f}, activations {parts.activations / GIB:.2f}, backward and loss "
        f"{parts.transient / GIB:.2f}, runtime and data {parts.runtime / GIB:.2f}, allocator "
        f"{parts.allocator / GIB:.2f} GiB",
    ]
    if found:
        overrides, fitted = found
        slower = fitted.flops_per_step * fitted.steps / (result.flops_per_step * result.steps) - 1
        lines.append(
            f"cheapest change that fits: {' '.join(overrides)} (predicted peak "
            f"{fitted.memory.total / GIB:.1f} GiB, {max(0.0, slower):.0%} more compute)"
        )
    else:
        lines.append(
            "no change honed knows (checkpointing, smaller micro-batches, LoRA, shorter max_seq_len) fits"
        )
    lines.append("run `honed estimate RECIPE` for the details, or add --force to train anyway")
    return "\n".join(lines)
