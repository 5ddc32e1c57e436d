"""Attach a PEFT LoRA adapter to a causal LM, or prepare it for full fine-tuning.

PEFT swaps the targeted linear modules for LoRA modules (no model subclassing), and its saved adapter
(adapter_config.json + adapter_model.safetensors) is what vLLM, TGI, LoRAX and transformers load.
"""

from __future__ import annotations

import torch

from honed.config.schema import LoraConfig


def apply_lora(model, cfg: LoraConfig, seed: int):
    """Wrap `model` in a PeftModel with only the LoRA weights trainable."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(seed)  # adapter init is random: seed it so runs repeat
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        task_type="CAUSAL_LM",
        target_modules=cfg.target_modules,
    )
    return get_peft_model(model, peft_cfg)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
