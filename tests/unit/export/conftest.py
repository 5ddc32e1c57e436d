"""Tiny models for the GGUF export tests: a llama with a real byte-level BPE (merges included), and a Qwen2.

The suite's shared tiny tokenizer has no merges (one token per byte); GGUF's gpt2 vocabulary needs them, so
these tests train a small BPE on fixed text, as a real model's tokenizer would be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from honed.export.merged import FIXED_PROMPTS

TEXT = [
    *FIXED_PROMPTS,
    "inform(name[Dirt: Showdown], release_year[2012], rating[average], genres[driving/racing, sport])",
    "request(specifier[interesting], has_multiplayer[yes]) give_opinion confirm suggest verify_attribute",
    "The quick brown fox jumps over the lazy dog. Two iced lattes, please! Thanks a lot.",
    "I really liked playing Dirt: Showdown, the 2012 driving game with multiplayer on PlayStation and Steam.",
]


def build_bpe_tokenizer(vocab_size: int = 420):
    """A byte-level BPE trained on TEXT, with ChatML special tokens and template (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from honed.models.load import FALLBACK_CHAT_TEMPLATE
    from honed.models.tiny import SPECIAL_TOKENS

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXT * 4, trainer)
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


def build_model(folder: Path, config_class: str = "LlamaConfig", tie_word_embeddings: bool = False) -> Path:
    """A 2-layer, 32-wide random decoder (llama or another family) with the BPE tokenizer, in safetensors."""
    import torch
    import transformers

    tokenizer = build_bpe_tokenizer()
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer()


@pytest.fixture(scope="session")
def bpe_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny llama folders with the BPE tokenizer: untied and tied embeddings."""
    return {
        tie: build_model(tmp_path_factory.mktemp(f"bpe-llama-{tie}"), tie_word_embeddings=tie == "tied")
        for tie in ("untied", "tied")
    }


@pytest.fixture(scope="session")
def qwen_model_dir(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("bpe-qwen2"), "Qwen2Config")


@pytest.fixture
def bpe_recipe(tiny_recipe, bpe_model_dirs):
    """tiny_recipe on the BPE llama (`tied`: with tied embeddings, as SmolLM2 has)."""

    def make(*overrides: str, tied: bool = False):
        folder = bpe_model_dirs["tied" if tied else "untied"]
        return tiny_recipe(f"model.base={folder}", *overrides)

    return make
