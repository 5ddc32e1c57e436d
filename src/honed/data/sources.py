"""Read rows from JSONL, CSV and Parquet files, streaming, each with its `file:line` location.

A row that cannot be parsed is yielded as a `SourceRow` with `error` set rather than raised, so the caller
decides (per `data.on_bad_row`) whether to stop or count and skip it. This module knows nothing about
formats, templates or tokenizers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honed.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class SourceRow:
    """One row of a data file: its fields, or the reason it could not be read."""

    location: str  # "path:line" (1-based; for Parquet the row number)
    row: dict[str, Any] | None
    error: str | None = None


def read_rows(path: str | Path) -> Iterator[SourceRow]:
    """Stream the rows of a .jsonl, .csv or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    readers = {".jsonl": _jsonl, ".json": _jsonl, ".csv": _csv, ".parquet": _parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    return reader(path)


def _jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceRow(where, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield SourceRow(where, None, f"expected a JSON object per line, got {type(row).__name__}")
                continue
            yield SourceRow(where, row)


def _csv(path: Path) -> Iterator[SourceRow]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # more cells than header columns
                yield SourceRow(
                    where,
                    None,
                    f"{len(row) - 1 + len(row[None])} cells but the header has "
                    f"{len(reader.fieldnames or [])} columns",
                )
                continue
            yield SourceRow(where, dict(row))


def _parquet(path: Path) -> Iterator[SourceRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield SourceRow(f"{path}:{number}", row)
