"""Exact and near duplicates are found with the key of the first occurrence; near misses are not."""

from __future__ import annotations

import random

import pytest

from honed.data.dedup import Deduplicator, lsh_bands, ngrams, normalize, words
from honed.errors import ConfigError

# 30 words; the near-duplicate tests change word 15 ("counted"), in the middle.
SENTENCE = (
    "the old lighthouse keeper walked along the rocky shore every morning before sunrise and "
    "quietly counted the fishing boats that returned to the harbour after a long night at sea"
)


def _replace_word(text: str, index: int, new: str) -> str:
    tokens = text.split()
    tokens[index] = new
    return " ".join(tokens)


def _random_text(rng: random.Random, vocabulary: list[str], n_words: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(n_words))


def test_normalize_folds_case_width_and_whitespace_but_keeps_punctuation():
    assert normalize("  Hello\t\nWORLD  ") == "hello world"
    assert normalize("ＡＢＣ") == "abc"  # Full-width letters, NFKC.
    assert normalize("a = '1';") != normalize("a = 1")


def test_words_and_ngrams():
    assert words("What's the Score, 2-1?") == ["what", "s", "the", "score", "2", "1"]
    assert words("ＡＢＣ") == ["abc"]
    assert ngrams(["a", "b", "c", "d"], 3) == ["a b c", "b c d"]
    assert ngrams(["a", "b"], 3) == ["a b"]
    assert ngrams([], 3) == []


def test_exact_duplicate_differing_in_case_and_whitespace_is_found():
    dedup = Deduplicator()
    dedup.add("train.jsonl:1", "What is the  capital of France?")
    assert dedup.find("what is the capital\nof FRANCE?") == ("exact", "train.jsonl:1")


def test_one_changed_word_is_a_near_duplicate_of_the_original():
    # A word in the middle changes 3 of 28 shingles: Jaccard 25/31 = 0.81, under the default 0.85.
    dedup = Deduplicator(threshold=0.75)
    dedup.add("a.jsonl:1", "an unrelated row about the weather in spring")
    dedup.add("a.jsonl:2", SENTENCE)
    assert dedup.find(_replace_word(SENTENCE, 15, "carefully")) == ("near", "a.jsonl:2")


def test_default_threshold_finds_one_changed_word_in_a_long_row():
    # 60 words: Jaccard 55/61 = 0.90.
    long_text = SENTENCE + " " + SENTENCE.replace("the", "a")
    dedup = Deduplicator()
    dedup.add("k", long_text)
    assert dedup.find(_replace_word(long_text, 30, "lighthouses")) == ("near", "k")


def test_threshold_is_respected():
    edited = _replace_word(SENTENCE, 15, "carefully")
    for threshold, expected in ((0.5, ("near", "k")), (0.95, None)):
        dedup = Deduplicator(threshold=threshold)
        dedup.add("k", SENTENCE)
        assert dedup.find(edited) == expected, threshold


def test_texts_sharing_half_their_words_are_not_duplicates():
    dedup = Deduplicator()
    dedup.add("k", SENTENCE)
    first_half = " ".join(SENTENCE.split()[:15])
    assert (
        dedup.find(first_half + " while the village slept under heavy snow and nobody saw the lights") is None
    )


def test_same_template_with_different_content_is_not_a_duplicate():
    dedup = Deduplicator()
    dedup.add("k", "What is the date of the game when the away team is Barnet and the score is 2-1?")
    assert (
        dedup.find("What is the venue of the game when the home team is Carlton and the score is 0-3?")
        is None
    )


def test_check_and_add_keeps_the_first_occurrence():
    dedup = Deduplicator()
    assert dedup.check_and_add("f:1", SENTENCE) is None
    assert dedup.check_and_add("f:2", SENTENCE.upper()) == ("exact", "f:1")
    assert dedup.check_and_add("f:3", SENTENCE + "!") == ("near", "f:1")
    assert dedup.check_and_add("f:4", " ".join(SENTENCE.split()[:-1]) + " bay") == ("near", "f:1")
    assert dedup.check_and_add("f:5", "a different row") is None
    assert len(dedup) == 2
    assert dedup.find("A different row") == ("exact", "f:5")


def test_find_does_not_add():
    dedup = Deduplicator()
    assert dedup.find(SENTENCE) is None
    assert dedup.find(SENTENCE) is None
    assert len(dedup) == 0


def test_punctuation_only_edits_are_near_duplicates():
    dedup = Deduplicator()
    dedup.add("k", "SELECT name FROM users WHERE id = 1")
    assert dedup.find("SELECT name FROM users WHERE id = '1';") == ("near", "k")


def test_short_texts_use_one_shingle_of_all_their_words():
    dedup = Deduplicator()
    dedup.add("k", "Hello world")
    assert dedup.find("hello, world!") == ("near", "k")
    assert dedup.find("hello there") is None
    assert dedup.find("world hello") is None


def test_texts_without_words_can_only_be_exact_duplicates():
    dedup = Deduplicator()
    dedup.add("empty", "")
    assert dedup.find("   ") == ("exact", "empty")
    assert dedup.find("?!") is None


def test_each_kind_can_be_turned_off():
    exact_only = Deduplicator(near=False)
    exact_only.add("k", SENTENCE)
    assert exact_only.find(SENTENCE.upper()) == ("exact", "k")
    assert exact_only.find(SENTENCE + " again") is None
    near_only = Deduplicator(exact=False)
    near_only.add("k", SENTENCE)
    assert near_only.find(SENTENCE.upper()) == ("near", "k")


def test_invalid_settings_are_all_reported():
    with pytest.raises(ConfigError, match="exact and near.*threshold=1.5.*shingle_words=0"):
        Deduplicator(exact=False, near=False, threshold=1.5, shingle_words=0)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85, 0.95])
def test_lsh_bands_propose_pairs_at_the_threshold(threshold):
    bands, rows = lsh_bands(threshold, 128)
    assert bands >= 2 and bands * rows <= 128
    assert 1 - (1 - threshold**rows) ** bands >= 0.95


def test_planted_near_duplicates_among_2000_rows_are_exactly_the_ones_found():
    rng = random.Random(0)
    vocabulary = [f"{rng.choice('bcdfgklmnprst')}{rng.choice('aeiou')}{i}" for i in range(3000)]
    rows = [
        (float(i), f"gen.jsonl:{i}", _random_text(rng, vocabulary, rng.randint(40, 60))) for i in range(2000)
    ]
    planted = {}
    for number, original in enumerate(rng.sample(range(2000), 20)):
        _, key, text = rows[original]
        # Case, punctuation and the last word change: 1 of ~50 shingles, a Jaccard of about 0.96.
        edited = " ".join(text.split()[:-1]).upper() + ", " + rng.choice(vocabulary) + "."
        planted[f"planted:{number}"] = key
        rows.append((rng.uniform(original + 0.5, 2000), f"planted:{number}", edited))
    rows.sort()  # Each planted row comes somewhere after its original.

    dedup = Deduplicator()
    found = {key: dedup.check_and_add(key, text) for _, key, text in rows}

    duplicates = {key: hit for key, hit in found.items() if hit is not None}
    assert duplicates == {key: ("near", original) for key, original in planted.items()}
