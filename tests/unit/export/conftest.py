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
    from honed.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(TEXT * 4, vocab_size)


def build_model(folder: Path, config_class: str = "LlamaConfig", tie_word_embeddings: bool = False) -> Path:
    """A 2-layer, 32-wide random decoder (llama or another family) with the BPE tokenizer, in safetensors."""
    from honed.models.tiny import build_tiny_model

    tokenizer = build_bpe_tokenizer()
    return build_tiny_model(
        folder, tie_word_embeddings=tie_word_embeddings, tokenizer=tokenizer, config_class=config_class
    )


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
