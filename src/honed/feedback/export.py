"""`honed feedback export`: a served run's feedback -> new training files and a recipe that continues it.

Reads the store (`serve.store`) and the old run (its recipe, its training and held-out rows), and writes

    out_dir/ train.jsonl       the old run's training rows (replay, so the new adapter does not forget),
                               then the feedback's SFT examples; chat format, the rows' other fields kept
             validation.jsonl  exactly the old run's held-out rows, in order, chat format, fields kept:
                               the new run is scored on the same rows, so `honed compare OLD NEW` works
             preference.jsonl  chosen/rejected pairs from corrections (the rows `method: dpo` reads)
             report.json       what each stored entry became, and what was dropped and why
             retrain.yaml      the old recipe on these files, continuing the old adapter (lora.init_from)
                               or, for a full fine-tune, starting from its final/model

The old run's training rows come first in train.jsonl so that a recipe scoring `eval.split: train` sees
the same first rows as before; training order is shuffled anyway. What becomes what is `examples`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from honed.config.load import load_recipe, validate_recipe
from honed.config.schema import Recipe
from honed.data.dataset import SplitReport, iter_rows
from honed.errors import ConfigError, DataError
from honed.feedback.examples import ContentText, Reference, Sorted, deduplicate, sort_entries
from honed.runs.directory import load_run_recipe
from honed.serve.store import RATINGS, RequestStore

log = logging.getLogger(__name__)

FILES = ("train.jsonl", "validation.jsonl", "preference.jsonl", "report.json", "retrain.yaml")


def export_feedback(
    store_url: str,
    run_dir: str | Path,
    out_dir: str | Path,
    min_rating: int = 1,
    near_threshold: float = 0.85,
    since_s: float | None = None,
    model: str | None = None,
    overwrite: bool = False,
    task_files: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Write the feedback on the store's answers (those served as `model`, created at or after `since_s`)
    as training data for a new run continuing `run_dir`; return the report (also out_dir/report.json).

    Served answers rated at least `min_rating` (-1, 0 or 1) and every correction become SFT examples;
    corrections also become preference pairs. DataError when nothing is usable.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if min_rating not in RATINGS:
        raise ConfigError(f"min_rating: must be -1, 0 or 1, got {min_rating!r}")
    recipe = _old_recipe(run_dir, task_files)
    _check_out_dir(out_dir, overwrite)
    entries, shown = _read_entries(store_url, since_s, model)
    train_rows = _run_rows(recipe, "train")
    validation_rows = _run_rows(recipe, "validation") if _has_validation(recipe) else []
    references = [Reference(r["location"], "validation", r["row"]["messages"]) for r in validation_rows]
    references += [Reference(r["location"], "train", r["row"]["messages"]) for r in train_rows]
    text = ContentText(recipe.data.prompt_template, recipe.data.completion_template)
    kept = deduplicate(sort_entries(entries, min_rating), references, text, near_threshold)
    if not kept.examples and not kept.pairs:
        raise DataError(_nothing_usable(shown, entries, model, kept.dropped))
    report = {
        "store": shown,
        "run": str(run_dir),
        "model": model,
        "since_s": since_s,
        "min_rating": min_rating,
        "near_threshold": near_threshold,
        **_counts(entries, kept),
        "replay_rows": len(train_rows),
        "validation_rows": len(validation_rows),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:  # with overwrite: no file of an earlier export may outlive it
        (out_dir / name).unlink(missing_ok=True)
    report["files"] = files = {}
    files["train"] = _write_jsonl(
        out_dir / "train.jsonl", [r["row"] for r in train_rows] + [e.row() for e in kept.examples]
    )
    if validation_rows:
        files["validation"] = _write_jsonl(out_dir / "validation.jsonl", [r["row"] for r in validation_rows])
    if kept.pairs:
        files["preference"] = _write_jsonl(out_dir / "preference.jsonl", [p.row() for p in kept.pairs])
    if kept.examples:
        files["retrain"] = write_retrain(out_dir, recipe, run_dir, bool(validation_rows), report, task_files)
    else:
        log.info("no SFT examples (only preference pairs): retrain.yaml not written")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _read_entries(store_url: str, since_s: float | None, model: str | None) -> tuple[list[dict], str]:
    """The store's entries and its URL as shown in messages (password hidden)."""
    store = RequestStore(store_url, create=False)
    try:
        return store.entries(since_s, model), store.shown
    finally:
        store.close()


def _counts(entries: list[dict[str, Any]], kept: Sorted) -> dict[str, Any]:
    """What the report counts: entries, what they became, and what was dropped and why."""
    return {
        "entries": len(entries),
        "rated": sum(entry["feedback"] is not None for entry in entries),
        "by_model": dict(Counter(entry["model"] for entry in entries)),
        "used": {"sft": len(kept.examples), "pairs": len(kept.pairs)},
        "by_kind": dict(Counter(example.target for example in kept.examples)),
        "dropped": dict(sorted(kept.dropped.items())),
        "pairs_dropped": dict(sorted(kept.pairs_dropped.items())),
    }


