"""How many activation bytes one training step keeps per token, measured on miniatures of the model.

Everything autograd keeps for backward is a (tokens x width) tensor, for a width among the hidden size,
the intermediate size, heads x head_dim, kv_heads x head_dim and the LoRA rank, or a per-token constant
(norm statistics, attention log-sum-exp, one-byte dropout masks), plus, where attention falls back to an
explicit score matrix, a term that grows with the sequence length. So the bytes a step saves are linear
in the hidden size, the intermediate size, the head dim and the sequence length, separately per layer and
outside the layers.

`step_profile` builds the model's own architecture class (transformers, from its config) at tiny widths,
with one and with two layers, at five points (a base point, then hidden, intermediate, head dim and
length each doubled), runs honed's real forward pass with the recipe's adapter, dropout, packing and
checkpointing under `saved_tensors_hooks`, and solves for the coefficients. Evaluated at the real
widths that gives the real model's bytes per token without loading it, and without a hand-written
formula that would drift from what the code and each architecture actually save (Gemma's extra norms,
Qwen's q/k norms, honed's fused dropout and chunked loss are all simply measured).

This module knows nothing about optimizer state, weights or time (sizing/estimate.py adds those).
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from honed.config.schema import LoraConfig, TrainConfig
from honed.data.tokenize import IGNORE, Encoded
from honed.models.lora import apply_lora
from honed.training.loop import LossFn
from honed.training.speed import accelerated, batching

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

# The base point of the miniatures; each probe doubles one of them. Small enough that the ten probes
# take well under a second, large enough that every width is distinct.
_HIDDEN, _INTERMEDIATE, _HEAD_DIM, _LENGTH = 32, 48, 8, 24
_VOCAB = 256
# Config keys that describe the real model's size or weights and must not reach a miniature.
_PROFILES: dict[tuple[str, StepShape], Profile] = {}
_DROP_KEYS = ("layer_types", "quantization_config", "torch_dtype", "dtype", "architectures", "auto_map")


@dataclass(frozen=True)
class StepShape:
    """The settings of a training step that change what it saves (not the data, not the widths)."""

    adapter: str  # lora | full
    lora_r: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | str = "all-linear"
    use_dora: bool = False  # approximate: DoRA's per-step weight-norm tensors do not scale with tokens
    packing: bool = True
    gradient_checkpointing: bool = False
    dtype: str = "float32"
    fused_dropout: bool = True  # honed fuses LoRA dropout on CPU only (models/lora.py)
    labelled_fraction: float = 0.3


@dataclass(frozen=True)
class Profile:
    """Saved bytes per token: per layer, and outside the layers, as linear functions of the widths."""

    per_layer: dict[str, float]  # coefficients of hidden, intermediate, head_dim, length, and const
    other: dict[str, float]

    def bytes_per_token(
        self, layers: int, hidden: int, intermediate: int, head_dim: int, length: int
    ) -> float:
        """Saved activation bytes per token of a model of `layers` x these widths, at `length` tokens."""
        point = {"hidden": hidden, "intermediate": intermediate, "head_dim": head_dim, "length": length}
        return layers * _apply(self.per_layer, point) + _apply(self.other, point)

    def layer_bytes_per_token(self, hidden: int, intermediate: int, head_dim: int, length: int) -> float:
        """Saved bytes per token of one layer."""
        return _apply(
            self.per_layer,
            {"hidden": hidden, "intermediate": intermediate, "head_dim": head_dim, "length": length},
        )


def _apply(coefficients: dict[str, float], point: dict[str, int]) -> float:
    return coefficients["const"] + sum(coefficients[name] * value for name, value in point.items())


def step_profile(config: dict[str, Any], shape: StepShape) -> Profile:
    """Measure saved bytes per token on miniatures of `config` (a config.json dict) and solve for the
    per-layer and outside-layer coefficients (cached per architecture and shape for the process)."""
    key = (json.dumps(config, sort_keys=True, default=str), shape)
    if key not in _PROFILES:
        _PROFILES[key] = _solve(config, shape)
    return _PROFILES[key]


def _solve(config: dict[str, Any], shape: StepShape) -> Profile:
    heads = config.get("text_config", config).get("num_attention_heads", 4)
    hidden = heads * max(1, round(_HIDDEN / heads))  # some configs require hidden % heads == 0
    base = {"hidden": hidden, "intermediate": _INTERMEDIATE, "head_dim": _HEAD_DIM, "length": _LENGTH}
    per_layer: dict[str, float] = {}
    other: dict[str, float] = {}
    measured = {}
    for varied in (None, "hidden", "intermediate", "head_dim", "length"):
        point = dict(base)
        if varied:
            point[varied] *= 2
        one, two = (_probe(config, shape, layers, point) for layers in (1, 2))
        measured[varied] = (two - one, 2 * one - two)  # (one layer, outside the layers)
    for name in base:
        per_layer[name] = (measured[name][0] - measured[None][0]) / base[name]
        other[name] = (measured[name][1] - measured[None][1]) / base[name]
    per_layer["const"] = measured[None][0] - sum(per_layer[n] * base[n] for n in base)
    other["const"] = measured[None][1] - sum(other[n] * base[n] for n in base)
    return Profile(per_layer, other)


def miniature_config(
    config: dict[str, Any], layers: int, hidden: int, intermediate: int, head_dim: int
) -> PretrainedConfig:
    """A transformers config of the same architecture class with tiny widths and `layers` layers."""
    from transformers import AutoConfig

    text = dict(config.get("text_config", config))
    for key in _DROP_KEYS:
        text.pop(key, None)
    model_type = text.pop("model_type", None) or "llama"
    if model_type == "gemma3":
        model_type = "gemma3_text"
    text.update(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        head_dim=head_dim,
        vocab_size=_VOCAB,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        max_position_embeddings=4 * _LENGTH,
        use_cache=False,
    )
    return AutoConfig.for_model(model_type, **text)


def _probe(config: dict[str, Any], shape: StepShape, layers: int, point: dict[str, int]) -> float:
    """Saved activation bytes of one forward pass of honed's loss on a miniature, per token."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    mini = miniature_config(config, layers, point["hidden"], point["intermediate"], point["head_dim"])
    model = AutoModelForCausalLM.from_config(mini, dtype=getattr(torch, shape.dtype))
    model = _trainable(model, shape)
    tokens = point["length"]
    batch, loss_fn = _batch(shape, tokens)
    return _saved_bytes(model, shape, lambda: loss_fn(model, batch)) / (2 * tokens)


