"""The `prepare:` section of a recipe: cleaning, PII, deduplication, leakage and split settings of
`honed data prepare`. Defaults live here and nowhere else."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from honed.config.strict import Strict

PiiType = Literal["email", "phone", "card", "iban", "ip", "national_id", "secret"]
PII_TYPES: tuple[PiiType, ...] = get_args(PiiType)


class CleanConfig(Strict):
    """Text cleaning applied to every string field of a row, and the length rules that drop rows."""

    unicode_form: Literal["NFC", "NFKC", "none"] = Field(
        "NFC",
        description="Unicode normalisation: NFC composes accents (safe); NFKC also folds look-alikes such as "
        "full-width letters and ligatures; none leaves text as it is.",
    )
    strip_control_chars: bool = Field(
        True, description="Remove control and format characters (except newline and tab), e.g. NUL, BOM."
    )
    normalize_whitespace: bool = Field(
        True,
        description="Collapse runs of spaces/tabs inside a line to one space, drop trailing spaces and blank "
        "lines at the ends, keep at most one blank line in a row, and turn every line break into \\n. "
        "Leading indentation is kept (code stays valid).",
    )
    min_chars: int = Field(
        1, ge=0, description="Drop a row whose content text is shorter than this (0 keeps empty rows)."
    )
    max_chars: int | None = Field(
        None, gt=0, description="Drop a row whose content text is longer than this; null: no limit."
    )

    @model_validator(mode="after")
    def _limits_in_order(self) -> CleanConfig:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        return self


class DedupConfig(Strict):
    """Duplicate detection: exact (after normalising case and whitespace) and near (MinHash LSH)."""

    exact: bool = Field(True, description="Drop rows whose normalised content repeats an earlier row.")
    near: bool = Field(
        True, description="Drop rows that are near-duplicates of an earlier row (MinHash LSH)."
    )
    near_threshold: float = Field(
        0.85, gt=0.0, le=1.0, description="Estimated Jaccard similarity of word shingles that counts as near."
    )
    shingle_words: int = Field(3, gt=0, description="Words per shingle for near-duplicate detection.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations (accuracy vs. speed and memory).")
    across_splits: bool = Field(
        True,
        description="Also drop training rows that duplicate (exactly or nearly) a validation or test row; "
        "held-out rows are never dropped for this.",
    )


class LeakageConfig(Strict):
    """Contamination check: n-gram overlap between training rows and held-out or benchmark rows."""

    check: bool = Field(True, description="Compare training rows with the validation and test splits.")
    against: list[str] = Field(
        default_factory=list,
        description="Benchmark files to compare with as well (.jsonl/.csv/.parquet); relative paths are "
        "resolved against the recipe file's folder.",
    )
    fields: list[str] | None = Field(
        None,
        description="Compare only these row fields (e.g. [question]); null: the row's content (the fields "
        "its format or templates use).",
    )
    ngram: int = Field(8, gt=0, description="Words per n-gram (8 as in Llama 2's contamination study).")
    min_overlap: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Flag a training row when at least this fraction of its n-grams occur in a held-out row.",
    )
    action: Literal["report", "drop"] = Field("report", description="Only list flagged rows, or drop them.")


class PiiConfig(Strict):
    """Personal data and secrets: find them in every string field, then redact, drop or only count."""

    action: Literal["redact", "drop", "report", "off"] = Field(
        "redact",
        description="redact: replace each match with a tag such as <EMAIL>; drop: drop the row; report: only "
        "count; off: do not scan.",
    )
    types: list[PiiType] = Field(
        default_factory=lambda: list(PII_TYPES),
        description="Which kinds to look for: email, phone, card (Luhn-checked), iban (checksum-checked), "
        "ip, national_id (US SSN, UK NI number), secret (API keys, tokens, private keys).",
    )

    @field_validator("action", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class SplitConfig(Strict):
    """Deterministic train/validation/test split of the training file."""

    validation_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of training rows (of groups, with group_by) moved to validation; only without "
        "data.validation. data.holdout_fraction is used when this is 0.",
    )
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of training rows moved to test.")
    seed: int = Field(0, description="Seed of the split; the same seed and rows give the same split.")
    stratify_by: str | None = Field(
        None,
        description="A row field whose values keep the same proportions in every split (rows without it form "
        "one stratum of their own).",
    )
    group_by: str | None = Field(
        None,
        description="A row field: rows sharing its value always land in the same split (a row without it is "
        "a group of its own).",
    )

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> SplitConfig:
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError("split.validation_fraction + split.test_fraction must be below 1")
        return self


class PrepareConfig(Strict):
    """`honed data prepare`: clean, deduplicate, scrub and split the data into a versioned dataset folder."""

    output_dir: str = Field(
        "datasets",
        description="Parent folder of prepared datasets (relative to the working directory); each version "
        "is written to <output_dir>/<recipe name>-<content hash>/.",
    )
    clean: CleanConfig = Field(default_factory=CleanConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    leakage: LeakageConfig = Field(default_factory=LeakageConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
