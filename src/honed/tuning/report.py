"""The outcome of a hyperparameter search (`honed tune-hp`) and how it reads: the trial records, the
result, and the Markdown table printed by the CLI and written to tune.md. No Optuna here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrialRecord:
    """One trial as the result table shows it; `value` is the objective of a complete trial, else None."""

    number: int
    params: dict[str, Any]
    value: float | None
    state: str  # complete | pruned | failed | running
    wall_s: float | None
    run_dir: str | None
    pruned_at_step: int | None = None
    error: str | None = None


@dataclass
class TuneResult:
    """A search's outcome: every trial of the study (earlier runs included) and the best complete one."""

    output: Path
    objective: str  # val_loss | task
    metric: str  # val_loss, or the task's primary metric
    direction: str  # minimize | maximize
    space: dict[str, dict[str, Any]]
    trials: list[TrialRecord] = field(default_factory=list)
    best: TrialRecord | None = None
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["output"] = str(self.output)
        return found


def render_markdown(result: TuneResult) -> str:
    """tune.md: a sentence on the search, the trial table and any failures."""
    states = [r.state for r in result.trials]
    counts = ", ".join(
        f"{states.count(s)} {s}" for s in ("complete", "pruned", "failed", "running") if s in states
    )
    goal = "minimise" if result.direction == "minimize" else "maximise"
    lines = [f"# honed tune-hp: {result.output.name}", ""]
    lines.append(f"Objective: {goal} {result.metric}. {len(result.trials)} trials ({counts or 'none'}).")
    if result.best is not None:
        lines.append(
            f"Best: trial {result.best.number} ({result.metric} {result.best.value:.4f}); "
            "train it with `honed train best.yaml`."
        )
    lines += ["", render_table(result)]
    failed = [r for r in result.trials if r.error]
    if failed:
        lines += ["", "Failed trials:", ""] + [f"- trial {r.number}: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def render_table(result: TuneResult) -> str:
    """The trial table in Markdown: trial, each parameter, the objective, state, wall seconds."""
    keys = list(result.space)
    header = ["trial", *keys, result.metric, "state", "wall_s"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---:"] * (len(keys) + 2) + ["---", "---:"]) + "|",
    ]
    for r in result.trials:
        state = f"pruned at step {r.pruned_at_step}" if r.pruned_at_step is not None else r.state
        cells = [
            str(r.number),
            *(fmt(r.params.get(k)) for k in keys),
            "" if r.value is None else f"{r.value:.4f}",
            state + (" (best)" if result.best is not None and r.number == result.best.number else ""),
            "" if r.wall_s is None else f"{r.wall_s:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt(value: Any) -> str:
    """A parameter value as the table shows it (floats to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
