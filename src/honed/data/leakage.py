"""Leakage: how much of a training row already appears in reference (held-out or benchmark) rows.

`NgramIndex` holds the word n-grams of the reference rows, each hashed to 64 bits with blake2b (stable
across processes, unlike Python's `hash()`), and answers, for a training text, the fraction of its n-grams
found there and the reference rows that share the most. It stores no texts. It knows nothing about files,
formats or splits; the caller decides which rows are references and what text each row is.

N-grams that many reference rows share come from templates and system prompts, not from leakage, so they
are ignored: one that occurs in more than `ignore_common` of the reference rows and in at least
`min_common_rows` of them counts neither as found nor in the text's total.
"""

from __future__ import annotations

import hashlib

import numpy as np

from honed.data.dedup import ngrams, words
from honed.errors import ConfigError

# Row ids kept per n-gram, to name the reference rows a text overlaps; a longer list is only ever a
# shared template, which is ignored anyway.
_IDS_PER_NGRAM = 4
_TOP_KEYS = 3


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """The distinct 64-bit hashes (uint64, sorted) of a text's word n-grams; fewer than n words give one."""
    grams = ngrams(words(text), n)
    packed = b"".join(hashlib.blake2b(g.encode(), digest_size=8).digest() for g in grams)
    return np.unique(np.frombuffer(packed, dtype="<u8"))


class NgramIndex:
    """N-grams of reference (held-out / benchmark) rows, to measure how much of a training row they contain.

    Rows are added one at a time; which n-grams are boilerplate depends on all of them, so the lookup
    tables are built by `freeze()`, which the first `overlap()` after any `add()` calls itself. Memory:
    12 bytes per (row, distinct n-gram) pair plus about 30 bytes per distinct n-gram once frozen.
    """

    def __init__(self, n: int = 8, ignore_common: float = 0.01, min_common_rows: int = 20) -> None:
        _check_args(n, ignore_common, min_common_rows)
        self.n, self.ignore_common, self.min_common_rows = n, ignore_common, min_common_rows
        self._keys: list[str] = []
        self._pending: list[np.ndarray] = []  # Each added row's n-gram hashes, until the next freeze().
        self._pair_hashes = np.empty(0, dtype=np.uint64)  # Every (n-gram, row) pair frozen so far.
        self._pair_rows = np.empty(0, dtype=np.int32)
        self._frozen = True
        self._hashes = np.empty(0, dtype=np.uint64)  # Distinct n-grams, sorted.
        self._common = np.empty(0, dtype=bool)  # Whether each is boilerplate.
        self._ids = np.empty((0, _IDS_PER_NGRAM), dtype=np.int32)  # Its first reference rows, -1 padded.

    def __len__(self) -> int:
        """The number of reference rows added."""
        return len(self._keys)

    def add(self, key: str, text: str) -> None:
        """Index a reference row's n-grams under key; takes effect at the next freeze()."""
        self._pending.append(ngram_hashes(text, self.n))
        self._keys.append(key)
        self._frozen = False

    def freeze(self) -> None:
        """Build the sorted lookup tables and decide which n-grams are boilerplate, from every row added."""
        if self._frozen:
            return
        rows = [
            np.full(len(h), len(self._keys) - len(self._pending) + i, dtype=np.int32)
            for i, h in enumerate(self._pending)
        ]
        self._pair_hashes = np.concatenate([self._pair_hashes, *self._pending])
        self._pair_rows = np.concatenate([self._pair_rows, *rows])
        self._pending = []
        # A stable sort keeps each n-gram's rows in the order they were added, so the ids kept are the first.
        order = np.argsort(self._pair_hashes, kind="stable")
        hashes, rows_sorted = self._pair_hashes[order], self._pair_rows[order]
        self._hashes, starts, counts = np.unique(hashes, return_index=True, return_counts=True)
        self._common = (counts > self.ignore_common * len(self._keys)) & (counts >= self.min_common_rows)
        self._ids = np.full((len(starts), _IDS_PER_NGRAM), -1, dtype=np.int32)
        for slot in range(_IDS_PER_NGRAM):
            has = counts > slot
            self._ids[has, slot] = rows_sorted[starts[has] + slot]
        self._frozen = True

    def overlap(self, text: str) -> tuple[float, list[str]]:
        """(fraction of the text's n-grams found in reference rows, keys of up to 3 rows sharing the most).

        A text with fewer than n words counts as a single n-gram of all its words. Empty text -> (0.0, []).
        The fraction is over distinct n-grams, boilerplate excluded; a text made only of boilerplate gives
        (0.0, []). Rows are ranked by shared n-grams among the first 4 rows stored per n-gram, ties to the
        earliest added.
        """
        self.freeze()
        hashes = ngram_hashes(text, self.n)
        if hashes.size == 0 or self._hashes.size == 0:
            return 0.0, []
        where = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        found = self._hashes[where] == hashes
        common = found & self._common[where]
        counted = hashes.size - int(common.sum())
        if counted == 0:
            return 0.0, []
        shared = where[found & ~common]
        return shared.size / counted, self._top_keys(shared)

    def _top_keys(self, shared: np.ndarray) -> list[str]:
        """Keys of the reference rows holding the most of the given n-grams (indices into the tables)."""
        ids = self._ids[shared].ravel()
        rows, counts = np.unique(ids[ids >= 0], return_counts=True)
        # np.unique sorts rows ascending and argsort is stable, so equal counts keep the earliest row first.
        best = rows[np.argsort(-counts, kind="stable")[:_TOP_KEYS]]
        return [self._keys[int(row)] for row in best]


def _check_args(n: int, ignore_common: float, min_common_rows: int) -> None:
    """Raise ConfigError naming every invalid argument at once."""
    problems = []
    if n < 1:
        problems.append(f"n={n}: must be at least 1, e.g. 8")
    if not 0.0 <= ignore_common <= 1.0:
        problems.append(f"ignore_common={ignore_common}: must be a fraction in [0, 1], e.g. 0.01")
    if min_common_rows < 1:
        problems.append(f"min_common_rows={min_common_rows}: must be at least 1, e.g. 20")
    if problems:
        raise ConfigError("invalid leakage settings: " + "; ".join(problems))
