"""The training methods by name: the explicit table a recipe's `method` is looked up in (a recipe may arrive
over HTTP and must never name an import path), and `validate`, which checks a recipe's data the way its
method will read it.

The table's type is `dict[str, Method]`, so mypy checks every method module against the protocol here.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from honed.config.schema import Recipe
from honed.methods import cpt, distill, dpo, sft
from honed.methods.base import Method
from honed.models.load import load_tokenizer, resolve_base

METHODS: dict[str, Method] = {"sft": sft, "cpt": cpt, "dpo": dpo, "distill": distill}


def get_method(name: str) -> Method:
    """The method `name` (a key of METHODS; the recipe schema only admits those)."""
    return METHODS[name]


def validate(recipe: Recipe, tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, Any]:
    """Check a recipe's data without training: read every row and tokenize it as the recipe's method
    will; return the data report per split (`honed validate`)."""
    if tokenizer is None:
        folder = resolve_base(recipe.model.base, recipe.model.revision).folder
        tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    check_split = get_method(recipe.method).check_split
    return {split: check_split(recipe, tokenizer, split) for split in recipe.data.splits}
