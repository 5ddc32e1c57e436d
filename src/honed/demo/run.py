"""`honed demo`: the whole path on the embedded model, on data honed writes itself.

Writes the coffee-shop demo dataset, then runs the demo recipe: base evaluation -> LoRA fine-tune ->
tuned evaluation -> report. Nothing is downloaded; everything runs on CPU in minutes.
"""

from __future__ import annotations

from pathlib import Path

from honed.config.load import load_recipe
from honed.demo.data import demo_recipe_dict, write_demo_data
from honed.pipeline.finetune import finetune


def run_demo(
    runs_dir: str | Path = "runs", overrides: list[str] | None = None, progress: bool = True
) -> Path:
    """Generate the demo data under `runs_dir`, fine-tune and evaluate; return the run directory."""
    data_dir = Path(runs_dir) / "demo-data"
    write_demo_data(data_dir)
    recipe = load_recipe(
        base=demo_recipe_dict(data_dir), overrides=[f"output.runs_dir={runs_dir}", *(overrides or [])]
    )
    return finetune(recipe, progress=progress)