def _old_recipe(run_dir: Path, task_files: Sequence[str | Path]) -> Recipe:
    """The old run's recipe, refused when its data cannot become chat examples or it has no final model."""
    recipe = load_run_recipe(run_dir, task_files)
    if recipe.method == "cpt":
        raise ConfigError(
            f"{run_dir}: a continued pre-training run (method cpt) trains on raw text; feedback becomes chat "
            "examples, which continue a supervised run (method sft, dpo or distill)"
        )
    final = _final(run_dir, recipe)
    if not final.is_dir():
        raise ConfigError(
            f"{run_dir}: the run has no {final.relative_to(run_dir)} (unfinished? resume it with: "
            f"honed train --resume {run_dir})"
        )
    return recipe


def _final(run_dir: Path, recipe: Recipe) -> Path:
    return run_dir / "final" / ("model" if recipe.adapter == "full" else "adapter")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    taken = [name for name in FILES if (out_dir / name).exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds {', '.join(taken)}; choose another --out or pass --overwrite"
        )


def _has_validation(recipe: Recipe) -> bool:
    return recipe.data.has_validation


def _run_rows(recipe: Recipe, split: str) -> list[dict[str, Any]]:
    """The rows the old run read for `split` (its holdout, row caps and skipped rows as it had them), each
    as a chat row {**fields, "messages"} with its location."""
    rows = []
    for row in iter_rows(recipe.data, split, SplitReport()):
        rows.append({"location": row.location, "row": {**row.fields, "messages": row.messages}})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return str(path)


def _nothing_usable(shown: str, entries: list[dict[str, Any]], model: str | None, dropped: Counter) -> str:
    served = f" served as {model!r}" if model else ""
    if not entries:
        return f"store {shown}: no requests{served}; serve the model and post feedback first"
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items()))
    return (
        f"store {shown}: {len(entries)} requests{served}, none usable ({reasons}); rate answers (rating 1) "
        "or post corrections with POST /v1/feedback"
    )


# ---- the retrain recipe ----


def retrain_recipe(recipe: Recipe, run_dir: Path, has_validation: bool) -> dict[str, Any]:
    """The old recipe (as a raw mapping without defaults) on the exported files: chat rows, no templates or
    holdout, row caps already applied, continuing the old run's adapter or full model; method sft."""
    raw = recipe.model_dump(mode="json")
    raw["name"] = f"{recipe.name}-feedback"
    raw["method"], raw["distill"] = "sft", None
    raw["data"].update(
        train="train.jsonl",
        validation="validation.jsonl" if has_validation else None,
        format="chat",
        prompt_template=None,
        completion_template=None,
        holdout_fraction=None,
        max_train_rows=None,
        max_validation_rows=None,
    )
    if has_validation:
        raw["prepare"]["split"]["validation_fraction"] = 0.0
    raw["output"]["run_name"] = None
    final = str(_final(run_dir, recipe).resolve())
    if recipe.adapter == "full":
        raw["model"].update(base=final, revision=None)
    else:
        raw["lora"]["init_from"] = final
    return validate_recipe(raw, "retrain recipe").model_dump(mode="json", exclude_defaults=True)


def write_retrain(
    out_dir: Path,
    recipe: Recipe,
    run_dir: Path,
    has_validation: bool,
    report: dict[str, Any],
    task_files: Sequence[str | Path] = (),
) -> str:
    """Write out_dir/retrain.yaml with a header saying what it is and what to run next; check it loads."""
    path = out_dir / "retrain.yaml"
    start = "its final/model as model.base" if recipe.adapter == "full" else "its adapter (lora.init_from)"
    header = [
        f"Retrain {run_dir} on its feedback: written by `honed feedback export` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        f"train.jsonl: {report['used']['sft']} feedback examples after {report['replay_rows']} rows of the "
        f"old run's training data (replay); validation.jsonl: the old run's {report['validation_rows']} "
        f"held-out rows. Training starts from {start}.",
        "Next:",
        f"  honed train {path}",
        f"  honed compare {run_dir} NEW_RUN      # NEW_RUN: the run directory `honed train` printed",
        "Serve NEW_RUN only if the comparison shows it is better: honed serve NEW_RUN",
    ]
    body = yaml.safe_dump(retrain_recipe(recipe, run_dir, has_validation), sort_keys=False)
    path.write_text("".join(f"# {line}\n" for line in header) + "\n" + body, encoding="utf-8")
    load_recipe(path, task_files=task_files)  # what honed train will do: a mistake here is honed's bug
    return str(path)


# ---- stats ----


def feedback_stats(store_url: str) -> dict[str, Any]:
    """Requests and their latest feedback in the store, per model: requests, rated, corrections, and
    how many got each rating ("-1", "0", "1")."""
    store = RequestStore(store_url, create=False)
    try:
        entries, counts, shown = store.entries(), store.count(), store.shown
    finally:
        store.close()
    models: dict[str, dict[str, Any]] = {}
    for entry in entries:
        stats = models.setdefault(
            entry["model"],
            {"requests": 0, "rated": 0, "corrections": 0, "ratings": {str(r): 0 for r in RATINGS}},
        )
        stats["requests"] += 1
        feedback = entry["feedback"]
        if feedback is not None:
            stats["rated"] += 1
            stats["ratings"][str(feedback["rating"])] += 1
            stats["corrections"] += feedback["correction"] is not None
    return {"store": shown, **counts, "models": dict(sorted(models.items()))}
