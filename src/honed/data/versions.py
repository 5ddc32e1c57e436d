"""Content hashes of data sources and of prepared dataset folders: what a run records as the data it used.

A prepared dataset folder (written by `honed data prepare`) holds `manifest.json` with its content hash;
any other source is identified by the SHA-256 of its bytes (a file), of its files' names and bytes (a
folder), or by its id (a hub dataset, which honed cannot hash without downloading it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from honed._utils.locations import is_hub_id

MANIFEST = "manifest.json"
BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(source: str) -> str:
    """A hash that changes whenever the data behind `source` changes (file, folder, or hub id)."""
    path = Path(source.rsplit(":", 1)[0] if not Path(source).exists() and ":" in source else source)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256(source.encode())
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path)}\0{file_sha256(file)}\0".encode())
        return digest.hexdigest()
    return hashlib.sha256(f"hub:{source}".encode()).hexdigest()


def prepared_manifest(source: str) -> dict[str, Any] | None:
    """The manifest of the prepared dataset a split file belongs to, or None."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    try:
        found = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "content_hash" in found else None


def data_identity(sources: dict[str, str]) -> dict[str, Any]:
    """For each split, its source, the source's hash and, when prepared by honed, the dataset's hash."""
    identity = {}
    for split, source in sources.items():
        manifest = prepared_manifest(source)
        identity[split] = {
            "source": source,
            # A hub dataset cannot be hashed without downloading it: its id is its only identity here.
            "sha256": None if is_hub_id(source) else source_fingerprint(source),
            "dataset": None
            if manifest is None
            else {"name": manifest.get("name"), "content_hash": manifest["content_hash"]},
        }
    return identity
