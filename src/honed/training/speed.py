"""The train config's speed and memory options, applied in one place for every training method.

- `batching`: packed rows (`train.packing`) or padded batches, and the chunked loss
  (`train.loss_chunk_tokens`).
- `accelerated`: packed attention, gradient checkpointing (`train.gradient_checkpointing`) and
  torch.compile of the decoder layers (`train.compile`) for the duration of training, undone afterwards
  so evaluation and export see the plain model.

Why each exists, and what it measured, is in docs/architecture.md ("Training speed").
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from honed.config.schema import TrainConfig
from honed.models.nll import causal_lm, collate, completion_loss
from honed.training.loop import Collate, LossFn
from honed.training.packing import collate_packed, packed_attention, packed_attention_name

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def batching(
    cfg: TrainConfig,
    pad_id: int,
    device: torch.device,
    loss: Callable[..., tuple[torch.Tensor, int]] | None = None,
) -> tuple[Collate, LossFn]:
    """(collate, loss_fn) for the train loop: packed or padded batches, and `loss` (default: the
    completion loss), called as `loss(model, batch, chunk=...)`, with its chunk size."""
    if uses_packing(cfg, device):
        batcher = functools.partial(collate_packed, device=device)
    else:
        batcher = functools.partial(collate, pad_id=pad_id, device=device)
    return batcher, functools.partial(loss or completion_loss, chunk=cfg.loss_chunk_tokens)


def resolve(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """The train config with `auto` packing and length grouping decided for `device`."""
    packing = uses_packing(cfg, device)
    grouping = not packing if cfg.group_by_length == "auto" else cfg.group_by_length
    return cfg.model_copy(update={"packing": packing, "group_by_length": grouping})


def uses_packing(cfg: TrainConfig, device: torch.device) -> bool:
    """`train.packing`, with auto resolved: pack where attention can skip the masked blocks.

    On CPU honed's per-example SDPA does; on CUDA flash-attn's varlen kernel does. On CUDA without it,
    per-example SDPA means many small kernel launches, slower than one padded, length-grouped batch
    (measured on an H100, LoRA on SmolLM2-135M, bf16: 2,406 tokens/s packed, 6,008 padded).
    """
    if cfg.packing != "auto":
        return bool(cfg.packing)
    return device.type == "cpu" or packed_attention_name(device) == "flash_attention_2"


@contextlib.contextmanager
def accelerated(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Iterator[torch.nn.Module]:
    """Apply packing attention, gradient checkpointing and compile to `model` while the block runs."""
    lm = causal_lm(model)
    with contextlib.ExitStack() as stack:
        if uses_packing(cfg, device):
            stack.enter_context(packed_attention(model, device))
        if cfg.gradient_checkpointing:
            stack.enter_context(_checkpointed(lm))
        if cfg.compile:
            stack.enter_context(_compiled_layers(lm))
        yield model


@contextlib.contextmanager
def _checkpointed(lm: PreTrainedModel) -> Iterator[None]:
    """Per-layer activation checkpointing (transformers >= 5.24 names it so; older: gradient_...)."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    try:
        yield
    finally:
        (getattr(lm, "activation_checkpointing_disable", None) or lm.gradient_checkpointing_disable)()


@contextlib.contextmanager
def _compiled_layers(lm: PreTrainedModel) -> Iterator[None]:
    """torch.compile each decoder layer (dynamic shapes: packed rows change length every step)."""
    layers = lm.get_decoder().layers
    originals = [layer.forward for layer in layers]
    for layer in layers:
        layer.forward = torch.compile(layer.forward, dynamic=True)
    log.info("compiling %d decoder layers; the first steps are slow", len(layers))
    try:
        yield
    finally:
        for layer, forward in zip(layers, originals, strict=True):
            layer.forward = forward
