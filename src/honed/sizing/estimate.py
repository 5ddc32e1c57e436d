"""Predict a training run's peak memory and time before it starts, and whether it fits this machine.

Peak memory is the sum of named parts:
- weights (parameters x dtype bytes; qlora: the decoder's linear weights in 4-bit NF4), gradients and
  AdamW's two moments for the trainable parameters;
- saved activations: bytes per token (sizing/footprint.py, measured on miniatures of the model's own
  architecture through honed's real step) x the tokens of the largest micro-batch;
- transient memory of backward and the loss (activation gradients of one layer, a chunk of logits);
- the runtime: the Python process with torch and transformers loaded (CPU), or the CUDA context (GPU);
- the allocator: memory freed by one micro-batch and kept by the allocator for the next. On CPU, glibc's
  malloc keeps it resident (the activations are many 1-4 MB tensors, below its mmap threshold), so peak
  RSS is far above what the tensors need; measured as a multiple of the activations.

Time per step is the step's floating-point operations (linear layers, attention, the output projection at
labelled positions only, LoRA's extra matmuls, checkpointing's recompute) over the throughput this device
reaches: by default this machine's measured matmul peak x the utilisation honed's loop reaches, and after
`calibrate` the throughput measured in real steps of this recipe.

`cheapest_fit` tries the changes that would fit a run that does not: first those that keep the result the
same (gradient checkpointing, a smaller micro-batch with more accumulation), then those that change it
(LoRA instead of full, a shorter max_seq_len), cheapest predicted time first.

This module knows nothing about loading models (models/) or running steps (sizing/calibrate.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from honed.config.load import apply_override
from honed.config.schema import Recipe
from honed.data.tokenize import Encoded
from honed.models.quantize import nf4_bytes
from honed.models.registry import Architecture, param_count
from honed.sizing.footprint import Profile, StepShape, step_profile
from honed.training.speed import uses_packing

GIB = 1024**3
# Share of the matmul peak honed's loop reaches, before calibration: measured 49-53% on CPU for LoRA on
# SmolLM2-135M (bench/train_vs_trl.py); GPUs at these small sizes reach less.
DEFAULT_UTILISATION = {"cpu": 0.45, "cuda": 0.25}
# Resident memory of a process that has imported torch, transformers and peft (measured: 380 MB on
# Linux CPU), and the CUDA context a GPU process holds outside torch's allocator.
RUNTIME_BYTES = {"cpu": 400 * 1024**2, "cuda": 600 * 1024**2}
# Python lists of ints hold each example's ids and labels: about 2 x 36 bytes per token.
DATA_BYTES_PER_TOKEN = 72
# Freed memory the allocator keeps resident, as a multiple of what one micro-batch's forward and backward
# allocate (the activations without checkpointing, plus backward's working set). CPU (glibc malloc):
# 2.1-2.5x measured with real steps of LoRA on SmolLM2-135M (batch 2 and 8, with and without
# checkpointing) and Gemma 3 270M, 1.5x for full fine-tuning (docs/selection.md). CUDA's caching
# allocator: about 0.2x, not measured by honed yet.
ALLOCATOR_RETENTION = {"cpu": 2.2, "cuda": 0.2}
# Keep this share of the available memory free (allocator slack, other processes).
HEADROOM = 0.9
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Workload:
    """The training data as the estimate sees it."""

    examples: int
    tokens: int  # real tokens over the split
    labelled_tokens: int
    longest: int  # tokens of the longest example
    peak_positions: int  # positions of the largest micro-batch (packed: the batch_size longest examples)

    @classmethod
    def from_examples(cls, examples: list[Encoded], batch_size: int, packing: bool) -> Workload:
        lengths = sorted((len(e.input_ids) for e in examples), reverse=True)
        peak = sum(lengths[:batch_size]) if packing else batch_size * lengths[0]
        labelled = sum(e.num_labels for e in examples)
        return cls(len(examples), sum(lengths), labelled, lengths[0], peak)

    @property
    def labelled_fraction(self) -> float:
        return self.labelled_tokens / max(1, self.tokens)

    @property
    def mean_length(self) -> float:
        return self.tokens / max(1, self.examples)


@dataclass(frozen=True)
class Memory:
    """Predicted peak memory, in bytes, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    transient: int
    runtime: int
    allocator: int = 0

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


