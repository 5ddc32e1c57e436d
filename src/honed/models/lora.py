"""Attach a PEFT LoRA adapter to a causal LM, or prepare it for full fine-tuning.

PEFT swaps the targeted linear modules for LoRA modules (no model subclassing), and its saved adapter
(adapter_config.json + adapter_model.safetensors) is what vLLM, TGI, LoRAX and transformers load.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from honed.config.schema import LoraConfig
from honed.errors import ConfigError

if TYPE_CHECKING:
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel
    from torch.autograd.function import FunctionCtx
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def apply_lora(model: PreTrainedModel, cfg: LoraConfig, seed: int, fuse_dropout: bool = True) -> PeftModel:
    """Wrap `model` in a PeftModel with only the LoRA weights trainable (`fuse_dropout`: see
    `fuse_lora_dropout`; off only to measure the unfused path)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(seed)  # adapter init is random: seed it so runs repeat
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        task_type="CAUSAL_LM",
        target_modules=cfg.target_modules,
        use_dora=cfg.use_dora,
        use_rslora=cfg.use_rslora,
    )
    model = get_peft_model(model, peft_cfg)
    if fuse_dropout and not cfg.use_dora:  # DoRA reuses the dropped input beside lora_A: keep PEFT's path
        fuse_lora_dropout(model)
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight (qlora) counts its unpacked elements."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(_unpacked_numel(p) for p in model.parameters())


def _unpacked_numel(param: torch.nn.Parameter) -> int:
    """bitsandbytes packs two 4-bit values per byte; its quant_state keeps the weight's real shape."""
    state = getattr(param, "quant_state", None)
    return math.prod(state.shape) if state is not None and hasattr(state, "shape") else param.numel()


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A dropout keep-mask (True with probability 1 - p, to 1/65,536), drawn by numpy's PCG64 seeded from
    torch's generator, so torch.manual_seed and checkpointed RNG state fix it. About five times faster than
    torch's CPU bernoulli_, which took 17% of a LoRA training step on SmolLM2-135M."""
    seed = int(torch.randint(0, 2**62, (1,)))
    draws = np.random.default_rng(seed).integers(0, 65536, size=math.prod(shape), dtype=np.uint16)
    return torch.from_numpy(draws >= round(p * 65536)).view(shape)