def _trainable(model: PreTrainedModel, shape: StepShape) -> torch.nn.Module:
    if shape.adapter == "full":
        return model.requires_grad_(True)
    targets = shape.lora_targets if isinstance(shape.lora_targets, str) else list(shape.lora_targets)
    lora = LoraConfig(
        r=shape.lora_r, dropout=shape.lora_dropout, target_modules=targets, use_dora=shape.use_dora
    )
    model = apply_lora(model, lora, seed=0, fuse_dropout=shape.fused_dropout)
    return model


def _batch(shape: StepShape, tokens: int) -> tuple[dict[str, Any], LossFn]:
    """Two examples of about `tokens` tokens, the last `labelled_fraction` of each labelled."""
    examples = [_example(tokens, shape.labelled_fraction, 0), _example(tokens, shape.labelled_fraction, 1)]
    if not shape.packing:  # padded: the second row is shorter, so the padding mask is really used
        examples[1] = _example(tokens - 4, shape.labelled_fraction, 1)
    cfg = TrainConfig(
        batch_size=2, packing=shape.packing, gradient_checkpointing=shape.gradient_checkpointing
    )
    collate, loss_fn = batching(cfg, 0, torch.device("cpu"))
    return collate(examples), loss_fn


def _example(tokens: int, labelled_fraction: float, seed: int) -> Encoded:
    labelled = max(2, round(tokens * labelled_fraction))
    ids = [3 + (i * 7 + seed * 13) % (_VOCAB - 3) for i in range(tokens)]
    return Encoded(ids, [IGNORE] * (tokens - labelled) + ids[tokens - labelled :])


def _saved_bytes(
    model: torch.nn.Module, shape: StepShape, forward: Callable[[], tuple[torch.Tensor, int]]
) -> int:
    """Bytes of the distinct tensors autograd saves during `forward()`, parameters excluded."""
    cfg = TrainConfig(packing=shape.packing, gradient_checkpointing=shape.gradient_checkpointing)
    model.train()
    with accelerated(model, cfg, torch.device("cpu")), counting_saved_bytes(model) as counter:
        loss, _ = forward()
    del loss
    gc.collect()  # the counting hook ties saved outputs to their graph in a cycle: free it now
    return counter.bytes


class _Counter:
    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


@contextlib.contextmanager
def counting_saved_bytes(model: torch.nn.Module) -> Iterator[_Counter]:
    """Count the distinct bytes autograd saves inside the block, `model`'s parameters excluded; read
    `.bytes` of the yielded counter afterwards. Tensors sharing storage (views) count once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    counter = _Counter()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            counter.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, _same):
        yield counter


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor
