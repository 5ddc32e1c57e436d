"""Where a data source named in a recipe lives: a local file or folder, a split of a saved dataset folder
(`folder:split`), or a Hugging Face hub dataset id (`owner/name[:split]`). Names only: nothing is read.

It sits below config/ and data/ because both ask it: the recipe loader keeps a hub id as it is instead of
resolving it against the recipe's folder, and data/sources.py reads each kind.
"""

from __future__ import annotations

import re
from pathlib import Path

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?")
_SPLIT_SUFFIX = re.compile(r"(.+):([\w.-]+)")


def is_hub_id(value: str) -> bool:
    """Whether `value` names a hub dataset (`owner/name` or `owner/name:split`) rather than a local path."""
    if Path(value).exists() or local_split(value) is not None:
        return False
    if not _HUB_ID.fullmatch(value):
        return False
    # "data/train.jsonl" that does not exist is a missing file, not a hub repository.
    return not value.partition(":")[0].lower().endswith(SUFFIXES + TEXT_SUFFIXES)


def local_split(value: str) -> tuple[Path, str] | None:
    """(folder, split) for `folder:split` when the folder exists and the full value does not."""
    match = _SPLIT_SUFFIX.fullmatch(value)
    if match is None or Path(value).exists() or not Path(match[1]).is_dir():
        return None
    return Path(match[1]), match[2]
