"""What a run writes about itself besides its model, and reads back: the data report (data/), each
evaluated system's metrics and predictions (eval/<label>/), the forgetting probe, and small JSON files.

    data/report.json data/dataset.json data/sample.txt
    eval/<label>/metrics.json eval/<label>/predictions.jsonl eval/<label>/probe.json eval/<method>.json

Labels: `BASE` (the base zero-shot), `FEW_SHOT` (the base with in-context examples), `TUNED`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from honed.config.schema import Recipe
from honed.data.versions import data_identity

log = logging.getLogger(__name__)

BASE, FEW_SHOT, TUNED = "base", "few_shot", "tuned"


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_data_report(run_dir: Path, recipe: Recipe, report: dict[str, Any], sample: str) -> None:
    """data/report.json (per split), data/dataset.json (source hashes) and data/sample.txt, and a log line
    per split. Every method writes its data report through here."""
    folder = run_dir / "data"
    folder.mkdir(exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "dataset.json").write_text(json.dumps(_data_sources(recipe), indent=2))
    (folder / "sample.txt").write_text(sample)
    for split, info in report.items():
        log.info(
            "%s data: %d examples from %d rows (%d malformed skipped, %d too long: %s)",
            split,
            info["examples"],
            info["rows_read"],
            info["skipped_bad_rows"],
            info["too_long"],
            info["too_long_action"],
        )


def _data_sources(recipe: Recipe) -> dict[str, Any]:
    """Which data the run trained and validated on: each source's hash and its prepared dataset's hash."""
    sources = {"train": recipe.data.train}
    if recipe.data.validation:
        sources["validation"] = recipe.data.validation
    return data_identity(sources)


def save_eval(run_dir: Path, label: str, metrics: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
    """Write eval/<label>/metrics.json and predictions.jsonl."""
    folder = run_dir / "eval" / label
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with (folder / "predictions.jsonl").open("w") as handle:
        for p in predictions:
            handle.write(json.dumps(p) + "\n")


def load_eval(run_dir: Path, label: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """Read back eval/<label>/, or None if that evaluation has not run."""
    folder = run_dir / "eval" / label
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    return metrics, predictions


def forget_eval(run_dir: Path, label: str) -> None:
    """Remove eval/<label>/metrics.json and probe.json, so that system is scored again."""
    (run_dir / "eval" / label / "metrics.json").unlink(missing_ok=True)
    (run_dir / "eval" / label / "probe.json").unlink(missing_ok=True)


def save_probe(run_dir: Path, label: str, probe: dict[str, Any]) -> None:
    """Write eval/<label>/probe.json (the forgetting probe)."""
    folder = run_dir / "eval" / label
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.json").write_text(json.dumps(probe, indent=2))


def load_probe(run_dir: Path, label: str) -> dict[str, Any] | None:
    """eval/<label>/probe.json (the forgetting probe), or None."""
    return read_json(run_dir / "eval" / label / "probe.json")


def probe_numbers(run_dir: Path, label: str) -> dict[str, float] | None:
    """Only the probe's metrics (not the base answers it keeps)."""
    probe = load_probe(run_dir, label)
    return {k: v for k, v in probe.items() if isinstance(v, float)} if probe else None


def save_method_metrics(run_dir: Path, method: str, found: dict[str, Any]) -> None:
    """Write eval/<method>.json: a method's own metrics on held-out data (DPO rewards, CPT perplexity)."""
    (run_dir / "eval" / f"{method}.json").write_text(json.dumps(found, indent=2))


def load_metrics_log(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl: one object per logged training step, or [] before training has logged."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
