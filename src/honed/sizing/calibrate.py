"""Measure what the estimate predicts: real optimizer steps of a recipe on the loaded model.

`calibrate` runs a few steps of the shared loop's `optimizer_step` (the first on the largest micro-batch
the data can form, the rest on ordinary ones) and measures the activation bytes autograd saved, the
process's peak memory while stepping (resident set on CPU, sampled; torch's peak allocation plus the
context on CUDA), the step time and the throughput in FLOP/s. The caller throws the model away after:
the steps change its weights.

Also here: this device's matmul peak (the uncalibrated throughput is a share of it) and its free memory.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from typing import Any

import torch

from honed.config.schema import Recipe
from honed.data.tokenize import Encoded
from honed.models.registry import Architecture
from honed.sizing.estimate import Workload, step_flops, step_shape
from honed.sizing.footprint import counting_saved_bytes
from honed.training.loop import LossFn, optimizer_step
from honed.training.speed import accelerated, batching, resolve

_SHAPES = [(2048, 2048, 2048), (2048, 576, 1536), (2048, 1536, 576), (1024, 1024, 1024)]


def matmul_peak_flops(device: torch.device | str) -> float:
    """Best float32 (bfloat16 on CUDA) matmul FLOP/s over a few shapes (about a second on CPU)."""
    device = torch.device(device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    best = 0.0
    for n, k, m in _SHAPES:
        a = torch.randn(n, k, dtype=dtype, device=device)
        b = torch.randn(k, m, dtype=dtype, device=device)
        a @ b
        reps = 8 if device.type == "cpu" else 200
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n * k * m * reps / (time.perf_counter() - start))
    return best


def available_bytes(device: torch.device | str) -> int:
    """Memory a new run can still take: free GPU memory, or the system's available memory on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calibrate(
    model: torch.nn.Module,
    examples: list[Encoded],
    recipe: Recipe,
    arch: Architecture,
    device: torch.device,
    steps: int = 3,
) -> dict[str, Any]:
    """Run `steps` optimizer steps of `recipe` on `model` (already adapted, on `device`); measure them."""
    cfg = resolve(recipe.train, device).model_copy(update={"max_steps": steps})
    batcher, loss_fn = batching(cfg, 0, device)
    per_step = cfg.batch_size * cfg.grad_accum_steps
    chosen = _step_examples(examples, cfg.batch_size, per_step, steps, recipe.train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    times, flops = [], []
    with accelerated(model, cfg, device), _PeakMemory(device) as peak:
        saved = _saved_bytes_of(model, batcher([examples[i] for i in chosen[0][: cfg.batch_size]]), loss_fn)
        for step, indices in enumerate(chosen):
            batch = [examples[i] for i in indices]
            start = time.perf_counter()
            optimizer_step(model, optimizer, params, batch, step, steps, cfg, loss_fn, batcher)
            _sync(device)
            times.append(time.perf_counter() - start)
            workload = Workload.from_examples(batch, cfg.batch_size, bool(cfg.packing))
            shape = step_shape(recipe, device.type, workload.labelled_fraction)
            flops.append(step_flops(arch, recipe, workload, shape) * len(batch))
    timed = slice(1, None) if steps > 1 else slice(None)  # the first step pays one-off costs
    peak_positions = Workload.from_examples(examples, cfg.batch_size, bool(cfg.packing)).peak_positions
    return {
        "steps": steps,
        "step_s": times,
        "throughput_flops": sum(flops[timed]) / sum(times[timed]),
        "saved_activation_bytes": saved,
        "peak_positions": peak_positions,
        "activation_bytes_per_token": saved / peak_positions,
        "peak_memory_bytes": peak.bytes,
    }


def _step_examples(
    examples: list[Encoded], batch_size: int, per_step: int, steps: int, seed: int
) -> list[list[int]]:
    """Example indices per step: the first step starts with the largest micro-batch (the batch_size
    longest examples), the others are random draws."""
    rng = random.Random(seed)
    longest = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))[:batch_size]
    rest = [rng.randrange(len(examples)) for _ in range(per_step * steps)]
    first = (longest + rest)[:per_step]
    return [first] + [rest[i * per_step : (i + 1) * per_step] for i in range(1, steps)]


def _saved_bytes_of(model: torch.nn.Module, batch: dict[str, Any], loss_fn: LossFn) -> int:
    """Activation bytes autograd saves in the forward pass of one micro-batch (no step taken)."""
    with counting_saved_bytes(model) as counter:
        loss, _ = loss_fn(model, batch)
    del loss
    gc.collect()  # the counting hook ties saved outputs to their graph in a cycle: free it now
    return counter.bytes


class _PeakMemory:
    """The process's peak memory while the block runs: torch's peak allocation plus the context on CUDA;
    on CPU the resident set, sampled every 2 ms by a thread (ru_maxrss would include model loading)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes = device, 0
        self._done = threading.Event()

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil

        process = psutil.Process()

        def sample() -> None:
            while not self._done.is_set():
                self.bytes = max(self.bytes, process.memory_info().rss)
                self._done.wait(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            self.bytes = (
                torch.cuda.max_memory_allocated(self.device)
                + (total - free)
                - torch.cuda.memory_reserved(self.device)
            )
            return
        self._done.set()
        self._thread.join()
