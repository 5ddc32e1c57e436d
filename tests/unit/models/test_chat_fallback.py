"""The chat template a tokenizer gets when it ships none: Gemma's turn format for a Gemma vocabulary (turns
end with `<end_of_turn>`, which is labelled and stops generation), plain ChatML for any other."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from honed.data.tokenize import IGNORE, encode_example, render_prompt
from honed.models.decoding import eos_ids
from honed.models.load import FALLBACK_CHAT_TEMPLATE, GEMMA_CHAT_TEMPLATE, load_tokenizer
from honed.models.tiny import build_tiny_tokenizer

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Later."},
]


def _byte_level_tokenizer(special: list[str], **roles: str):
    """A one-token-per-byte tokenizer with these special tokens and no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(special)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **roles)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    return tokenizer


@pytest.fixture
def gemma_tokenizer(tmp_path):
    """A Gemma-like tokenizer saved without a chat template, loaded back through `load_tokenizer`."""
    tokenizer = _byte_level_tokenizer(
        GEMMA_SPECIAL, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    assert not tokenizer.chat_template
    tokenizer.save_pretrained(tmp_path)
    return load_tokenizer(tmp_path)


def test_gemma_vocabulary_gets_gemma_turns(gemma_tokenizer) -> None:
    assert gemma_tokenizer.chat_template == GEMMA_CHAT_TEMPLATE
    assert gemma_tokenizer.apply_chat_template(CHAT, tokenize=False) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\nLater.<end_of_turn>\n"
    )
    prompt = render_prompt(gemma_tokenizer, CHAT[1:2])
    assert prompt == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_system_without_a_following_user_turn_is_kept(gemma_tokenizer) -> None:
    assert render_prompt(gemma_tokenizer, CHAT[:1]) == (
        "<bos><start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"
    )


def test_gemma_turns_end_training_labels_and_generation(gemma_tokenizer) -> None:
    end_of_turn = gemma_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert gemma_tokenizer.eos_token == "<end_of_turn>"
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=1))  # Gemma's config: <eos>
    assert eos_ids(model, gemma_tokenizer) == {1, end_of_turn}  # generation stops at either
    assert gemma_tokenizer.pad_token == "<pad>"  # the tokenizer's own pad is kept
    encoded = encode_example(gemma_tokenizer, CHAT)
    trained = [label for label in encoded.labels if label != IGNORE]
    answers = [gemma_tokenizer.encode(text, add_special_tokens=False) for text in ("Hello!", "Later.")]
    # Each answer plus its <end_of_turn> is trained; the newline after it and every other token are not.
    assert trained == answers[0] + [end_of_turn] + answers[1] + [end_of_turn]


def test_gemma_fallback_is_logged(tmp_path, caplog) -> None:
    tokenizer = _byte_level_tokenizer(GEMMA_SPECIAL, bos_token="<bos>", eos_token="<eos>")
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="honed.models.load"):
        load_tokenizer(tmp_path)
    assert "using Gemma's turn format" in caplog.text


def test_other_vocabularies_still_get_chatml(tmp_path, caplog) -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="honed.models.load"):
        loaded = load_tokenizer(tmp_path)
    assert loaded.chat_template == FALLBACK_CHAT_TEMPLATE
    assert loaded.eos_token == "<|im_end|>"
    assert "using plain ChatML" in caplog.text
    assert render_prompt(loaded, CHAT[1:2]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_only_one_of_the_turn_tokens_is_not_gemma(tmp_path) -> None:
    tokenizer = _byte_level_tokenizer(["<eos>", "<start_of_turn>"], eos_token="<eos>")
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.chat_template == FALLBACK_CHAT_TEMPLATE and loaded.eos_token == "<eos>"


def test_a_shipped_template_and_eos_are_left_alone(tmp_path, caplog) -> None:
    tokenizer = _byte_level_tokenizer(GEMMA_SPECIAL, bos_token="<bos>", eos_token="<eos>")
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="honed.models.load"):
        loaded = load_tokenizer(tmp_path)
    assert loaded.chat_template == FALLBACK_CHAT_TEMPLATE and loaded.eos_token == "<eos>"
    assert "chat template" not in caplog.text
