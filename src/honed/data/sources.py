"""Read rows from every kind of data source, streaming, each row with its location.

Sources: JSONL, CSV and Parquet files (location `file:line`); folders of .txt/.md/.html files for
continued pre-training, one `{"text", "source"}` row per file (location `file:1`); folders written by
`datasets`' `save_to_disk`, read as Arrow streams without importing `datasets` (location `folder:row`, a
DatasetDict split chosen as `folder:split`); and Hugging Face hub ids `owner/name[:split]`, streamed
through the optional `datasets` package (location `owner/name[:split]:row`). Memory stays flat: one file
or one record batch at a time.

A row that cannot be parsed is yielded as a `SourceRow` with `error` set rather than raised, so the caller
decides (per `data.on_bad_row`) whether to stop or count and skip it. This module knows nothing about
formats, templates or tokenizers.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from honed._utils.locations import SUFFIXES, TEXT_SUFFIXES, is_hub_id, local_split
from honed.errors import DataError

HTML_SUFFIXES = (".html", ".htm")
ARROW_BATCH_ROWS = 1024  # rows turned into Python dicts at once, whatever the stored batch size

_KINDS = (
    f"use one of {', '.join(SUFFIXES)}, or give a folder of {'/'.join(TEXT_SUFFIXES)} files (read as text), "
    "a folder saved by datasets' save_to_disk (a DatasetDict split as folder:split), "
    "or a hub id like owner/name[:split]"
)


@dataclass(frozen=True)
class SourceRow:
    """One row of a data source: its fields, or the reason it could not be read."""

    location: str  # "path:line" (1-based; for Parquet and saved datasets the row number)
    row: dict[str, Any] | None
    error: str | None = None


def read_rows(path: str | Path) -> Iterator[SourceRow]:
    """Stream the rows of a data file, a text folder, a saved Hugging Face dataset or a hub dataset id."""
    value = os.fspath(path)
    path = Path(value)
    if path.is_dir():
        return _folder_rows(path, None)
    if path.is_file():
        return _file_rows(path)
    local = local_split(value)
    if local is not None:
        return _folder_rows(*local)
    if is_hub_id(value):
        return _hub_rows(value)
    raise DataError(f"{path}: data file not found; {_KINDS}")


# --- single files ----------------------------------------------------------------------------------------


def _file_rows(path: Path) -> Iterator[SourceRow]:
    readers = {".jsonl": _jsonl, ".json": _jsonl, ".csv": _csv, ".parquet": _parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; {_KINDS}")
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


# --- folders: saved datasets or text -------------------------------------------------------------------


def _folder_rows(folder: Path, split: str | None) -> Iterator[SourceRow]:
    """Rows of a saved DatasetDict split, a saved Dataset, or (otherwise) a folder of text files."""
    if (folder / "dataset_dict.json").is_file():
        chosen = _pick_split(folder, split)
        return _arrow_rows(chosen, _arrow_files(chosen))
    if split is not None:
        raise DataError(
            f"{folder}:{split}: a ':{split}' suffix chooses a split of a folder saved by "
            f"DatasetDict.save_to_disk, but {folder} has no dataset_dict.json; give {folder} without it"
        )
    if (folder / "state.json").is_file():
        return _arrow_rows(folder, _arrow_files(folder))
    return _text_rows(folder)


def _pick_split(folder: Path, split: str | None) -> Path:
    """The subfolder of the requested split of a saved DatasetDict ("train" when none is requested)."""
    splits = [str(s) for s in _read_json(folder / "dataset_dict.json").get("splits", [])]
    example = f"{folder}:{splits[0] if splits else 'validation'}"
    if split is None and "train" not in splits:
        raise DataError(
            f"{folder}: this saved DatasetDict has no 'train' split; choose one of "
            f"{', '.join(splits) or '(none listed)'} as folder:split, e.g. {example}"
        )
    chosen = split or "train"
    if chosen not in splits:
        raise DataError(
            f"{folder}: no split {chosen!r} in this saved DatasetDict; its splits are "
            f"{', '.join(splits) or '(none listed)'}, chosen as folder:split, e.g. {example}"
        )
    return folder / chosen


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = f"not readable JSON ({exc})"
        raise DataError(f"{path}: {reason}; save the dataset again with save_to_disk") from None
    if not isinstance(found, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(found).__name__}; save the dataset again")
    return found


def _arrow_files(folder: Path) -> list[Path]:
    """The Arrow shards of a saved Dataset, in the order its state.json lists them."""
    state = _read_json(folder / "state.json")
    names = [entry.get("filename") for entry in state.get("_data_files") or [] if isinstance(entry, dict)]
    if not names or not all(isinstance(name, str) for name in names):
        raise DataError(
            f"{folder / 'state.json'}: lists no data files (_data_files is {state.get('_data_files')!r}); "
            "save the dataset again with save_to_disk"
        )
    files = [folder / name for name in names if isinstance(name, str)]  # all are, checked above
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: listed in {folder / 'state.json'} but missing; save the dataset again")
    return files


def _arrow_rows(folder: Path, files: list[Path]) -> Iterator[SourceRow]:
    number = 0
    for file in files:
        for batch in _arrow_batches(file):
            for row in batch.to_pylist():
                number += 1
                yield SourceRow(f"{folder}:{number}", row)


def _arrow_batches(file: Path) -> Iterator[Any]:
    """Record batches of an Arrow IPC stream file, memory-mapped, at most ARROW_BATCH_ROWS rows each."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(file)) as source:
            for batch in pa.ipc.open_stream(source):  # one batch read at a time; a bad one fails here
                for start in range(0, batch.num_rows, ARROW_BATCH_ROWS):
                    yield batch.slice(start, ARROW_BATCH_ROWS)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{file}: not a readable Arrow stream file ({exc}); save the dataset again with save_to_disk"
        ) from None


