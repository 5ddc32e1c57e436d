"""Leakage overlap: copied rows score 1, partial copies their share, shared templates nothing."""

from __future__ import annotations

import hashlib

import pytest

from honed.data.leakage import NgramIndex, ngram_hashes
from honed.errors import ConfigError

# 40 distinct words.
REFERENCE = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dahlia ember "
    "fern garnet hazel iris jade kale lotus maple nutmeg"
)
OTHER = "the committee approved the new budget for the public library after a long debate on tuesday night"
SYSTEM_PROMPT = (
    "You are a careful assistant. Answer the question using only the table given below, nothing else."
)


def test_copied_row_overlaps_fully_and_is_named():
    index = NgramIndex()
    index.add("val.jsonl:1", OTHER)
    index.add("val.jsonl:2", REFERENCE)
    assert index.overlap(REFERENCE.upper() + "!") == (1.0, ["val.jsonl:2"])


def test_partial_copy_overlaps_by_its_share_of_ngrams():
    index = NgramIndex(n=8)
    index.add("val.jsonl:1", REFERENCE)
    text = " ".join(REFERENCE.split()[:20]) + " " + OTHER  # 20 copied words, then 17 others.
    # 30 8-grams in 37 words; the 13 that lie within the first 20 words are copied.
    fraction, keys = index.overlap(text)
    assert fraction == pytest.approx(13 / 30)
    assert keys == ["val.jsonl:1"]


def test_unrelated_and_empty_texts_do_not_overlap():
    index = NgramIndex()
    index.add("val.jsonl:1", REFERENCE)
    assert index.overlap(OTHER) == (0.0, [])
    assert index.overlap("") == (0.0, [])
    assert NgramIndex().overlap(REFERENCE) == (0.0, [])


def test_short_texts_are_one_ngram_of_all_their_words():
    index = NgramIndex(n=8)
    index.add("val.jsonl:1", "Who won in 1998?")
    assert index.overlap("who won in 1998") == (1.0, ["val.jsonl:1"])
    assert index.overlap("who won in 1999") == (0.0, [])
    assert len(ngram_hashes("who won in 1998", 8)) == 1


def _reference_rows_with_a_shared_prompt(count: int) -> NgramIndex:
    index = NgramIndex(n=8, ignore_common=0.01, min_common_rows=20)
    for i in range(count):
        index.add(f"val.jsonl:{i + 1}", f"{SYSTEM_PROMPT} Question {i}: how many goals did player {i} score?")
    return index


def test_boilerplate_shared_by_many_reference_rows_is_ignored():
    index = _reference_rows_with_a_shared_prompt(30)
    assert index.overlap(SYSTEM_PROMPT + " " + OTHER) == (0.0, [])
    # A copied row still counts, measured on its own content: its n-grams beyond the prompt.
    assert index.overlap(f"{SYSTEM_PROMPT} Question 7: how many goals did player 7 score?") == (
        1.0,
        ["val.jsonl:8"],
    )


def test_ngrams_shared_by_fewer_than_min_common_rows_still_count():
    index = _reference_rows_with_a_shared_prompt(19)
    fraction, keys = index.overlap(SYSTEM_PROMPT + " " + OTHER)
    assert fraction == pytest.approx(9 / 26)  # The 9 8-grams inside the 16-word prompt, of 26.
    assert keys == ["val.jsonl:1", "val.jsonl:2", "val.jsonl:3"]


def test_keys_are_ranked_by_shared_ngrams():
    words = REFERENCE.split()
    index = NgramIndex(n=3)
    index.add("few", " ".join(words[:5]))  # 3 of the text's 3-grams.
    index.add("none", OTHER)
    index.add("most", " ".join(words[:20]))  # 18.
    index.add("some", " ".join(words[:10]))  # 8.
    index.add("also few", " ".join(words[:5]))  # 3, added later than "few".
    fraction, keys = index.overlap(" ".join(words[:20]))
    assert fraction == 1.0
    assert keys == ["most", "some", "few"]


def test_rows_added_after_an_overlap_are_used():
    index = NgramIndex()
    index.add("val.jsonl:1", OTHER)
    assert index.overlap(REFERENCE) == (0.0, [])
    index.add("val.jsonl:2", REFERENCE)
    assert index.overlap(REFERENCE) == (1.0, ["val.jsonl:2"])
    assert len(index) == 2


def test_ngram_hashes_are_stable_across_processes():
    # blake2b, not Python's salted hash(): the same text always gives the same 64-bit values.
    expected = int.from_bytes(hashlib.blake2b(b"who won in 1998", digest_size=8).digest(), "little")
    assert int(ngram_hashes("Who won in 1998?", 8)[0]) == expected


def test_invalid_settings_are_all_reported():
    with pytest.raises(ConfigError, match="n=0.*ignore_common=2.*min_common_rows=0"):
        NgramIndex(n=0, ignore_common=2, min_common_rows=0)
