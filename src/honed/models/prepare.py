"""The model as training starts from it: the base loaded in the recipe's dtype (4-bit NF4 for qlora), then
an adapter attached (LoRA, DoRA, rsLoRA; fresh or continued from `lora.init_from`) or every weight made
trainable. Training, the memory calibration and benchmarks all prepare models through here, so what is
measured is what trains."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from honed.config.schema import Recipe
from honed.models.load import load_model, resolve_device, resolve_dtype
from honed.models.lora import apply_lora, continue_adapter, read_adapter_config
from honed.models.quantize import check_backend, load_quantized


def check_adapter_backend(recipe: Recipe) -> None:
    """Fail now, before anything is written, if the recipe's adapter cannot be built here: a wrong
    `lora.init_from` folder, or qlora without a bitsandbytes backend for the device."""
    if recipe.lora.init_from and recipe.adapter != "full":
        read_adapter_config(Path(recipe.lora.init_from))
    if recipe.adapter == "qlora":
        check_backend(resolve_device(recipe.train.device))


def load_training_model(folder: Path, recipe: Recipe, device: torch.device) -> PreTrainedModel:
    """The base model as training starts from it: in the recipe's dtype on `device`; for `adapter: qlora`
    with its linear layers quantised to 4-bit NF4 (models/quantize.py), computing in that dtype."""
    dtype = resolve_dtype(recipe.model.dtype, device)
    if recipe.adapter == "qlora":
        return load_quantized(folder, dtype, device, recipe.model.trust_remote_code)
    return load_model(folder, dtype, device, recipe.model.trust_remote_code)


def prepare_model(model: PreTrainedModel, recipe: Recipe) -> torch.nn.Module:
    """LoRA: wrap in a fresh PEFT adapter, or the one in `lora.init_from`; full: every weight trainable."""
    if recipe.adapter in ("lora", "qlora"):
        if recipe.lora.init_from:
            return continue_adapter(model, recipe.lora, recipe.train.seed)
        return apply_lora(model, recipe.lora, recipe.train.seed)
    model.requires_grad_(True)
    return model
