"""Packing: a micro-batch's examples laid end to end in one row, with no padding and no cross-talk.

Each example keeps its own positions (position ids restart at 0) and attends only to itself. The row
carries `cu_seq_lens` (cumulative example lengths, the varlen convention of flash attention), which the
attention function uses to run causal attention per example:

- on CUDA with the `flash-attn` package, transformers' `flash_attention_2` takes the same `cu_seq_lens`
  and runs one varlen kernel;
- elsewhere (CPU, or CUDA without flash-attn) honed's `honed_packed` attention runs SDPA once per example.
  That is the block-diagonal mask without its cost: a dense block-diagonal mask over a packed row of
  length L would compute L x L scores, most of them masked; per-example SDPA computes only the blocks.

Packed training gives the same loss and gradients as padded training (tested), minus the padding.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch

from honed.data.tokenize import IGNORE, Encoded
from honed.models.nll import causal_lm

PACKED_ATTENTION = "honed_packed"


def collate_packed(
    examples: list[Encoded], device: torch.device, segments: bool = False
) -> dict[str, torch.Tensor]:
    """One (1, total_tokens) row: ids, labels, restarting position ids and the example boundaries.

    The first token of each example gets no label: in the padded layout it is never a target (nothing
    precedes it), and in the packed row it must not become the target of the previous example's last token.
    With `segments`, the row also carries `segment_ids` (each token's example index), for losses that
    need per-example sums (DPO).
    """
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    bounds = [0]
    for example in examples:
        n = len(example.input_ids)
        ids.extend(example.input_ids)
        labels.append(IGNORE)
        labels.extend(example.labels[1:])
        positions.extend(range(n))
        bounds.append(bounds[-1] + n)
    cu = torch.tensor(bounds, dtype=torch.int32, device=device)
    longest = max(len(e.input_ids) for e in examples)
    extra = {}
    if segments:
        owner = [index for index, example in enumerate(examples) for _ in example.input_ids]
        extra["segment_ids"] = torch.tensor([owner], device=device)
    return {
        **extra,
        "input_ids": torch.tensor([ids], device=device),
        "labels": torch.tensor([labels], device=device),
        "position_ids": torch.tensor([positions], device=device),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal SDPA per packed example; plain SDPA (with the padding mask) when the batch is not packed.

    Shapes follow transformers' attention interface: query (batch, heads, seq, dim), key/value
    (batch, kv_heads, seq, dim); returns (batch, seq, heads, dim) and no attention weights.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    for name in ("cu_seq_lens_k", "max_length_q", "max_length_k", "position_ids"):
        kwargs.pop(name, None)
    if cu is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    bounds = _bounds(cu)
    parts = [
        sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,
            dropout,
            scaling,
            is_causal=True,
        )[0]
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(parts, dim=1), None


_last_bounds: list = [None, None]  # (tensor, its list): every layer of one forward sees the same tensor


def _bounds(cu: torch.Tensor) -> list[int]:
    """`cu.tolist()`, read once per forward pass rather than once per layer (a device sync on CUDA)."""
    if _last_bounds[0] is not cu:
        _last_bounds[0], _last_bounds[1] = cu, cu.tolist()
    return _last_bounds[1]


def _register() -> None:
    """Make `honed_packed` a transformers attention implementation (padding masks built as for SDPA).
    Registering again is a dict assignment, so every call may do it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def packed_attention_name(device: torch.device) -> str:
    """flash_attention_2 on CUDA when flash-attn is installed, else honed's per-example SDPA."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    _register()
    return PACKED_ATTENTION


@contextlib.contextmanager
def packed_attention(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """Switch `model` (a transformers model, PEFT-wrapped or not) to packed attention for the block."""
    lm = causal_lm(model)
    previous = lm.config._attn_implementation
    lm.set_attn_implementation(packed_attention_name(device))
    try:
        yield model
    finally:
        lm.set_attn_implementation(previous)
