"""Load a base model with its linear layers quantised to 4-bit NF4 for `adapter: qlora`, and what that costs.

QLoRA trains a LoRA adapter on a frozen base whose decoder linear weights are stored in 4 bits (NF4, in
blocks of 64 sharing one scale, the scales themselves quantised to 8 bits: "double quantisation") and
de-quantised to the recipe's dtype for each matmul. bitsandbytes does the quantising and the 4-bit
matmuls (on CUDA, and since 0.46 on CPU); transformers swaps its `Linear4bit` in for every `nn.Linear`
except the output projection, so the embeddings, the norms and `lm_head` keep the recipe's dtype.

This module owns the quantised load, the checks that this machine can run it (a ModelError/ConfigError
naming the fix when it cannot), and the byte count of a quantised weight (`nf4_bytes`, which the memory
estimate uses). It knows nothing about adapters, training or merging: a qlora run's adapter is an ordinary
PEFT adapter, merged into the float base like any other (training/sft.py `load_tuned`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from honed.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig, PreTrainedModel

log = logging.getLogger(__name__)

QUANT_TYPE = "nf4"
BLOCKSIZE = 64  # weights per absmax scale (bitsandbytes' 4-bit default)
NESTED_BLOCKSIZE = 256  # absmax scales per float32 scale of the double quantisation
MIN_BITSANDBYTES = (0, 46)  # the first release with 4-bit kernels on CPU
INSTALL = "pip install 'honed[qlora]'"
UPGRADE = "pip install -U bitsandbytes"
# bitsandbytes also lists mps, xpu and others, with partly pure-PyTorch fallbacks; honed has not checked
# their numerics, so it refuses them with the nearest working option rather than train on them untested.
DEVICES = ("cpu", "cuda")


def nf4_bytes(numel: int) -> int:
    """Bytes one weight tensor of `numel` parameters takes in NF4 with double quantisation: the packed
    4-bit values, a one-byte absmax per block of 64, a float32 scale and offset for those, and the
    per-tensor code books (16 NF4 levels, 256 levels for the absmax), as bitsandbytes stores them."""
    blocks = math.ceil(numel / BLOCKSIZE)
    packed = math.ceil(numel / 2)
    nested_scales = 4 * math.ceil(blocks / NESTED_BLOCKSIZE)
    code_books = 4 * (16 + 256) + 4  # float32 NF4 code, float32 absmax code, float32 offset
    return packed + blocks + nested_scales + code_books


def load_quantized(
    folder: Path, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load the causal LM in `folder` onto `device` with its linear layers (not `lm_head`) in 4-bit NF4,
    computing in `dtype`; everything else is in `dtype`. Raises ModelError/ConfigError naming the fix when
    bitsandbytes is missing, too old, or cannot run 4-bit layers on `device`.

    Not `peft.prepare_model_for_kbit_training`, on purpose: it would (1) upcast the unquantised weights
    (embeddings, norms, lm_head) to float32, which on CUDA doubles their memory and makes qlora differ
    from `adapter: lora` by more than the quantisation (on CPU they are float32 already; PEFT keeps the
    adapter itself in float32 either way); (2) switch on gradient checkpointing, unconditionally and left
    on for evaluation, where honed's loop applies `train.gradient_checkpointing` (non-reentrant, so no
    input gradients are needed) for the training steps only; (3) freeze the base, which PEFT does anyway.
    """
    from transformers import AutoModelForCausalLM

    check_backend(device)
    _check_unquantised(folder)
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder}: no *.safetensors weights; honed never loads pickle (.bin) weights")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=dtype,
            quantization_config=_bnb_config(dtype),
            device_map={"": device},
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
        _probe(model, device, dtype)
    except ImportError as exc:  # transformers' own check (accelerate, or a bitsandbytes it cannot use)
        raise ModelError(f"adapter: qlora: {exc}; {INSTALL}, or set adapter: lora") from None
    except (RuntimeError, NotImplementedError) as exc:
        elsewhere = "" if device.type == "cpu" else "train.device: cpu, "
        raise ModelError(
            f"adapter: qlora: bitsandbytes cannot run 4-bit layers on {device} ({type(exc).__name__}: "
            f"{exc}); try {UPGRADE}, {elsewhere}or adapter: lora"
        ) from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"{folder}: this model needs its own code; set model.trust_remote_code: true if you trust it"
            ) from None
        raise ModelError(f"{folder}: cannot load the model in 4-bit ({exc})") from None
    log.info("base model loaded with its linear layers in 4-bit %s (double quantised)", QUANT_TYPE)
    return model


def _bnb_config(dtype: torch.dtype) -> BitsAndBytesConfig:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=QUANT_TYPE,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
    )


def check_backend(device: torch.device) -> None:
    """bitsandbytes is importable, new enough, and has kernels for `device`'s type."""
    try:
        import bitsandbytes
    except ImportError as exc:
        raise ModelError(
            f"adapter: qlora needs bitsandbytes, which cannot be imported ({exc}); install it: {INSTALL}, "
            "or train a LoRA adapter on the float base: adapter: lora"
        ) from None
    version = tuple(int(part) for part in bitsandbytes.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_BITSANDBYTES:
        raise ModelError(
            f"adapter: qlora needs bitsandbytes >= {'.'.join(map(str, MIN_BITSANDBYTES))}, found "
            f"{bitsandbytes.__version__}; upgrade it: {UPGRADE}, or set adapter: lora"
        )
    if device.type not in DEVICES:
        raise ConfigError(
            f"adapter: qlora runs on {' and '.join(DEVICES)} (bitsandbytes' 4-bit kernels honed is tested "
            f"with), not train.device {device.type!r}; set train.device: cpu, or adapter: lora"
        )


def _check_unquantised(folder: Path) -> None:
    """qlora quantises a float checkpoint itself (and merges into it later); a pre-quantised one cannot
    be merged into, so say so instead of half-working."""
    import json

    config = json.loads((folder / "config.json").read_text())
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method:
        raise ModelError(
            f"{folder}: this checkpoint is already quantised ({method}); adapter: qlora quantises a float "
            "checkpoint itself and merges the adapter back into it: use the float (bf16/fp32) model"
        )


def _probe(model: PreTrainedModel, device: torch.device, dtype: torch.dtype) -> None:
    """One forward and backward through a 4-bit layer, so a backend without the kernels fails here,
    with a message, rather than in the middle of the first training step."""
    import bitsandbytes
    import torch

    layer = next((m for m in model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)), None)
    if layer is None:
        raise ModelError("adapter: qlora: the model has no linear layers bitsandbytes could quantise")
    with torch.enable_grad():  # the caller may be inside no_grad (evaluation): backward must still run
        x = torch.zeros(1, layer.in_features, device=device, dtype=dtype, requires_grad=True)
        layer(x).sum().backward()
