"""honed: fine-tune a small open-weight model into a specialist on your own data, on your own machines.

The public Python API lives here; the CLI calls exactly these functions. Heavy imports (torch,
transformers) happen inside them so that `import honed` and `honed --help` stay fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_recipe", "validate", "finetune", "evaluate_run", "export_merged", "run_demo"]


def __getattr__(name: str):
    # Lazy public API: each name is imported on first use, keeping `import honed` cheap.
    if name == "load_recipe":
        from honed.config.load import load_recipe

        return load_recipe
    if name == "validate":
        from honed.data.dataset import validate

        return validate
    if name == "finetune":
        from honed.training.sft import finetune

        return finetune
    if name == "evaluate_run":
        from honed.evaluation.evaluate import evaluate_run

        return evaluate_run
    if name == "export_merged":
        from honed.export.merged import export_merged

        return export_merged
    if name == "run_demo":
        from honed.demo.run import run_demo

        return run_demo
    raise AttributeError(f"module 'honed' has no attribute {name!r}")
