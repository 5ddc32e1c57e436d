"""From a recipe's data section to tokenized examples and evaluation rows, with a data report.

Every row is accounted for: read, turned into messages, tokenized, then kept, skipped as malformed
(`data.on_bad_row: skip`), or handled as too long (`data.on_too_long`). The report counts each outcome and
keeps the first few reasons with their file:line, so nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from honed.config.schema import DataConfig, Recipe
from honed.data.formats import EXAMPLES, RowError, detect_format, split_prompt, to_messages
from honed.data.sources import read_rows
from honed.data.tokenize import Encoded, encode_example
from honed.errors import DataError

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedTokenizerBase

MAX_REPORTED_PROBLEMS = 20


@dataclass
class Row:
    """One usable data row: where it came from, its conversation, and the raw fields."""

    location: str
    messages: list[dict[str, str]]
    fields: dict[str, Any]


@dataclass
class SplitReport:
    """What happened to every row of one split."""

    rows_read: int = 0
    examples: int = 0
    skipped_bad_rows: int = 0
    too_long: int = 0
    too_long_action: str = "skip"
    problems: list[str] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)
    label_tokens: int = 0

    def note(self, message: str) -> None:
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(message)

    def as_dict(self) -> dict[str, Any]:
        lengths = sorted(self.token_lengths)
        stats = {}
        if lengths:
            stats = {
                "min": lengths[0],
                "mean": round(sum(lengths) / len(lengths), 1),
                "p95": lengths[int(0.95 * (len(lengths) - 1))],
                "max": lengths[-1],
                "total": sum(lengths),
            }
        return {
            "rows_read": self.rows_read,
            "examples": self.examples,
            "skipped_bad_rows": self.skipped_bad_rows,
            "too_long": self.too_long,
            "too_long_action": self.too_long_action,
            "tokens": stats,
            "label_tokens": self.label_tokens,
            "problems": self.problems,
        }


def iter_rows(cfg: DataConfig, split: str, report: SplitReport, raw: bool = False) -> Iterator[Row]:
    """Usable rows of `split` ("train" or "validation"), honouring on_bad_row, holdout and row caps.

    With `on_bad_row: error`, the first malformed row stops training but not the reading: the rest of the
    file is checked so that one error lists every malformed row (up to a cap), each with its file:line.
    With `raw`, rows are not turned into messages (for tasks that read fields directly, e.g. perplexity).
    """
    path, holdout = split_source(cfg, split)
    limit = cfg.max_train_rows if split == "train" else cfg.max_validation_rows
    fmt: str | None = None if cfg.format == "auto" else cfg.format
    bad = BadRows(path, cfg.on_bad_row)
    kept = 0
    for source in read_rows(path):
        row = source.row
        if holdout is not None and row is not None and _is_held_out(row, cfg) != holdout:
            continue
        report.rows_read += 1
        try:
            if source.error or row is None:  # a row that could not be read has an error and no fields
                raise RowError(source.error or "no fields")
            messages: list[dict[str, str]] = []
            if not raw:
                fmt = fmt or detect_format(row, source.location)
                _trainable(fmt, source.location)
                messages = to_messages(row, fmt, cfg)
        except RowError as exc:
            bad.add(report, f"{source.location}: {exc}", fmt)
            continue
        if bad.count and cfg.on_bad_row == "error":
            continue  # still reading, to report every malformed row at once
        yield Row(source.location, messages, row)
        kept += 1
        if limit is not None and kept >= limit:
            break
    bad.raise_if_any(fmt)


class BadRows:
    """Malformed rows of one file: counted and listed when skipped, gathered into one error otherwise."""

    def __init__(self, path: str, on_bad_row: str) -> None:
        self.path, self.on_bad_row = path, on_bad_row
        self.count = 0
        self.messages: list[str] = []

    def add(self, report: SplitReport, message: str, fmt: str | None) -> None:
        self.count += 1
        if self.on_bad_row == "skip":
            report.skipped_bad_rows += 1
            report.note(message)
            return
        self.messages.append(message)
        if self.count >= MAX_REPORTED_PROBLEMS:
            self.raise_if_any(fmt, complete=False)

    def raise_if_any(self, fmt: str | None, complete: bool = True) -> None:
        if self.on_bad_row == "skip" or not self.count:
            return
        counted = f"{self.count} malformed rows" if complete else f"at least {self.count} malformed rows"
        example = f"\nA valid {fmt} row: {EXAMPLES[fmt]}" if fmt in EXAMPLES else ""
        raise DataError(
            f"{self.path}: {counted if self.count > 1 else '1 malformed row'}:\n  "
            + "\n  ".join(self.messages)
            + example
            + "\nFix these rows, or set data.on_bad_row: skip to count and skip them."
        )


def _trainable(fmt: str, where: str) -> None:
    if fmt == "text":
        raise DataError(
            f"{where}: raw text rows (a 'text' field) have no answer for supervised fine-tuning; they are "
            "for continued pre-training (set method: cpt). For supervised rows use messages, "
            "prompt/completion or a template."
        )


def split_source(cfg: DataConfig, split: str) -> tuple[str, bool | None]:
    """The file a split reads and, for a hash holdout, whether it keeps held-out rows (True) or the rest."""
    if split == "train":
        return cfg.train, (False if cfg.holdout_fraction else None)
    if cfg.validation:
        return cfg.validation, None
    if cfg.holdout_fraction:
        return cfg.train, True
    raise DataError("no validation data: set data.validation or data.holdout_fraction")


def _is_held_out(row: dict[str, Any], cfg: DataConfig) -> bool:
    digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < (cfg.holdout_fraction or 0.0)


def _bad_row(cfg: DataConfig, report: SplitReport, message: str) -> None:
    """A row that read well but cannot be tokenized (e.g. a template that hides the answer)."""
    if cfg.on_bad_row == "error":
        raise DataError(f"{message} (set data.on_bad_row: skip to count and skip such rows)")
    report.skipped_bad_rows += 1
    report.note(message)


def build_examples(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, split: str
) -> tuple[list[Encoded], SplitReport]:
    """Tokenized, masked examples of a split and the report of every row's fate."""
    report = SplitReport(too_long_action=cfg.on_too_long)
    examples = []
    for row in iter_rows(cfg, split, report):
        try:
            encoded = encode_example(tokenizer, row.messages)
        except RowError as exc:
            _bad_row(cfg, report, f"{row.location}: {exc}")
            continue
        kept = keep_example(cfg, report, row.location, encoded)
        if kept is not None:
            examples.append(kept)
    report.examples = len(examples)
    if not examples:
        raise nothing_usable(cfg, report, split, "examples")
    return examples, report


