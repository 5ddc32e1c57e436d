"""Atomic, resumable checkpoints: trainable weights, AdamW state, RNG states and the step, in safetensors.

A checkpoint is written to a temporary folder and renamed into place, so a crash mid-write never leaves a
checkpoint that looks complete. Only the trainable parameters are saved (for LoRA, the adapter), and the
optimizer's tensors go to safetensors too: nothing is pickled.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from honed.errors import TrainingError

KEEP_LAST = 2


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimizer updates, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Path:
    """Write checkpoints/step-N atomically and prune older ones; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    params = trainable_parameters(model)
    save_file(
        {name: p.detach().cpu().contiguous() for name, p in params.items()}, staging / "trainable.safetensors"
    )
    tensors, groups = _optimizer_tensors(optimizer, list(params.values()))
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, staging / "optimizer.safetensors")
    state = {
        "step": step,
        "param_names": list(params),
        "param_groups": groups,
        "rng_python": _jsonable(random.getstate()),
    }
    (staging / "state.json").write_text(json.dumps(state))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    for old in sorted(folder.glob("step-*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, if any."""
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore weights, optimizer and RNG states from a checkpoint; return its step."""
    state = json.loads((path / "state.json").read_text())
    params = trainable_parameters(model)
    if list(params) != state["param_names"]:
        raise TrainingError(
            f"{path}: checkpoint does not match this model's trainable parameters "
            "(was the recipe's model or adapter changed?)"
        )
    weights = load_file(path / "trainable.safetensors")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    tensors = load_file(path / "optimizer.safetensors")
    optimizer.load_state_dict(_optimizer_state(tensors, state["param_groups"], len(params)))
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate(_tupled(state["rng_python"]))
    return int(state["step"])


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{index}.{key}"] = tensor.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _optimizer_state(
    tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]], num_params: int
) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("state."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = tensor
    return {"state": state, "param_groups": groups}


def _jsonable(value: Any) -> Any:
    """`random.getstate()`'s nested tuples as JSON lists."""
    return [_jsonable(v) for v in value] if isinstance(value, tuple | list) else value


def _tupled(value: Any) -> Any:
    """The inverse of `_jsonable`: lists back to the tuples `random.setstate` takes."""
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
