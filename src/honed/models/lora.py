"""Attach a PEFT LoRA adapter to a causal LM, or prepare it for full fine-tuning.

PEFT swaps the targeted linear modules for LoRA modules (no model subclassing), and its saved adapter
(adapter_config.json + adapter_model.safetensors) is what vLLM, TGI, LoRAX and transformers load.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from honed.config.schema import LoraConfig


def apply_lora(model, cfg: LoraConfig, seed: int, fuse_dropout: bool = True):
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


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight (qlora) counts its unpacked elements."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(_unpacked_numel(p) for p in model.parameters())


def _unpacked_numel(param) -> int:
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
    def forward(ctx, x, weight, p):
        keep = keep_mask(x.shape, p)
        scale = 1.0 / (1.0 - p)
        ctx.scale = scale
        ctx.save_for_backward(x, keep, weight)
        return (x * _factor(keep, x.dtype, scale)) @ weight.T

    @staticmethod
    def backward(ctx, grad):
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


def _dropped_forward(linear: torch.nn.Linear, p: float, x: torch.Tensor):
    if linear.training and x.device.type == "cpu" and linear.bias is None:
        return _DroppedLinear.apply(x, linear.weight, p)
    dropped = torch.nn.functional.dropout(x, p, training=linear.training)
    return torch.nn.functional.linear(dropped, linear.weight, linear.bias)


def fuse_lora_dropout(model) -> int:
    """On CPU, compute each LoRA adapter's dropout and A projection as one op (`_DroppedLinear`): less time
    drawing masks, less memory holding dropped inputs. The adapter's weights and names do not change.
    Elsewhere, and in eval mode, the modules behave exactly as PEFT's. Returns how many were fused."""
    fused = 0
    for module in model.modules():
        dropouts, lora_a = getattr(module, "lora_dropout", None), getattr(module, "lora_A", None)
        if not isinstance(dropouts, torch.nn.ModuleDict) or not isinstance(lora_a, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            linear = lora_a[name] if name in lora_a else None
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and type(linear) is torch.nn.Linear:
                linear.forward = functools.partial(_dropped_forward, linear, dropout.p)
                dropouts[name] = torch.nn.Identity()
                fused += 1
    return fused
