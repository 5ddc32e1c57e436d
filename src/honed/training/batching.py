"""Deterministic batch order: which examples form each optimizer step and each micro-batch.

The order depends only on (seed, epoch), so a resumed run sees exactly the batches an uninterrupted run
would. Examples are first grouped per optimizer step (batch_size x grad_accum_steps), then split into
micro-batches, so 8 x 1 and 2 x 4 put the same examples in the same step. With `group_by_length`,
examples of similar length share a step, which cuts padding.
"""

from __future__ import annotations

import math
import random

# How many steps' worth of examples are sorted by length together: large enough to cut padding, small
# enough that the order stays random across the epoch.
_LENGTH_WINDOW_STEPS = 32


def steps_per_epoch(num_examples: int, step_size: int) -> int:
    """Optimizer steps in one pass (the last step may hold fewer examples)."""
    return math.ceil(num_examples / step_size)


def epoch_steps(
    lengths: list[int], step_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """Example indices of every optimizer step of `epoch`."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = step_size * _LENGTH_WINDOW_STEPS
        order = [
            i
            for s in range(0, len(order), window)
            for i in sorted(order[s : s + window], key=lambda i: lengths[i])
        ]
    steps = [order[s : s + step_size] for s in range(0, len(order), step_size)]
    if group_by_length:
        rng.shuffle(steps)  # sorted windows would otherwise run short-to-long
    return steps


def micro_batches(step: list[int], batch_size: int) -> list[list[int]]:
    """Split one optimizer step's examples into micro-batches of at most `batch_size`."""
    return [step[s : s + batch_size] for s in range(0, len(step), batch_size)]