class _DroppedLinear(torch.autograd.Function):
    """lora_A(dropout(x)) in one op that keeps x (shared by the q/k/v or gate/up adapters of a layer, so
    stored once) and a one-byte mask for backward, instead of a dropped float copy of x per adapter."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p)
        scale = 1.0 / (1.0 - p)
        ctx.scale = scale
        ctx.save_for_backward(x, keep, weight)
        return (x * _factor(keep, x.dtype, scale)) @ weight.T

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, keep, weight = ctx.saved_tensors
        factor = _factor(keep, x.dtype, ctx.scale)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight).mul_(factor)
        if ctx.needs_input_grad[1]:
            dropped = x * factor
            grad_w = grad.reshape(-1, grad.shape[-1]).T @ dropped.reshape(-1, dropped.shape[-1])
        return grad_x, grad_w, None


def _factor(keep: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """The mask as 0 / (1 / (1 - p)) floats: multiplying by a float tensor is about 8x faster on CPU than
    by a bool one (a promotion slow path), so the byte mask is widened only for the multiply."""
    return keep.to(dtype).mul_(scale)


def _dropped_forward(linear: torch.nn.Linear, p: float, x: torch.Tensor) -> torch.Tensor:
    if linear.training and x.device.type == "cpu" and linear.bias is None:
        return _DroppedLinear.apply(x, linear.weight, p)
    dropped = torch.nn.functional.dropout(x, p, training=linear.training)
    return torch.nn.functional.linear(dropped, linear.weight, linear.bias)


def fuse_lora_dropout(model: torch.nn.Module) -> int:
    """On CPU, compute each LoRA adapter's dropout and A projection as one op (`_DroppedLinear`): less time
    drawing masks, less memory holding dropped inputs. The adapter's weights and names do not change.
    Elsewhere, and in eval mode, the modules behave exactly as PEFT's. Returns how many were fused."""
    fused = 0
    for module in model.modules():
        dropouts, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(dropouts, torch.nn.ModuleDict) or not isinstance(lora_a, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if name not in lora_a:  # a dropout without its A projection: nothing to fuse
                continue
            linear = lora_a[name]
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and type(linear) is torch.nn.Linear:
                linear.forward = functools.partial(_dropped_forward, linear, dropout.p)
                dropouts[name] = torch.nn.Identity()
                fused += 1
    return fused


def continue_adapter(model: PreTrainedModel, cfg: LoraConfig, seed: int) -> PeftModel:
    """Load the PEFT LoRA adapter in `cfg.init_from` onto `model`, trainable, to train it further.

    The adapter's own r, alpha, targets, DoRA and rsLoRA are kept (its weights only fit its shape);
    `cfg.dropout` replaces its dropout, which is fused on CPU as for a fresh adapter. Raises ConfigError
    when the folder holds no LoRA adapter or the adapter's shapes do not fit `model`.
    """
    from peft import PeftModel

    folder = Path(cfg.init_from or "")
    peft_cfg = read_adapter_config(folder)
    _check_adapter_fits(model, folder, peft_cfg)
    peft_cfg.lora_dropout = cfg.dropout
    torch.manual_seed(seed)  # what a fresh adapter's init would consume; keeps dropout masks repeatable
    model = PeftModel.from_pretrained(model, folder, is_trainable=True, config=peft_cfg)
    if not peft_cfg.use_dora:  # as apply_lora: DoRA reuses the dropped input, keep PEFT's path
        fuse_lora_dropout(model)
    log.info("continuing the adapter in %s (r=%d, alpha=%g)", folder, peft_cfg.r, peft_cfg.lora_alpha)
    return model


def read_adapter_config(folder: Path) -> PeftLoraConfig:
    """The LoRA config of the adapter saved in `folder` (adapter_config.json + safetensors weights), or a
    ConfigError naming what is missing."""
    from peft import LoraConfig as PeftLoraConfig

    where = f"lora.init_from: {folder}"
    if not folder.is_dir():
        raise ConfigError(
            f"{where} is not a folder; expected a run's adapter folder, runs/<id>/final/adapter"
        )
    if not (folder / "adapter_config.json").is_file():
        hint = (
            "; this is a full model: set it as model.base instead (and drop lora.init_from)"
            if (folder / "config.json").is_file()
            else ""
        )
        raise ConfigError(
            f"{where} holds no adapter_config.json, so it is not a PEFT adapter folder (expected "
            f"runs/<id>/final/adapter){hint}"
        )
    raw = json.loads((folder / "adapter_config.json").read_text())
    if raw.get("peft_type") != "LORA":
        raise ConfigError(f"{where} holds a {raw.get('peft_type')} adapter; only LoRA adapters continue")
    if not (folder / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{where} has no adapter_model.safetensors (honed loads no pickled weights)")
    return PeftLoraConfig.from_pretrained(folder)


def _check_adapter_fits(model: torch.nn.Module, folder: Path, peft_cfg: PeftLoraConfig) -> None:
    """ConfigError unless every saved LoRA pair fits the module it adapts in `model` (same base shape)."""
    modules = dict(model.named_modules())
    problems = []
    for name, (n_in, n_out) in _adapter_shapes(folder).items():
        module = modules.get(name)
        if module is None:
            problems.append(f"{name}: not in the model")
            continue
        want = (getattr(module, "in_features", n_in), getattr(module, "out_features", n_out))
        if (n_in, n_out) != want:
            problems.append(f"{name}: adapter {n_in} -> {n_out}, model {want[0]} -> {want[1]}")
    if problems:
        listed = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise ConfigError(
            f"lora.init_from: the adapter in {folder} was trained on {peft_cfg.base_model_name_or_path!r}, "
            f"whose shapes differ from model.base: {listed}; set model.base to the adapter's base model"
        )


def _adapter_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """Adapted module name (as in the bare model) -> (in, out) features, from the saved lora_A/lora_B
    shapes, read without loading the weights."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as saved:
        for key in saved.keys():
            name, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
            if part in ("A.weight", "B.weight"):
                shape = saved.get_slice(key).get_shape()
                found = shapes.setdefault(name, [0, 0])
                found[part == "B.weight"] = shape[1] if part == "A.weight" else shape[0]
    return {name: (n_in, n_out) for name, (n_in, n_out) in shapes.items()}