def _text_rows(folder: Path) -> Iterator[SourceRow]:
    files = _text_files(folder)
    if not files:
        raise DataError(
            f"{folder}: no text files found; a folder is read as text (one row per file) from files ending "
            f"in {', '.join(TEXT_SUFFIXES)}, or must be a dataset saved by datasets' save_to_disk"
        )
    return (_text_row(folder / relative, relative) for relative in files)


def _text_files(folder: Path) -> list[Path]:
    """Text files under `folder` (relative paths), sorted; hidden files and folders are skipped."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]  # .git, .cache: never training text
        base = Path(parent).relative_to(folder)
        found += [base / n for n in names if not n.startswith(".") and n.lower().endswith(TEXT_SUFFIXES)]
    return sorted(found, key=lambda relative: relative.parts)


def _text_row(path: Path, relative: Path) -> SourceRow:
    where = f"{path}:1"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return SourceRow(
            where,
            None,
            f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8",
        )
    except OSError as exc:
        return SourceRow(where, None, f"cannot be read ({exc.strerror or exc})")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if path.suffix.lower() in HTML_SUFFIXES:
        text = html_to_text(text)
    return SourceRow(where, {"text": text, "source": relative.as_posix()})


# --- HTML -> text -----------------------------------------------------------------------------------------

_SKIPPED_TAGS = {"script", "style", "head", "template", "noscript"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "tr", "ul",
}  # fmt: skip
_CELL_TAGS = {"td", "th"}


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document: blocks on their own lines, entities unescaped, <pre> kept as is."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return parser.text()


class _HtmlText(HTMLParser):
    """Collects visible text; whitespace outside <pre> is collapsed as a browser would."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._pieces: list[str] = []
        self._skipping = 0
        self._in_pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self._newline()
            if tag == "pre":
                self._in_pre += 1
        elif tag in _CELL_TAGS and self._pieces and not self._pieces[-1].endswith((" ", "\n")):
            self._pieces.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS and tag != "br":  # <br> has no closing tag; <br/> must not break twice
            if tag == "pre":
                self._in_pre = max(0, self._in_pre - 1)
            self._newline()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._in_pre:
            self._pieces.append(data)
            return
        data = re.sub(r"\s+", " ", data)
        if not self._pieces or self._pieces[-1].endswith("\n"):
            data = data.lstrip(" ")
        if data:
            self._pieces.append(data)

    def _newline(self) -> None:
        if self._pieces and not self._in_pre:
            self._pieces[-1] = self._pieces[-1].rstrip(" ")
        if self._pieces and not self._pieces[-1].endswith("\n"):
            self._pieces.append("\n")

    def text(self) -> str:
        return "".join(self._pieces).rstrip(" \n")


# --- hub datasets -----------------------------------------------------------------------------------------


def _hub_rows(value: str) -> Iterator[SourceRow]:
    """Stream a hub dataset `owner/name[:split]` through `datasets` (the optional extra honed[hf])."""
    repo, _, split = value.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{value}: reading a Hugging Face hub dataset needs the `datasets` package; "
            "install it with pip install 'honed[hf]'"
        ) from None
    try:
        dataset = datasets.load_dataset(repo, split=split or "train", streaming=True)
    except Exception as exc:  # offline, not found, gated, unknown split: all user-fixable
        raise _hub_error(value, exc) from None
    return _hub_iter(value, dataset)


def _hub_iter(value: str, dataset: Any) -> Iterator[SourceRow]:
    rows = None
    number = 0
    while True:
        try:
            rows = rows or iter(dataset)
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # streaming fetches files lazily, so network errors surface here
            raise _hub_error(value, exc) from None
        number += 1
        yield SourceRow(f"{value}:{number}", dict(row))


def _hub_error(value: str, exc: Exception) -> DataError:
    repo, _, split = value.partition(":")
    reason = (str(exc).strip().splitlines() or [""])[0][:300]
    return DataError(
        f"{value}: cannot load the Hugging Face dataset {repo!r} (split {split or 'train'!r}): "
        f"{type(exc).__name__}: {reason}. Check the id and split; offline, save it first with "
        f"datasets.load_dataset({repo!r}, split=...).save_to_disk(FOLDER) and give FOLDER instead"
    )