def keep_example(cfg: DataConfig, report: SplitReport, where: str, encoded: Encoded) -> Encoded | None:
    """Count a tokenized example in the report and apply the too-long rule: the example to train on
    (possibly truncated), or None when it is dropped."""
    report.token_lengths.append(len(encoded.input_ids))
    fitted = fit_length(cfg, report, where, (encoded,))
    if fitted is None:
        return None
    report.label_tokens += fitted[0].num_labels
    return fitted[0]


def nothing_usable(cfg: DataConfig, report: SplitReport, split: str, noun: str) -> DataError:
    """The error for a split that kept no example: how many rows were malformed or too long, and the fix."""
    hint = f"; raise data.max_seq_len (now {cfg.max_seq_len})" if report.too_long else ""
    return DataError(
        f"{split} data: no usable {noun} out of {report.rows_read} rows "
        f"({report.skipped_bad_rows} malformed, {report.too_long} too long){hint}"
    )


def fit_length(
    cfg: DataConfig, report: SplitReport, where: str, sequences: tuple[Encoded, ...], lower: str = ""
) -> tuple[Encoded, ...] | None:
    """`data.on_too_long` applied to one example's sequences (a preference pair has two; the longest
    decides): returned as they are when within `data.max_seq_len`, else counted as too long and skipped
    (None), truncated from the right (None when that leaves no label), or a DataError. The one too-long
    rule every method uses. `lower` names another setting that shortens the sequences, for the error."""
    longest = max(len(e.input_ids) for e in sequences)
    if longest <= cfg.max_seq_len:
        return sequences
    report.too_long += 1
    message = f"{where}: {longest} tokens > data.max_seq_len {cfg.max_seq_len}"
    if cfg.on_too_long == "error":
        also = f", lower {lower}" if lower else ""
        raise DataError(f"{message}; raise max_seq_len{also} or set data.on_too_long: skip or truncate")
    report.note(f"{message} ({'skipped' if cfg.on_too_long == 'skip' else 'truncated'})")
    if cfg.on_too_long == "skip":
        return None
    cut = tuple(Encoded(e.input_ids[: cfg.max_seq_len], e.labels[: cfg.max_seq_len]) for e in sequences)
    return cut if all(e.num_labels for e in cut) else None


@dataclass
class EvalRow:
    """A held-out row to generate for: prompt messages, the reference answer, and its slice value."""

    location: str
    prompt: list[dict[str, str]]
    reference: str
    slice: str | None
    fields: dict[str, Any] = field(default_factory=dict)


def load_eval_rows(recipe: Recipe, raw: bool = False) -> list[EvalRow]:
    """The first `eval.max_rows` usable rows of the evaluation split (`raw`: fields only, no messages)."""
    cfg = recipe.data
    report = SplitReport()
    rows = []
    for row in iter_rows(cfg, recipe.eval.split, report, raw=raw):
        prompt, reference = split_prompt(row.messages) if row.messages else ([], "")
        value = row.fields.get(cfg.slice_field) if cfg.slice_field else None
        rows.append(
            EvalRow(row.location, prompt, reference, None if value is None else str(value), row.fields)
        )
        if recipe.eval.max_rows is not None and len(rows) >= recipe.eval.max_rows:
            break
    return rows


def check_split(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, split: str) -> dict[str, Any]:
    """Read every row of a split, tokenize and mask it as SFT training would; return its report."""
    return build_examples(cfg, tokenizer, split)[1].as_dict()
