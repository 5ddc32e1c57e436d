"""A run's summary: gather its files (recipe, data report, training result, every system's metrics, the
probe, the method's own metrics, the paired comparison) into summary.json, comparison.* and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from honed.config.schema import Recipe
from honed.evaluation.evaluate import EvalTask
from honed.evaluation.report import write_report
from honed.evaluation.systems import run_comparison
from honed.runs.results import BASE, FEW_SHOT, TUNED, load_eval, load_metrics_log, probe_numbers, read_json


def write_summary(run_dir: Path, recipe: Recipe, task: EvalTask) -> dict[str, Any]:
    """Gather the run's files into summary.json, comparison.* and report.html; return the summary."""
    systems = {label: load_eval(run_dir, label) for label in (BASE, FEW_SHOT, TUNED)}
    tuned = systems[TUNED]
    summary = {
        "run_id": run_dir.name,
        "recipe": recipe.model_dump(mode="json"),
        "data": read_json(run_dir / "data" / "report.json"),
        "dataset": read_json(run_dir / "data" / "dataset.json"),
        "train": read_json(run_dir / "train.json"),
        "eval": {
            "task": recipe.eval.task,
            "rows": len(tuned[1]) if tuned else None,
            **{label: found[0] if found else None for label, found in systems.items()},
            "probe": {label: probe_numbers(run_dir, label) for label in (BASE, TUNED)},
            recipe.method: read_json(run_dir / "eval" / f"{recipe.method}.json"),
        },
        "comparison": run_comparison(run_dir, recipe, task),
    }
    base = systems[BASE]
    metrics = load_metrics_log(run_dir)
    write_report(run_dir, summary, metrics, base[1] if base else None, tuned[1] if tuned else None)
    return summary
