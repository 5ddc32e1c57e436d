"""Text cleaning for `honed data prepare`: unicode form, invisible characters, whitespace, length rules.

This module owns what one string (or one row's nested strings) becomes under `prepare.clean`, and why a
row's content text fails the length rules. It does not decide which fields are content, drop rows, or
count what changed; the prepare pipeline does that with the values returned here.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from honed.config.prepare import CleanConfig

# Every line boundary str.splitlines knows; form feed and friends would otherwise glue words together.
_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Zero-width (non-)joiners are Cf but spell words in Persian and Indic scripts and build emoji sequences.
_KEPT_FORMAT_CHARS = frozenset("\n\t\u200c\u200d")
# Cs: lone surrogates cannot be written as UTF-8, so they go with the controls.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_HORIZONTAL_SPACE_RUN = re.compile(r"[^\S\n]+")
_BLANK_LINE_RUN = re.compile(r"\n{3,}")
_INDENTED_LATER_LINE = re.compile(r"\n[^\S\n]+\S")


def clean_text(text: str, cfg: CleanConfig) -> str:
    """Return `text` with invisible characters removed, unicode normalised and whitespace tidied per `cfg`."""
    # Removing a format character can leave a base letter next to its accent, so normalise afterwards.
    if cfg.strip_control_chars:
        text = strip_control_chars(text)
    if cfg.unicode_form != "none" and not unicodedata.is_normalized(cfg.unicode_form, text):
        text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.normalize_whitespace:
        text = normalize_whitespace(text)
    return text


def clean_value(value: Any, cfg: CleanConfig) -> tuple[Any, bool]:
    """Return a cleaned copy of a row value (a str, or dicts/lists of them) and whether anything changed."""
    if isinstance(value, str):
        cleaned = clean_text(value, cfg)
        return cleaned, cleaned != value
    if isinstance(value, dict):
        pairs = {key: clean_value(item, cfg) for key, item in value.items()}
        return {key: new for key, (new, _) in pairs.items()}, any(hit for _, hit in pairs.values())
    if isinstance(value, list | tuple):
        items = [clean_value(item, cfg) for item in value]
        return type(value)(new for new, _ in items), any(hit for _, hit in items)
    return value, False


def length_problem(text: str, cfg: CleanConfig) -> str | None:
    """Return 'empty', 'too_short' or 'too_long' when `text` breaks the length rules, else None."""
    # Lengths are in characters (code points) of the text as given; clean it first to judge the cleaned row.
    if cfg.min_chars >= 1 and not text.strip():
        return "empty"
    if len(text) < cfg.min_chars:
        return "too_short"
    if cfg.max_chars is not None and len(text) > cfg.max_chars:
        return "too_long"
    return None


def strip_control_chars(text: str) -> str:
    """Return `text` with every line break as \\n and control/format characters (bar \\t, ZWJ, ZWNJ) gone."""
    return _removed_chars().sub("", _LINE_BREAKS.sub("\n", text))


def normalize_whitespace(text: str) -> str:
    """Return `text` trimmed, with space runs inside lines collapsed and at most one blank line in a row."""
    lines = [_normalize_line(line) for line in _LINE_BREAKS.sub("\n", text).split("\n")]
    text = _BLANK_LINE_RUN.sub("\n\n", "\n".join(lines)).strip("\n")
    # Trim the start too, unless later lines are indented as well: then it is an indented block (a method
    # cut from a class, a nested list) whose first line's indentation matters.
    return text if _INDENTED_LATER_LINE.search(text) else text.lstrip()


def _normalize_line(line: str) -> str:
    """Keep the line's indentation, collapse space runs after it to one space and drop trailing spaces."""
    body = line.lstrip()
    if not body:
        return ""
    return line[: len(line) - len(body)] + _HORIZONTAL_SPACE_RUN.sub(" ", body).rstrip()


@functools.cache
def _removed_chars() -> re.Pattern[str]:
    """A pattern matching one character of category Cc, Cf or Cs that cleaning removes."""
    # Built once from the running Python's unicode tables; the `re` module has no \p{Cc} classes.
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        char = chr(code)
        if char in _KEPT_FORMAT_CHARS or unicodedata.category(char) not in _REMOVED_CATEGORIES:
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = (f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)
    return re.compile(f"[{''.join(parts)}]")