@dataclass
class Estimate:
    """What a recipe's training run will need on a device, and whether that device has it."""

    device: str
    dtype: str
    params: int
    trainable: int
    memory: Memory
    activation_bytes_per_token: float
    flops_per_step: float
    tokens_per_step: float
    steps: int
    throughput_flops: float | None  # achieved FLOP/s assumed (or measured by calibration)
    available_bytes: int | None
    calibrated: dict[str, Any] = field(default_factory=dict)

    @property
    def step_s(self) -> float | None:
        return self.flops_per_step / self.throughput_flops if self.throughput_flops else None

    @property
    def train_s(self) -> float | None:
        return self.step_s * self.steps if self.step_s is not None else None

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.memory.total <= HEADROOM * self.available_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "params": self.params,
            "trainable_params": self.trainable,
            "memory_bytes": self.memory.as_dict(),
            "activation_bytes_per_token": round(self.activation_bytes_per_token, 1),
            "flops_per_step": self.flops_per_step,
            "tokens_per_step": round(self.tokens_per_step, 1),
            "steps": self.steps,
            "step_s": self.step_s,
            "train_s": self.train_s,
            "throughput_gflops": self.throughput_flops / 1e9 if self.throughput_flops else None,
            "available_bytes": self.available_bytes,
            "fits": self.fits,
            "calibrated": self.calibrated,
        }


def step_shape(recipe: Recipe, device: str, labelled_fraction: float) -> StepShape:
    """The settings of `recipe` that decide what a training step saves, on `device` (cpu or cuda)."""
    targets = recipe.lora.target_modules
    return StepShape(
        adapter=recipe.adapter,
        lora_r=recipe.lora.r,
        lora_dropout=recipe.lora.dropout,
        lora_targets=targets if isinstance(targets, str) else tuple(targets),
        use_dora=recipe.lora.use_dora,
        packing=_packing(recipe, device),
        gradient_checkpointing=recipe.train.gradient_checkpointing,
        dtype=dtype_name(recipe, device),
        fused_dropout=device == "cpu",
        labelled_fraction=round(labelled_fraction, 2),
    )


def dtype_name(recipe: Recipe, device: str) -> str:
    """The training dtype: float32 on CPU, bfloat16 on CUDA, unless the recipe says."""
    if recipe.model.dtype != "auto":
        return recipe.model.dtype
    return "bfloat16" if device == "cuda" else "float32"


def _packing(recipe: Recipe, device: str) -> bool:
    """Whether `recipe` trains on packed rows on `device`: the loop's own rule (training/speed.py)."""
    import torch

    return uses_packing(recipe.train, torch.device(device))


def estimate(
    arch: Architecture,
    config: dict[str, Any],
    recipe: Recipe,
    workload: Workload,
    device: str = "cpu",
    throughput_flops: float | None = None,
    available_bytes: int | None = None,
    profiles: dict[StepShape, Profile] | None = None,
) -> Estimate:
    """Predict peak memory and time per step of `recipe` on `device` for a model of `arch`.

    `config` is the model's config.json (its architecture class is what the miniatures are built from);
    `profiles` caches measured step profiles between calls (cheapest_fit makes several).
    """
    profiles = {} if profiles is None else profiles
    shape = step_shape(recipe, device, workload.labelled_fraction)
    per_token = _activation_bytes_per_token(arch, config, shape, workload, profiles)
    churn = per_token  # what a micro-batch allocates in all: with checkpointing, the plain step's activations
    if shape.gradient_checkpointing:
        plain = replace(shape, gradient_checkpointing=False)
        churn = _activation_bytes_per_token(arch, config, plain, workload, profiles)
    dtype_bytes = 2 if shape.dtype in ("bfloat16", "float16") else 4
    params = param_count(arch)
    adapter = recipe.adapter in ("lora", "qlora")  # qlora trains the same adapter, on a 4-bit base
    trainable = lora_params(arch, recipe) if adapter else params
    state_bytes = 4 if adapter else dtype_bytes  # PEFT keeps adapters in float32
    activations = int(per_token * workload.peak_positions)
    transient = _transient_bytes(arch, recipe, workload, dtype_bytes)
    memory = Memory(
        weights=_weight_bytes(arch, recipe, params, dtype_bytes),
        gradients=trainable * state_bytes,
        optimizer=2 * trainable * state_bytes,
        activations=activations,
        transient=transient,
        runtime=RUNTIME_BYTES.get(device, 0)
        + (DATA_BYTES_PER_TOKEN * workload.tokens if device == "cpu" else 0),
        allocator=int(ALLOCATOR_RETENTION.get(device, 0.0) * (churn * workload.peak_positions + transient)),
    )
    step = recipe.train.batch_size * recipe.train.grad_accum_steps
    steps = recipe.train.max_steps or max(
        1, math.ceil(recipe.train.epochs * math.ceil(workload.examples / step))
    )
    tokens_per_step = workload.mean_length * step
    return Estimate(
        device=device,
        dtype=shape.dtype,
        params=params,
        trainable=trainable,
        memory=memory,
        activation_bytes_per_token=per_token,
        flops_per_step=step_flops(arch, recipe, workload, shape) * step,
        tokens_per_step=tokens_per_step,
        steps=steps,
        throughput_flops=throughput_flops,
        available_bytes=available_bytes,
    )


