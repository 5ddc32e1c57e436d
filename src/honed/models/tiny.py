"""Build tiny randomly initialised Llama-family models with a real byte-level tokenizer and chat template.

Tests use these (2 layers, a few dozen dimensions) so the whole pipeline runs in seconds on a CPU with
no download; the folder they write is an ordinary Hugging Face model folder, so they also exercise the
local-folder loading path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from honed.models.load import FALLBACK_CHAT_TEMPLATE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer(
    train_text: list[str] | None = None, vocab_size: int = 420
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer plus ChatML special tokens: with no merges (one token per byte), or with
    merges trained on `train_text` up to `vocab_size` tokens (deterministic), as GGUF export needs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    if train_text is None:
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for ch in sorted(byte_alphabet):
            vocab[ch] = len(vocab)
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    else:
        backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if train_text is not None:
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=byte_alphabet,
            show_progress=False,
        )
        backend.train_from_iterator(train_text, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    folder: Path,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
    config_class: str = "LlamaConfig",
) -> Path:
    """Write a tiny random decoder (a Llama unless `config_class` names another transformers config) with
    `tokenizer` (default: the byte tokenizer) to `folder` (safetensors) and return the folder."""
    import torch
    import transformers

    tokenizer = tokenizer or build_tiny_tokenizer()
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
