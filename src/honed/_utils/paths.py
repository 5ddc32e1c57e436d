"""Where honed keeps what it can rebuild: converted models and tokenized datasets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """honed's cache: $HONED_CACHE, else ~/.cache/honed."""
    return Path(os.environ.get("HONED_CACHE") or Path.home() / ".cache" / "honed")