def _weight_bytes(arch: Architecture, recipe: Recipe, params: int, dtype_bytes: int) -> int:
    """The base weights: all in the training dtype; for qlora the decoder's linear weights in NF4 (about
    0.52 bytes per parameter, models/quantize.py), embeddings, norms and lm_head in the dtype."""
    if recipe.adapter != "qlora":
        return params * dtype_bytes
    shapes = target_shapes(arch, "all-linear")
    linear = arch.layers * sum(n_in * n_out for n_in, n_out in shapes)
    return (params - linear) * dtype_bytes + arch.layers * sum(nf4_bytes(i * o) for i, o in shapes)


def _activation_bytes_per_token(
    arch: Architecture,
    config: dict[str, Any],
    shape: StepShape,
    workload: Workload,
    profiles: dict[StepShape, Profile],
) -> float:
    """Saved bytes per position of the peak micro-batch (with checkpointing: plus one layer recomputed)."""
    head_dim = arch.head_dim or arch.hidden // arch.heads
    widths = (arch.hidden, arch.intermediate, head_dim, workload.longest)
    profile = _profile(config, shape, profiles)
    per_token = profile.bytes_per_token(arch.layers, *widths)
    if shape.gradient_checkpointing:  # backward recomputes one layer at a time, holding its activations
        plain = _profile(config, replace(shape, gradient_checkpointing=False), profiles)
        per_token += plain.layer_bytes_per_token(*widths)
    return per_token


def _profile(config: dict[str, Any], shape: StepShape, profiles: dict[StepShape, Profile]) -> Profile:
    if shape not in profiles:
        profiles[shape] = step_profile(config, shape)
    return profiles[shape]


def _transient_bytes(arch: Architecture, recipe: Recipe, workload: Workload, dtype_bytes: int) -> int:
    """Backward's working set: a layer's activation gradients (a few positions x widest-layer tensors)
    and one chunk of float32 logits with its softmax."""
    positions = workload.peak_positions
    gradients = 3 * positions * max(arch.hidden, arch.intermediate) * dtype_bytes
    labelled = max(1, round(positions * workload.labelled_fraction))
    logits = 2 * min(recipe.train.loss_chunk_tokens, labelled) * arch.vocab * 4
    return gradients + logits


def target_shapes(arch: Architecture, targets: str | list[str]) -> list[tuple[int, int]]:
    """(in, out) features of each linear module LoRA adapts in one layer."""
    shapes = {
        "q_proj": (arch.hidden, arch.attention_dim),
        "k_proj": (arch.hidden, arch.kv_dim),
        "v_proj": (arch.hidden, arch.kv_dim),
        "o_proj": (arch.attention_dim, arch.hidden),
        "gate_proj": (arch.hidden, arch.intermediate),
        "up_proj": (arch.hidden, arch.intermediate),
        "down_proj": (arch.intermediate, arch.hidden),
    }
    names = _LINEAR if targets == "all-linear" else [t for t in targets if t in shapes]
    return [shapes[name] for name in names]


def lora_params(arch: Architecture, recipe: Recipe) -> int:
    """Trainable LoRA parameters: r x (in + out) per adapted module per layer (DoRA: plus a magnitude
    per output feature)."""
    shapes = target_shapes(arch, recipe.lora.target_modules)
    magnitude = sum(n_out for _, n_out in shapes) if recipe.lora.use_dora else 0
    return arch.layers * (sum(recipe.lora.r * (n_in + n_out) for n_in, n_out in shapes) + magnitude)


