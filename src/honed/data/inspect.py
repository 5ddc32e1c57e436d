"""`honed data inspect`: what is in a data file, in one streaming pass, before any training.

Reports the rows and their format, malformed rows (file:line, what and what was expected), the token-length
histogram under the model's tokenizer and chat template, what cleaning would change or drop, exact and
near duplicates, personal data and secrets per type (where, never the values), and one example rendered
the way training sees it with the trained tokens marked: the loss mask made visible.

Memory stays flat in the file's size except for the duplicate index: about 0.25 KB a row for exact
duplicates, 2.2 KB with near duplicates (`bench/data_memory.py` measures it). Lengths are kept as counts
per length, problems and examples up to a cap.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from honed.config.prepare import PrepareConfig
from honed.config.schema import DataConfig
from honed.data.clean import clean_value, length_problem
from honed.data.dedup import Deduplicator
from honed.data.formats import RowError, check_row, detect_format, row_text, to_messages, to_preference
from honed.data.pii import scrub
from honed.data.sources import read_rows
from honed.data.tokenize import Encoded, encode_example, render_masked
from honed.errors import DataError

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedTokenizerBase

MAX_LISTED = 10
# Upper edges of the token-length histogram's bins (the last bin holds everything longer).
BIN_EDGES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class _Stats:
    """Exact distribution of integer values kept as a Counter: percentiles without storing every row."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, value: int) -> None:
        self.counts[value] += 1

    def summary(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        if not total:
            return {}
        ordered = sorted(self.counts.items())
        return {
            "rows": total,
            "min": ordered[0][0],
            "mean": round(sum(v * n for v, n in ordered) / total, 1),
            "p50": _percentile(ordered, total, 0.5),
            "p95": _percentile(ordered, total, 0.95),
            "max": ordered[-1][0],
        }

    def histogram(self) -> list[dict[str, Any]]:
        bins: Counter[int | None] = Counter()
        for value, n in self.counts.items():
            bins[next((edge for edge in BIN_EDGES if value <= edge), None)] += n
        low, out = 0, []
        for edge in (*BIN_EDGES, None):
            if bins[edge]:
                out.append({"from": low + 1 if low else 0, "to": edge, "rows": bins[edge]})
            low = edge or low
        return out


def _percentile(ordered: list[tuple[int, int]], total: int, q: float) -> int:
    rank, seen = q * (total - 1), 0
    for value, n in ordered:
        seen += n
        if seen > rank:
            return value
    return ordered[-1][0]


def inspect_source(
    source: str,
    data: DataConfig,
    prepare: PrepareConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_rows: int | None = None,
    near_duplicates: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """One pass over `source`: counts, format, token lengths, cleaning, duplicates, PII and an example."""
    state = _State(data, prepare, tokenizer, near_duplicates)
    rows = read_rows(source)
    for item in tqdm(rows, desc="inspect", unit=" rows", disable=not progress):
        state.add(item.location, item.row, item.error)
        if max_rows is not None and state.rows >= max_rows:
            break
    return state.report(source)


class _State:
    """Everything inspect accumulates over the rows of one file."""

    def __init__(
        self, data: DataConfig, prepare: PrepareConfig, tokenizer: PreTrainedTokenizerBase | None, near: bool
    ) -> None:
        self.data, self.prepare, self.tokenizer = data, prepare, tokenizer
        self.format: str | None = None if data.format == "auto" else data.format
        self.format_note: str | None = None
        self.rows = 0
        self.fields: Counter = Counter()
        self.problems: list[str] = []
        self.malformed = 0
        self.chars, self.tokens, self.labels = _Stats(), _Stats(), _Stats()
        self.too_long = 0
        self.cleaning: Counter = Counter()
        self.pii: Counter = Counter()
        self.pii_rows: list[dict[str, Any]] = []
        self.pii_row_count = 0
        d = prepare.dedup
        self.dedup = Deduplicator(
            exact=True,
            near=near,
            threshold=d.near_threshold,
            shingle_words=d.shingle_words,
            num_perm=d.num_perm,
        )
        self.duplicates: Counter = Counter()
        self.duplicate_pairs: list[dict[str, str]] = []
        self.example: dict[str, Any] | None = None

    def add(self, location: str, row: dict[str, Any] | None, error: str | None) -> None:
        self.rows += 1
        try:
            if error or row is None:  # a row that could not be read has an error and no fields
                raise RowError(error or "no fields")
            self.fields.update(row.keys())
            self._detect(row, location)
            if self.format is not None:
                check_row(row, self.format, self.data)
        except RowError as exc:
            self._malformed(f"{location}: {exc}")
            return
        text = row_text(row, self.format, self.data)
        self.chars.add(len(text))
        self._clean(row)
        self._pii(row, location)
        self._duplicates(location, text)
        self._tokens(row, text)

    def _detect(self, row: dict[str, Any], location: str) -> None:
        if self.format is not None or self.format_note is not None:
            return
        try:
            self.format = detect_format(row, location)
        except DataError as exc:
            self.format_note = str(exc)

    def _clean(self, row: dict[str, Any]) -> None:
        cleaned, changed = clean_value(row, self.prepare.clean)
        self.cleaning["rows_changed"] += int(changed)
        problem = length_problem(row_text(cleaned, self.format, self.data), self.prepare.clean)
        if problem:
            self.cleaning[problem] += 1

    def _pii(self, row: dict[str, Any], location: str) -> None:
        _, found = scrub(row, self.prepare.pii.types, False)
        if not found:
            return
        self.pii.update(found)
        self.pii_row_count += 1
        if len(self.pii_rows) < MAX_LISTED:
            self.pii_rows.append({"row": location, "types": dict(found)})

    def _duplicates(self, location: str, text: str) -> None:
        found = self.dedup.check_and_add(location, text)
        if found is None:
            return
        self.duplicates[found[0]] += 1
        if len(self.duplicate_pairs) < MAX_LISTED:
            self.duplicate_pairs.append({"row": location, "kind": found[0], "of": found[1]})

    def _tokens(self, row: dict[str, Any], text: str) -> None:
        if self.tokenizer is None:
            return
        encoded = self._encode(self.tokenizer, row, text)
        if encoded is None:
            return
        self.tokens.add(len(encoded.input_ids))
        self.labels.add(encoded.num_labels)
        self.too_long += len(encoded.input_ids) > self.data.max_seq_len
        if self.example is None and self.format is not None:
            self.example = {"masked": render_masked(self.tokenizer, encoded)}
            if self.format == "preference":
                self.example["rejected"] = to_preference(row)[2]

    def _encode(self, tokenizer: PreTrainedTokenizerBase, row: dict[str, Any], text: str) -> Encoded | None:
        if self.format == "text":  # continued pre-training trains on every token
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return Encoded(ids, list(ids))
        if self.format is None:  # unknown format: the length of the fields' text, nothing trained
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return Encoded(ids, [-100] * len(ids))
        try:
            return encode_example(tokenizer, to_messages(row, self.format, self.data))
        except RowError as exc:
            self._malformed(f"(tokenizing) {exc}")
            return None

    def _malformed(self, message: str) -> None:
        self.malformed += 1
        if len(self.problems) < MAX_LISTED * 2:
            self.problems.append(message)

    def report(self, source: str) -> dict[str, Any]:
        return {
            "source": source,
            "rows": self.rows,
            "format": self.format,
            "format_note": self.format_note,
            "fields": dict(self.fields.most_common(20)),
            "malformed": {"rows": self.malformed, "first": self.problems},
            "content_chars": self.chars.summary(),
            "tokens": {
                **self.tokens.summary(),
                "histogram": self.tokens.histogram(),
                "max_seq_len": self.data.max_seq_len,
                "longer_than_max_seq_len": self.too_long,
            },
            "trained_tokens": self.labels.summary(),
            "cleaning": dict(self.cleaning),
            "duplicates": {**dict(self.duplicates), "first": self.duplicate_pairs},
            "pii": {"found": dict(self.pii), "rows": self.pii_row_count, "first": self.pii_rows},
            "example": self.example,
        }
