"""honed: fine-tune a small open-weight model into a specialist on your own data, on your own machines.

The public Python API lives here; the CLI calls exactly these functions. Each name is imported on first
use (heavy imports such as torch happen then), so `import honed` and `honed --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from honed._version import __version__

# public name -> module that defines it
_API = {
    "load_recipe": "honed.config.load",
    "validate": "honed.methods.registry",
    "finetune": "honed.pipeline.finetune",
    "evaluate_run": "honed.evaluation.run",
    "export_merged": "honed.export.merged",
    "export_gguf": "honed.export.gguf",
    "run_demo": "honed.demo.run",
    "create_app": "honed.serve.app",
    "run_server": "honed.serve.app",
    "export_feedback": "honed.feedback.export",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'honed' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
