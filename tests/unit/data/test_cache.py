"""Tokenized splits are cached by content: a hit returns the same examples, any change misses."""

from __future__ import annotations

import logging
import shutil

import pytest

from honed.data import cache
from honed.data.cache import cached_examples, split_key


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HONED_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenized"


def test_second_call_reads_the_cache(tiny_recipe, tiny_tokenizer, cache_home, monkeypatch):
    cfg = tiny_recipe().data
    first, first_report = cached_examples(cfg, tiny_tokenizer, "train")
    assert len(list(cache_home.glob("*.npz"))) == 1

    def no_tokenizing(*args):
        raise AssertionError("tokenized again despite a cache entry")

    monkeypatch.setattr(cache, "build_examples", no_tokenizing)
    second, second_report = cached_examples(cfg, tiny_tokenizer, "train")
    assert second == first
    assert second_report.as_dict() == first_report.as_dict()


def test_any_change_to_data_config_or_split_changes_the_key(tiny_recipe, tiny_tokenizer, tmp_path):
    cfg = tiny_recipe().data
    key = split_key(cfg, tiny_tokenizer, "train")
    assert split_key(cfg, tiny_tokenizer, "train") == key
    assert split_key(tiny_recipe("data.max_seq_len=512").data, tiny_tokenizer, "train") != key
    assert split_key(cfg, tiny_tokenizer, "validation") != key

    copy = tmp_path / "train.jsonl"
    shutil.copy(cfg.train, copy)
    moved = cfg.model_copy(update={"train": str(copy)})
    same_bytes = split_key(moved, tiny_tokenizer, "train")
    copy.write_text(copy.read_text().replace("latte", "mocha", 1))
    assert split_key(moved, tiny_tokenizer, "train") != same_bytes


def test_unreadable_entry_is_rebuilt(tiny_recipe, tiny_tokenizer, cache_home, caplog):
    cfg = tiny_recipe().data
    first, _ = cached_examples(cfg, tiny_tokenizer, "train")
    (entry,) = cache_home.glob("*.npz")
    entry.write_bytes(b"not a numpy file")
    with caplog.at_level(logging.WARNING):
        again, _ = cached_examples(cfg, tiny_tokenizer, "train")
    assert again == first and "ignoring unreadable tokenization cache" in caplog.text
