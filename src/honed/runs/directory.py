"""The run directory every run writes, whoever starts it (CLI, API or service):

    runs/<run-id>/ recipe.yaml env.json data/ metrics.jsonl checkpoints/ final/ eval/ summary.json report.html

This module creates it and reads back what a later command (resume, eval, export) needs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honed._version import __version__
from honed.config.load import dump_recipe, load_recipe
from honed.config.schema import Recipe
from honed.errors import ConfigError


def create_run_dir(recipe: Recipe) -> Path:
    """Make a fresh run directory and write the resolved recipe and environment into it."""
    name = recipe.output.run_name or f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(recipe.output.runs_dir) / name
    if (run_dir / "recipe.yaml").exists():
        raise ConfigError(
            f"output.run_name: {run_dir} already holds a run; choose another name, or continue it "
            f"with: honed train --resume {run_dir}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    for key in ("train", "validation"):  # absolute, so the saved recipe works from any directory
        value = getattr(recipe.data, key)
        if value:
            setattr(recipe.data, key, str(Path(value).resolve()))
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
    (run_dir / "env.json").write_text(json.dumps(environment(recipe.train.seed), indent=2))
    return run_dir


def load_run_recipe(
    run_dir: Path, task_files: Sequence[str | Path] = (), overrides: Sequence[str] = ()
) -> Recipe:
    """The resolved recipe a run was started with (with `overrides` applied, if any)."""
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a honed run directory (no recipe.yaml)")
    return load_recipe(path, list(overrides), task_files=task_files)


def environment(seed: int) -> dict[str, Any]:
    """Package versions, git commit, hardware and seed, for reproducing a run."""
    import peft
    import torch
    import transformers

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "honed": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": cuda,
        "seed": seed,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