def step_flops(arch: Architecture, recipe: Recipe, workload: Workload, shape: StepShape) -> float:
    """Floating-point operations of one example's training step, on average (forward + backward)."""
    n = workload.mean_length
    linear = 2 * sum(i * o for i, o in target_shapes(arch, "all-linear"))  # per token per layer, forward
    attention = 2 * arch.attention_dim * n  # causal: on average n / 2 keys, two matmuls
    head = 2 * arch.hidden * arch.vocab  # only at labelled positions (honed's loss)
    labelled = workload.labelled_fraction * n
    if shape.adapter in ("lora", "qlora"):  # qlora's de-quantising is memory-bound: not counted in FLOPs
        lora = 2 * sum(recipe.lora.r * (i + o) for i, o in target_shapes(arch, recipe.lora.target_modules))
        per_layer = 2 * linear + 3 * attention + 3 * lora  # no weight gradients for the frozen base
        total = n * arch.layers * per_layer + labelled * 2 * head
    else:
        lora = 0
        total = n * arch.layers * (3 * linear + 3 * attention) + labelled * 4 * head
    if shape.gradient_checkpointing:
        total += n * arch.layers * (linear + attention + lora)
    return total


def cheapest_fit(
    arch: Architecture,
    config: dict[str, Any],
    recipe: Recipe,
    examples: list[Encoded],
    device: str,
    throughput_flops: float | None,
    available_bytes: int,
    sequences_per_example: int = 1,
) -> tuple[list[str], Estimate] | None:
    """The recipe overrides that make a run fit `available_bytes`, and its estimate; None if none do.

    `examples` are the sequences the model runs; a training example may be several of them
    (`sequences_per_example`: a DPO pair is 2), so a micro-batch runs that many times batch_size.

    Changes that keep the result the same come first (gradient checkpointing, smaller micro-batches with
    more accumulation), then those that change it (LoRA, shorter max_seq_len); within each, the one with
    the shortest predicted time wins.
    """
    profiles: dict[StepShape, Profile] = {}
    for group in (_exact_changes(recipe), _result_changes(recipe, examples)):
        found = []
        for overrides in group:
            changed = _with_overrides(recipe, overrides)
            kept = _shorter(examples, changed.data.max_seq_len)
            packing = _packing(changed, device)
            workload = Workload.from_examples(kept, changed.train.batch_size * sequences_per_example, packing)
            result = estimate(
                arch, config, changed, workload, device, throughput_flops, available_bytes, profiles
            )
            if result.fits:
                found.append((result.flops_per_step * result.steps, overrides, result))
        if found:
            _, overrides, result = min(found, key=lambda item: item[0])
            return overrides, result
    return None


def _exact_changes(recipe: Recipe) -> list[list[str]]:
    """Overrides that train exactly the same model: checkpointing, and batch halved with accumulation."""
    train = recipe.train
    checkpointing = [] if train.gradient_checkpointing else ["train.gradient_checkpointing=true"]
    options = [checkpointing] if checkpointing else []
    batch, accum = train.batch_size, train.grad_accum_steps
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        if batch * accum != train.batch_size * train.grad_accum_steps:
            break  # an odd batch cannot be split exactly
        halved = [f"train.batch_size={batch}", f"train.grad_accum_steps={accum}"]
        options += [halved, halved + checkpointing] if checkpointing else [halved]
    return options


def _result_changes(recipe: Recipe, examples: list[Encoded]) -> list[list[str]]:
    """Overrides that change the trained model: LoRA instead of full, shorter max_seq_len (with every
    exact change on top, since those cost nothing in quality)."""
    exact = _exact_changes(recipe)
    lora = [["adapter=lora"]] if recipe.adapter == "full" else [[]]
    longest = max(len(e.input_ids) for e in examples)
    lengths = [
        recipe.data.max_seq_len // 2**k for k in range(1, 4) if recipe.data.max_seq_len // 2**k < longest
    ]
    shorter = [[f"data.max_seq_len={n}"] for n in lengths] or [[]]
    options = []
    for first in lora:
        for second in shorter:
            for third in [[], *exact]:
                if first or second:
                    options.append(first + second + third)
    return options


def _with_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    raw = recipe.model_dump(mode="json")
    for item in overrides:
        apply_override(raw, item)
    return Recipe.model_validate(raw)


def _shorter(examples: list[Encoded], max_seq_len: int) -> list[Encoded]:
    """The examples as a shorter max_seq_len leaves them (cut to length: the peak is the same whether
    data.on_too_long skips or truncates them)."""
    return [e if len(e.input_ids) <= max_seq_len else _cut(e, max_seq_len) for e in examples]


def _cut(example: Encoded, n: int) -> Encoded:
    return Encoded(example.input_ids[:n], example.labels[:n])
