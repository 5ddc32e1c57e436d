"""`honed data prepare`: turn a recipe's raw data into a versioned, cleaned dataset folder.

The steps, in order, and why that order:

1. read each source, streaming; check every row against its format (malformed rows are listed all at
   once, or counted and skipped with `data.on_bad_row: skip`);
2. clean every string field (Unicode, control characters, whitespace), then apply the length rules to
   the row's content text;
3. find personal data and secrets (after cleaning, so normalised text is what is scanned), then redact,
   drop or only count;
4. drop exact and near duplicates within each source (on the redacted text: what will be trained on);
5. split the training source into train/validation/test (deterministic, stratified, grouped);
6. drop training rows that duplicate a held-out row, and flag (or drop) training rows whose n-grams
   overlap held-out or benchmark rows (leakage);
7. write `<output_dir>/<name>-<hash>/` atomically: one JSONL per split (rows keep their fields, so the
   recipe's format and templates still apply), `dropped.jsonl` (where and why, never the content) and
   `manifest.json` (inputs with their hashes, the config, every step's counts, the outputs).

The content hash covers the split files only, so the same data and settings always give the same folder,
and a training run that reads from it records that hash. Memory: rows stream through passes 1-4 and are
spooled to disk; what stays in memory is per-row metadata and the duplicate/n-gram indexes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from honed._version import __version__
from honed.config.prepare import PrepareConfig
from honed.config.schema import DataConfig, Recipe
from honed.data.clean import clean_value, length_problem
from honed.data.dataset import BadRows, SplitReport
from honed.data.dedup import Deduplicator
from honed.data.formats import RowError, check_row, detect_format, row_text
from honed.data.leakage import NgramIndex
from honed.data.pii import scrub
from honed.data.sources import read_rows
from honed.data.splits import SplitItem, assign_splits
from honed.data.versions import MANIFEST, source_fingerprint
from honed.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
MAX_LISTED = 50  # rows listed per finding in the manifest; every one is counted, and in dropped.jsonl


@dataclass
class Prepared:
    """A prepared dataset folder and its manifest."""

    folder: Path
    content_hash: str
    manifest: dict[str, Any]
    reused: bool = False


@dataclass
class _Spool:
    """The rows of one source that survived passes 1-4, spooled to a file, with their split metadata."""

    split: str
    path: Path
    data: DataConfig
    format: str | None = None
    items: list[SplitItem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)


def prepare(recipe: Recipe, progress: bool = False) -> Prepared:
    """Run every preparation step on the recipe's data and write the versioned dataset folder."""
    cfg = recipe.prepare
    sources = _sources(recipe)
    parent = Path(cfg.output_dir)
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=parent))
    try:
        return _prepare_in(recipe, sources, work, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare_in(recipe: Recipe, sources: dict[str, str], work: Path, progress: bool) -> Prepared:
    started = time.perf_counter()
    cfg = recipe.prepare
    dropped = _DropLog(work / "dropped.jsonl")
    spools = {
        split: _read_clean(recipe, split, source, work, dropped, progress)
        for split, source in sources.items()
    }
    train = spools["train"]
    assignment = _assign(train, recipe)
    held_out = _held_out_index(recipe, spools, assignment, progress)
    outputs = _write_splits(recipe, spools, assignment, held_out, work, dropped, progress)
    dropped.close()
    if outputs["train"]["rows"] == 0:
        counts = {
            k: v for k, v in train.counts.items() if v and k not in ("kept", "cleaned", "rows_with_pii")
        }
        counts |= +held_out.counts
        raise DataError(
            f"{sources['train']}: no training rows left after preparation ({_counted(counts)}); see the "
            "prepare settings (clean.min_chars/max_chars, pii.action, dedup, leakage.action)"
        )
    content_hash = _content_hash(outputs)
    manifest = _manifest(recipe, sources, spools, held_out, outputs, content_hash, started)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return _publish(work, Path(cfg.output_dir) / f"{recipe.name}-{content_hash[:12]}", content_hash, manifest)


def _counted(counts: dict[str, int]) -> str:
    labels = {"pii": "dropped for personal data"}
    parts = [f"{n} {labels.get(reason, reason.replace('_', ' '))}" for reason, n in counts.items()]
    return ", ".join(parts) or "no rows read"


def _sources(recipe: Recipe) -> dict[str, str]:
    data = recipe.data
    return {"train": data.train} | ({"validation": data.validation} if data.validation else {})


# --- passes 1-4: read, check, clean, scrub, deduplicate within the source --------------------------------


def _read_clean(
    recipe: Recipe, split: str, source: str, work: Path, dropped: _DropLog, progress: bool
) -> _Spool:
    cfg, data = recipe.prepare, recipe.data
    spool = _Spool(split, work / f"{split}.spool.jsonl", data, None if data.format == "auto" else data.format)
    bad = BadRows(source, data.on_bad_row)
    report = SplitReport()
    dedup = _deduplicator(cfg)
    with spool.path.open("w", encoding="utf-8") as out:
        for location, row in _checked_rows(source, spool, bad, report, dropped, progress):
            kept = _clean_scrub(row, spool, cfg, location, dropped)
            if kept is None:
                continue
            text = row_text(kept, spool.format, data)
            found = dedup.check_and_add(location, text) if dedup is not None else None
            if found is not None:
                spool.counts[f"duplicate_{found[0]}"] += 1
                dropped.add(split, location, f"duplicate_{found[0]}", f"of {found[1]}")
                continue
            out.write(json.dumps({"_at": location, **kept}, ensure_ascii=False) + "\n")
            spool.items.append(_split_item(kept, text, cfg))
            spool.counts["kept"] += 1
    bad.raise_if_any(spool.format)
    spool.counts["malformed"] = report.skipped_bad_rows
    _check_split_fields(spool, cfg)
    return spool


def _checked_rows(
    source: str, spool: _Spool, bad: BadRows, report: SplitReport, dropped: _DropLog, progress: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = tqdm(read_rows(source), desc=f"{spool.split}: read", unit=" rows", disable=not progress)
    for item in rows:
        spool.counts["read"] += 1
        try:
            if item.error:
                raise RowError(item.error)
            spool.format = spool.format or detect_format(item.row, item.location)
            check_row(item.row, spool.format, spool.data)
        except RowError as exc:
            bad.add(report, f"{item.location}: {exc}", spool.format)
            dropped.add(spool.split, item.location, "malformed", str(exc))
            continue
        if not bad.count or bad.on_bad_row == "skip":
            yield item.location, item.row


def _clean_scrub(
    row: dict[str, Any], spool: _Spool, cfg: PrepareConfig, location: str, dropped: _DropLog
) -> dict[str, Any] | None:
    cleaned, changed = clean_value(row, cfg.clean)
    spool.counts["cleaned"] += int(changed)
    problem = length_problem(row_text(cleaned, spool.format, spool.data), cfg.clean)
    if problem:
        spool.counts[problem] += 1
        dropped.add(spool.split, location, problem, "")
        return None
    if cfg.pii.action == "off":
        return cleaned
    redacted, found = scrub(cleaned, cfg.pii.types, cfg.pii.action == "redact")
    spool.pii.update(found)
    if found:
        spool.counts["rows_with_pii"] += 1
        if cfg.pii.action == "drop":
            spool.counts["pii"] += 1
            dropped.add(spool.split, location, "pii", ", ".join(sorted(found)))
            return None
    return redacted


def _deduplicator(cfg: PrepareConfig) -> Deduplicator | None:
    """The configured duplicate index, or None when both exact and near detection are off."""
    d = cfg.dedup
    if not (d.exact or d.near):
        return None
    return Deduplicator(
        exact=d.exact,
        near=d.near,
        threshold=d.near_threshold,
        shingle_words=d.shingle_words,
        num_perm=d.num_perm,
    )


def _split_item(row: dict[str, Any], text: str, cfg: PrepareConfig) -> SplitItem:
    key = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    stratum = _field(row, cfg.split.stratify_by)
    return SplitItem(content_key=key, stratum=stratum, group=_field(row, cfg.split.group_by))


def _field(row: dict[str, Any], name: str | None) -> str | None:
    if name is None or row.get(name) is None:
        return None
    return json.dumps(row[name], sort_keys=True, ensure_ascii=False)


def _check_split_fields(spool: _Spool, cfg: PrepareConfig) -> None:
    if spool.split != "train" or not spool.items:
        return
    for key, attribute in (("stratify_by", "stratum"), ("group_by", "group")):
        name = getattr(cfg.split, key)
        if name and all(getattr(item, attribute) is None for item in spool.items):
            raise DataError(f"prepare.split.{key}: no training row has a field {name!r}")


# --- pass 5: split ---------------------------------------------------------------------------------------


def _assign(train: _Spool, recipe: Recipe) -> list[str]:
    split = recipe.prepare.split
    validation = split.validation_fraction or recipe.data.holdout_fraction or 0.0
    if not (validation or split.test_fraction):
        return ["train"] * len(train.items)
    return assign_splits(train.items, validation, split.test_fraction, split.seed)


# --- pass 6: across splits -------------------------------------------------------------------------------


@dataclass
class _HeldOut:
    """Indexes of every held-out row (validation, test, benchmark files) that training rows are checked on."""

    dedup: Deduplicator | None
    ngrams: NgramIndex | None
    benchmarks: dict[str, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    flagged: list[dict[str, Any]] = field(default_factory=list)


def _held_out_index(
    recipe: Recipe, spools: dict[str, _Spool], assignment: list[str], progress: bool
) -> _HeldOut:
    cfg = recipe.prepare
    held = _HeldOut(
        _deduplicator(cfg) if cfg.dedup.across_splits else None,
        NgramIndex(n=cfg.leakage.ngram) if cfg.leakage.check else None,
    )
    for split, location, row in _held_out_rows(spools, assignment):
        fmt = spools[split if split in spools else "train"].format
        if held.dedup is not None:
            held.dedup.add(location, row_text(row, fmt, recipe.data))
        if held.ngrams is not None:
            held.ngrams.add(location, _leakage_text(row, fmt, recipe))
    if held.ngrams is not None:
        for path in cfg.leakage.against:
            held.benchmarks[path] = _index_benchmark(path, held.ngrams, recipe, progress)
    return held


def _held_out_rows(spools: dict[str, _Spool], assignment: list[str]) -> Iterator[tuple[str, str, dict]]:
    if "validation" in spools:
        for row in _spooled(spools["validation"]):
            yield "validation", row.pop("_at"), row
    for row, split in zip(_spooled(spools["train"]), assignment, strict=True):
        if split != "train":
            yield split, row.pop("_at"), row


def _index_benchmark(path: str, index: NgramIndex, recipe: Recipe, progress: bool) -> int:
    rows, fmt = 0, None
    for item in tqdm(
        read_rows(path), desc=f"benchmark {Path(path).name}", unit=" rows", disable=not progress
    ):
        if item.row is None:
            continue
        if fmt is None:
            try:
                fmt = detect_format(item.row, item.location)
            except DataError:
                fmt = "fields"  # not a known format: compare every field's text
        index.add(item.location, _leakage_text(item.row, None if fmt == "fields" else fmt, recipe))
        rows += 1
    return rows


def _leakage_text(row: dict[str, Any], fmt: str | None, recipe: Recipe) -> str:
    """What leakage compares: the fields named in prepare.leakage.fields, else the row's content."""
    names = recipe.prepare.leakage.fields
    if names is None:
        return row_text(row, fmt, recipe.data)
    return "\n".join(str(row[name]) for name in names if row.get(name) is not None)


def _write_splits(
    recipe: Recipe,
    spools: dict[str, _Spool],
    assignment: list[str],
    held: _HeldOut,
    work: Path,
    dropped: _DropLog,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    files = {split: (work / f"{split}.jsonl").open("w", encoding="utf-8") for split in SPLITS}
    rows: Counter[str] = Counter()
    try:
        if "validation" in spools:
            for row in _spooled(spools["validation"]):
                row.pop("_at")
                files["validation"].write(_line(row))
                rows["validation"] += 1
        train = spools["train"]
        pairs = zip(_spooled(train), assignment, strict=True)
        for row, split in tqdm(
            pairs, total=len(assignment), desc="train: check leakage", disable=not progress
        ):
            location = row.pop("_at")
            if split == "train" and not _passes_held_out(row, location, train, recipe, held, dropped):
                continue
            files[split].write(_line(row))
            rows[split] += 1
    finally:
        for handle in files.values():
            handle.close()
    return _outputs(work, rows)


def _passes_held_out(
    row: dict[str, Any], location: str, train: _Spool, recipe: Recipe, held: _HeldOut, dropped: _DropLog
) -> bool:
    text = row_text(row, train.format, recipe.data)
    if held.dedup is not None:
        found = held.dedup.find(text)
        if found is not None:
            held.counts[f"duplicate_{found[0]}_of_held_out"] += 1
            dropped.add("train", location, f"duplicate_{found[0]}_of_held_out", f"of {found[1]}")
            return False
    if held.ngrams is None:
        return True
    overlap, keys = held.ngrams.overlap(_leakage_text(row, train.format, recipe))
    if overlap < recipe.prepare.leakage.min_overlap:
        return True
    held.counts["leakage_flagged"] += 1
    if len(held.flagged) < MAX_LISTED:
        held.flagged.append({"row": location, "overlap": round(overlap, 3), "held_out": keys})
    if recipe.prepare.leakage.action == "drop":
        held.counts["leakage_dropped"] += 1
        dropped.add(
            "train", location, "leakage", f"{overlap:.2f} of its {recipe.prepare.leakage.ngram}-grams"
        )
        return False
    return True


# --- pass 7: write the versioned folder ------------------------------------------------------------------


def _outputs(work: Path, rows: Counter) -> dict[str, dict[str, Any]]:
    outputs = {}
    for split in SPLITS:
        path = work / f"{split}.jsonl"
        if rows[split] == 0 and split != "train":
            path.unlink()
            continue
        outputs[split] = {"file": path.name, "rows": rows[split], "sha256": source_fingerprint(str(path))}
    for spool in work.glob("*.spool.jsonl"):
        spool.unlink()
    return outputs


def _content_hash(outputs: dict[str, dict[str, Any]]) -> str:
    digest = hashlib.sha256(b"honed-dataset-1\0")
    for split, info in outputs.items():
        digest.update(f"{split}\0{info['sha256']}\0".encode())
    return digest.hexdigest()


def _manifest(
    recipe: Recipe,
    sources: dict[str, str],
    spools: dict[str, _Spool],
    held: _HeldOut,
    outputs: dict[str, dict[str, Any]],
    content_hash: str,
    started: float,
) -> dict[str, Any]:
    cfg = recipe.prepare
    return {
        "name": recipe.name,
        "content_hash": content_hash,
        "honed_version": __version__,
        "format": spools["train"].format,
        "inputs": {
            split: {"source": source, "sha256": source_fingerprint(source)}
            for split, source in sources.items()
        },
        "benchmarks": held.benchmarks,
        "data": recipe.data.model_dump(mode="json"),
        "prepare": cfg.model_dump(mode="json"),
        "steps": _steps(spools, held, cfg),
        "outputs": outputs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _steps(spools: dict[str, _Spool], held: _HeldOut, cfg: PrepareConfig) -> list[dict[str, Any]]:
    per = {split: spool.counts for split, spool in spools.items()}
    return [
        {"step": "read", **{s: {"rows": c["read"], "malformed": c["malformed"]} for s, c in per.items()}},
        {
            "step": "clean",
            **{
                s: {"rows_changed": c["cleaned"], **{k: c[k] for k in ("empty", "too_short", "too_long")}}
                for s, c in per.items()
            },
        },
        {
            "step": "pii",
            "action": cfg.pii.action,
            **{
                s: {
                    "found": dict(spool.pii),
                    "rows_with_pii": spool.counts["rows_with_pii"],
                    "dropped": spool.counts["pii"],
                }
                for s, spool in spools.items()
            },
        },
        {
            "step": "dedup",
            **{s: {"exact": c["duplicate_exact"], "near": c["duplicate_near"]} for s, c in per.items()},
            "train_duplicates_of_held_out": {
                "exact": held.counts["duplicate_exact_of_held_out"],
                "near": held.counts["duplicate_near_of_held_out"],
            },
        },
        {"step": "split", **cfg.split.model_dump(mode="json")},
        {
            "step": "leakage",
            "ngram": cfg.leakage.ngram,
            "min_overlap": cfg.leakage.min_overlap,
            "action": cfg.leakage.action,
            "flagged": held.counts["leakage_flagged"],
            "dropped": held.counts["leakage_dropped"],
            "rows": held.flagged,
        },
    ]


def _publish(work: Path, target: Path, content_hash: str, manifest: dict[str, Any]) -> Prepared:
    if (target / MANIFEST).is_file():
        # Same rows out: the folder stays as first written (its manifest records the settings of that run);
        # this run's manifest, which may have reached the same rows by other settings, is returned.
        log.info("dataset %s is already prepared (same content hash)", target)
        return Prepared(target, content_hash, manifest, reused=True)
    if target.exists():
        shutil.rmtree(target)  # a half-written folder from an interrupted run: no manifest, never used
    os.replace(work, target)
    return Prepared(target, content_hash, manifest)


# --- helpers ---------------------------------------------------------------------------------------------


class _DropLog:
    """dropped.jsonl: for every dropped row, its split, file:line, reason and detail (never its content)."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("w", encoding="utf-8")

    def add(self, split: str, location: str, reason: str, detail: str) -> None:
        self.handle.write(_line({"split": split, "at": location, "reason": reason, "detail": detail}))

    def close(self) -> None:
        self.handle.close()


def _spooled(spool: _Spool) -> Iterator[dict[str, Any]]:
    with spool.path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"
