"""The one training loop every method shares: batches in, optimizer steps out.

It owns the optimizer, the learning-rate schedule, gradient accumulation and clipping, validation loss,
metrics.jsonl, progress, atomic checkpoints, exact resume, signal handling and the non-finite-loss stop.
It does not know how a batch is built or what the loss is: the caller passes `loss_fn` (returning a loss
sum and its token count) and `collate`, which is what lets sft, cpt, dpo and distill share it.

The loop's contract with a method: examples have `num_tokens` (for length grouping); a collated batch
has `labels` (its labelled positions are the loss's units) or, when the loss is not per token (DPO's is
per pair), an integer `loss_units`; the step's loss is the sum over micro-batches divided by the units
of the whole step, so gradient accumulation stays exact for every method.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from honed.config.schema import TrainConfig
from honed.data.tokenize import Encoded
from honed.errors import TrainingError, TrainingInterrupted
from honed.models.nll import batch_tokens
from honed.training.batching import epoch_steps, micro_batches, steps_per_epoch
from honed.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_parameters,
)

if TYPE_CHECKING:
    from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, int]]
Collate = Callable[[list[Encoded]], dict]
# Called after each validation with (step, val_loss); `honed tune-hp` prunes trials through it.
OnValidation = Callable[[int, float], None]
# What `signal.signal` takes and returns: a handler, SIG_DFL / SIG_IGN, or None (set outside Python).
_Handler = Callable[[int, FrameType | None], Any] | int | None


@dataclass
class LoopResult:
    """What a finished loop reports."""

    steps: int
    wall_s: float
    tokens_per_s: float
    final_train_loss: float | None
    final_val_loss: float | None


@dataclass
class _Tally:
    """What the loop has done so far: its latest losses, the tokens trained, and when it started."""

    t0: float
    tokens: int = 0
    train_loss: float | None = None
    val_loss: float | None = None


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine/linear/constant."""
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.lr_warmup_steps) / max(1, total_steps - cfg.lr_warmup_steps)
    if cfg.lr_schedule == "linear":
        return cfg.lr * (1.0 - progress)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def total_steps(num_examples: int, cfg: TrainConfig) -> int:
    """Optimizer steps the run will take."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_epoch = steps_per_epoch(num_examples, cfg.batch_size * cfg.grad_accum_steps)
    return max(1, math.ceil(cfg.epochs * per_epoch))


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, _Handler] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """Append-only metrics.jsonl; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        if resume_step > 0 and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def evaluate_loss(
    model: torch.nn.Module, examples: list[Encoded], loss_fn: LossFn, collate: Collate, batch_size: int
) -> float:
    """Mean token loss over `examples` (no gradients, dropout off)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            loss_sum, n = loss_fn(model, collate(examples[start : start + batch_size]))
            total, count = total + float(loss_sum), count + n
    model.train(was_training)
    return total / max(1, count)


def train_loop(
    model: torch.nn.Module,
    train: list[Encoded],
    validation: list[Encoded] | None,
    cfg: TrainConfig,
    run_dir: Path,
    loss_fn: LossFn,
    collate: Collate,
    resume: bool = False,
    progress: bool = True,
    on_validation: OnValidation | None = None,
) -> LoopResult:
    """Train `model` in place; write metrics.jsonl and checkpoints/ under `run_dir`."""
    params = list(trainable_parameters(model).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = total_steps(len(train), cfg)
    ckpt_dir = run_dir / "checkpoints"
    start = _resume(ckpt_dir, model, optimizer) if resume else 0
    metrics = MetricsLog(run_dir / "metrics.jsonl", start)
    lengths = [e.num_tokens for e in train]
    step_size = cfg.batch_size * cfg.grad_accum_steps
    per_epoch = steps_per_epoch(len(train), step_size)
    grouped = cfg.group_by_length is True  # `auto` is decided by speed.resolve; unresolved it counts as off
    tally = _Tally(t0=time.perf_counter())
    model.train()
    bar = _progress(steps, start, progress)
    with _StopFlag() as stop:
        for step in range(start, steps):
            epoch, index = divmod(step, per_epoch)
            chosen = epoch_steps(lengths, step_size, cfg.seed, epoch, grouped)[index]
            loss, tokens = optimizer_step(
                model, optimizer, params, [train[i] for i in chosen], step, steps, cfg, loss_fn, collate
            )
            tally.train_loss, tally.tokens = loss, tally.tokens + tokens
            row = _log_row(step + 1, loss, optimizer, tally)
            if validation and _due(step + 1, cfg.eval_every_steps, steps):
                tally.val_loss = row["val_loss"] = evaluate_loss(
                    model, validation[: cfg.max_eval_loss_rows], loss_fn, collate, cfg.batch_size
                )
                if on_validation is not None:
                    on_validation(step + 1, row["val_loss"])
            if (step + 1) % cfg.log_every_steps == 0 or "val_loss" in row or step + 1 == steps:
                metrics.write(row)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            received = stop.signal if step + 1 < steps else None  # on the last step: just finish
            if received is not None or _due(step + 1, cfg.checkpoint_every_steps, steps):
                save_checkpoint(ckpt_dir, step + 1, model, optimizer)
            if received is not None:
                bar.close()
                name = signal.Signals(received).name
                raise TrainingInterrupted(
                    f"stopped by {name} after step {step + 1}/{steps}; checkpoint saved. "
                    f"Resume with: honed train --resume {run_dir}"
                )
    bar.close()
    wall = time.perf_counter() - tally.t0
    return LoopResult(steps, wall, tally.tokens / max(wall, 1e-9), tally.train_loss, tally.val_loss)


def _resume(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise TrainingError(f"{ckpt_dir}: no checkpoint to resume from; start the run again without --resume")
    step = load_checkpoint(path, model, optimizer)
    log.info("resuming from %s (step %d)", path, step)
    return step


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    examples: list[Encoded],
    step: int,
    steps: int,
    cfg: TrainConfig,
    loss_fn: LossFn,
    collate: Collate,
) -> tuple[float, int]:
    """One optimizer step over `examples` split into micro-batches; returns (mean loss, real tokens)."""
    lr = lr_at(step, steps, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batches = [
        collate([examples[i] for i in mb]) for mb in micro_batches(list(range(len(examples))), cfg.batch_size)
    ]
    label_count = sum(loss_units(b) for b in batches)
    total = 0.0
    for batch in batches:
        loss_sum, _ = loss_fn(model, batch)
        (loss_sum / max(1, label_count)).backward()
        total += float(loss_sum.detach())
    loss = total / max(1, label_count)
    if not math.isfinite(loss):
        raise TrainingError(
            f"loss became {loss} at step {step + 1}; lower train.lr (now {cfg.lr}), keep "
            "train.max_grad_norm on, or check the data for empty answers"
        )
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, sum(batch_tokens(b) for b in batches)


def loss_units(batch: dict[str, Any]) -> int:
    """What a batch's loss sum is a sum over: `loss_units` when the method says, else labelled tokens."""
    if "loss_units" in batch:
        return int(batch["loss_units"])
    return int((batch["labels"][:, 1:] != -100).sum())


def _log_row(step: int, loss: float, optimizer: torch.optim.Optimizer, tally: _Tally) -> dict[str, Any]:
    elapsed = time.perf_counter() - tally.t0
    return {
        "step": step,
        "loss": round(loss, 6),
        "lr": optimizer.param_groups[0]["lr"],
        "tokens_per_s": round(tally.tokens / max(elapsed, 1e-9), 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _due(step: int, every: int | None, last: int) -> bool:
    return step == last or (every is not None and step % every == 0)


def _progress(total: int, initial: int, enabled: bool) -> tqdm:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True
    )
