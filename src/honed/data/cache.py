"""Tokenize once: tokenized splits cached by content hash under $HONED_CACHE/tokenized.

The key covers everything the tokens depend on: the split's source (a file's bytes, or a folder's
files; hub datasets are not cached, they can change under the same id), the whole data section of the
recipe, the tokenizer (vocabulary, merges, normalizer, special tokens and chat template) and the version
of honed's encoding rules. Change any of them and the split is tokenized again; rerun the same
recipe (a second seed, a resumed run, a benchmark) and it loads in milliseconds. Entries are written
atomically (a half-written file is never read), as plain numpy arrays (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from honed._utils.locations import is_hub_id
from honed._utils.paths import cache_dir
from honed.config.schema import DataConfig
from honed.data.dataset import SplitReport, build_examples, split_source
from honed.data.tokenize import IGNORE, Encoded
from honed.data.versions import source_fingerprint

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Bump when encode_example, the data report or the row pipeline changes what a split tokenizes to.
ENCODING_VERSION = 2


def cached_examples(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, split: str
) -> tuple[list[Encoded], SplitReport]:
    """`build_examples`, from the cache when this exact data, config and tokenizer were seen before."""
    if is_hub_id(split_source(cfg, split)[0]):  # a hub dataset can change under the same id: no cache
        return build_examples(cfg, tokenizer, split)
    path = cache_dir() / "tokenized" / f"{split_key(cfg, tokenizer, split)}.npz"
    if path.is_file():
        try:
            found = _load(path)
            log.info("%s data: %d tokenized examples from the cache (%s)", split, len(found[0]), path.name)
            return found
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable tokenization cache %s: %s", path, exc)
    examples, report = build_examples(cfg, tokenizer, split)
    _save(path, examples, report)
    return examples, report


def split_key(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, split: str) -> str:
    """Content hash of everything a split's tokens depend on."""
    digest = hashlib.sha256()
    digest.update(f"honed-encoding-{ENCODING_VERSION}\0{split}\0".encode())
    digest.update(cfg.model_dump_json().encode())
    source, _ = split_source(cfg, split)
    digest.update(source_fingerprint(source).encode())  # a file's bytes, a folder's files, or a hub id
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    return digest.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides how a tokenizer splits and renders text."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(str(tokenizer.chat_template).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _save(path: Path, examples: list[Encoded], report: SplitReport) -> None:
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    ids = np.fromiter((t for e in examples for t in e.input_ids), dtype=np.int32, count=int(lengths.sum()))
    trained = np.fromiter(
        (label != IGNORE for e in examples for label in e.labels), dtype=bool, count=int(lengths.sum())
    )
    meta = np.frombuffer(json.dumps(report.__dict__).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, ids=ids, trained=trained, lengths=lengths, report=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> tuple[list[Encoded], SplitReport]:
    with np.load(path, allow_pickle=False) as saved:
        ids, trained, lengths = saved["ids"], saved["trained"], saved["lengths"]
        report = SplitReport(**json.loads(saved["report"].tobytes()))
    labels = np.where(trained, ids, IGNORE)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    examples = [
        Encoded(ids[start:end].tolist(), labels[start:end].tolist())
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return examples, report
