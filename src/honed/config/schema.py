"""The typed recipe schema: every key a recipe may hold, its type, unit and default.

Defaults live here and nowhere else. Unknown keys are rejected (`extra="forbid"`); `config.load` turns
pydantic's errors into one message listing every problem with a "did you mean" suggestion.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from honed.config.prepare import PrepareConfig
from honed.config.strict import Strict
from honed.config.tasks import task_target
from honed.errors import ConfigError


class ModelConfig(Strict):
    """Which base model to start from and how to load it."""

    base: str = Field(
        "smollm2-135m-instruct",
        description="A registry name (smollm2-135m-instruct, the embedded default; or a known model such "
        "as qwen2.5-0.5b-instruct, fetched by its hub id), a local Hugging Face folder, a .gguf file, or a "
        "hub id such as HuggingFaceTB/SmolLM2-360M-Instruct.",
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with a hub model. Off by default."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype for training: auto is float32 on CPU, bfloat16 on CUDA."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for a hub id.")


class DataConfig(Strict):
    """Where the examples come from and how a row becomes a conversation."""

    train: str = Field(
        ...,
        description="Training data: a .jsonl, .csv or .parquet file, a folder of .txt/.md/.html files, a "
        "saved Hugging Face dataset folder (`folder` or `folder:split`), or a hub dataset id (`owner/name` "
        "or `owner/name:split`, needs `pip install 'honed[hf]'`). Relative paths are resolved against the "
        "recipe file's folder.",
    )
    validation: str | None = Field(None, description="Validation data, same kinds of source as train.")
    holdout_fraction: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="With no validation file: hold out this fraction of the training "
        "rows as validation, chosen by a hash of the row's content (deterministic, no overlap).",
    )
    format: Literal[
        "auto", "chat", "sharegpt", "prompt_completion", "alpaca", "preference", "text", "template"
    ] = Field(
        "auto",
        description="chat: a `messages` list; sharegpt: a `conversations` list of {from, value}; "
        "prompt_completion: `prompt` and `completion`; alpaca: `instruction`, optional `input`, `output`; "
        "preference: `chosen` and `rejected` (optional `prompt`; sft trains on the chosen answer); text: raw "
        "`text` (continued pre-training); template: any fields mapped through prompt_template/"
        "completion_template; auto: detect from the first row.",
    )
    prompt_template: str | None = Field(
        None,
        description="Python format string over the row's fields, "
        "e.g. 'Turn this into a meaning representation: {ref}'.",
    )
    completion_template: str | None = Field(None, description="Format string for the answer, e.g. '{mr}'.")
    system_prompt: str | None = Field(None, description="Optional system message put before every prompt.")
    on_bad_row: Literal["error", "skip"] = Field(
        "error", description="A malformed row stops (error) or is counted and skipped (skip)."
    )
    max_seq_len: int = Field(512, gt=8, description="Longest tokenized example, in tokens.")
    on_too_long: Literal["skip", "truncate", "error"] = Field(
        "skip",
        description="What to do with a row longer than max_seq_len: skip it (counted), truncate it "
        "from the right (counted), or stop with an error.",
    )
    max_train_rows: int | None = Field(None, gt=0, description="Use only the first N training rows.")
    max_validation_rows: int | None = Field(None, gt=0, description="Use only the first N validation rows.")
    slice_field: str | None = Field(None, description="A row field to break evaluation metrics down by.")

    @property
    def has_validation(self) -> bool:
        """Whether the recipe has validation rows: a validation file, or a held-out fraction of train.
        The one place that decides it."""
        return bool(self.validation) or self.holdout_fraction is not None

    @property
    def splits(self) -> list[str]:
        """The splits a run reads: train, and validation when there is any."""
        return ["train", "validation"] if self.has_validation else ["train"]

    @model_validator(mode="after")
    def _templates_match_format(self) -> DataConfig:
        problems = []
        if self.format == "template" and not (self.prompt_template and self.completion_template):
            problems.append("format 'template' needs both data.prompt_template and data.completion_template")
        if self.format not in ("auto", "template") and (self.prompt_template or self.completion_template):
            problems.append(
                f"data.prompt_template/completion_template are only used with format 'template', "
                f"not {self.format!r}"
            )
        if self.validation and self.holdout_fraction:
            problems.append("set data.validation or data.holdout_fraction, not both")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class LoraConfig(Strict):
    """LoRA adapter settings (PEFT), used when `adapter: lora` or `qlora`."""

    r: int = Field(16, gt=0, description="Rank of the low-rank update.")
    alpha: float = Field(32.0, gt=0, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt (e.g. [q_proj, v_proj]) or all-linear."
    )
    use_dora: bool = Field(
        False,
        description="DoRA: learn each adapted weight's magnitude apart from its direction (PEFT); more "
        "compute and memory per step, often better at low rank.",
    )
    use_rslora: bool = Field(
        False,
        description="rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r (steadier at high r).",
    )
    init_from: str | None = Field(
        None,
        description="A PEFT adapter folder (e.g. runs/<id>/final/adapter) to continue training from instead "
        "of a fresh adapter; its r/alpha/targets (and DoRA, rsLoRA) win over lora.*, lora.dropout still "
        "applies. A relative path is taken from the working directory and stored absolute.",
    )

    @field_validator("init_from")
    @classmethod
    def _absolute_init_from(cls, value: str | None) -> str | None:
        # Stored absolute, so the run's saved recipe (and `--resume`) work from any directory.
        return os.path.abspath(os.path.expanduser(value)) if value else value


class CptConfig(Strict):
    """Continued pre-training on raw text (`method: cpt`): documents joined into fixed-length blocks."""

    text_field: str = Field("text", description="The row field holding a document's text.")
    replay: str | None = Field(
        None,
        description="General text mixed into training to limit forgetting: a .jsonl/.csv/.parquet file or "
        "a folder of .txt/.md/.html files (relative paths against the recipe's folder).",
    )
    replay_text_field: str = Field("text", description="The replay rows' text field.")
    replay_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of training blocks drawn from `replay` (0.1: one block in ten is general text).",
    )
    general_eval: str | None = Field(
        None,
        description="General text whose perplexity is measured before and after training (forgetting); "
        "null: a few paragraphs of everyday English that honed ships.",
    )
    general_eval_field: str = Field("text", description="The general_eval rows' text field.")
    general_eval_max_rows: int = Field(200, gt=0, description="Score the first N rows of general_eval.")

    @model_validator(mode="after")
    def _replay_needs_source(self) -> CptConfig:
        if self.replay_fraction > 0 and not self.replay:
            raise ValueError("cpt.replay_fraction is above 0 but cpt.replay names no general-text source")
        return self


class DpoConfig(Strict):
    """Preference tuning (`method: dpo`) on `chosen`/`rejected` pairs."""

    loss: Literal["sigmoid", "ipo", "simpo", "orpo"] = Field(
        "sigmoid",
        description="sigmoid: DPO; ipo: IPO's squared loss; simpo: SimPO (reference-free, length-normalised, "
        "with margin gamma); orpo: ORPO (reference-free: SFT on chosen plus an odds-ratio term).",
    )
    beta: float = Field(
        0.1, gt=0, description="Strength of the preference term (DPO/IPO/SimPO beta; ORPO's lambda)."
    )
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin.")
    max_prompt_len: int = Field(
        256, gt=0, description="Keep at most this many prompt tokens (the most recent ones)."
    )


class DistillConfig(Strict):
    """Distillation from a larger teacher (`method: distill`)."""

    teacher: str = Field(
        ..., description="The teacher model: a registry name, local folder, .gguf file or hub id."
    )
    mode: Literal["sequence", "logit"] = Field(
        "sequence",
        description="sequence: the teacher writes answers for the training prompts, then SFT on them; logit: "
        "match the teacher's top-k next-token distribution on the training answers (same tokenizer).",
    )
    top_k: int = Field(20, gt=0, description="logit mode: teacher tokens kept per position.")
    temperature: float = Field(1.0, gt=0, description="logit mode: softening of both distributions.")
    kl_weight: float = Field(
        1.0, ge=0, le=1, description="logit mode: weight of the KL term; the rest goes to the reference CE."
    )
    max_new_tokens: int = Field(128, gt=0, description="sequence mode: the teacher's answer budget.")
    min_score: float | None = Field(
        None,
        description="sequence mode: keep a teacher answer only if the eval task's primary metric against "
        "the row's reference is at least this (null: keep all).",
    )


class TuneConfig(Strict):
    """`honed tune-hp`: the hyperparameter search space and budget (Optuna)."""

    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Recipe key -> range: {low, high, log} (float or int) or {choices: [...]}, e.g. "
        "{train.lr: {low: 1e-5, high: 1e-3, log: true}, lora.r: {choices: [8, 16, 32]}}.",
    )
    trials: int | None = Field(
        8, gt=0, description="Stop after this many trials (null: only the time limit)."
    )
    timeout_min: float | None = Field(None, gt=0, description="Stop starting trials after this many minutes.")
    objective: Literal["val_loss", "task"] = Field(
        "val_loss",
        description="Minimise validation loss, or optimise the eval task's primary metric after training.",
    )
    prune: bool = Field(True, description="Stop trials whose validation loss trails the median (Optuna).")
    seed: int = Field(0, description="Seed of the sampler.")


class TrainConfig(Strict):
    """Optimisation: schedule, batch shape, checkpoints and logging."""

    epochs: float = Field(1.0, gt=0, description="Passes over the training rows (fractions allowed).")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch.")
    grad_accum_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    lr_warmup_steps: int = Field(0, ge=0, description="Linear warmup length, in optimizer steps.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; null: off.")
    seed: int = Field(42, description="Seeds data order, adapter init and dropout.")
    group_by_length: bool | Literal["auto"] = Field(
        "auto",
        description="Put examples of similar length in the same step, to cut padding. auto: only when "
        "batches are padded (packed rows have no padding to cut, and random steps mix the data better).",
    )
    packing: bool | Literal["auto"] = Field(
        "auto",
        description="Lay each micro-batch's examples end to end in one row: no padding, position ids restart "
        "per example and attention stays within each example (same loss as padded batches). auto: on CPU, "
        "and on CUDA when flash-attn is installed; padded, length-grouped batches otherwise.",
    )
    loss_chunk_tokens: int = Field(
        512,
        gt=0,
        description="Labelled tokens whose vocabulary logits exist at once in the loss (memory vs. speed).",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in backward: far less memory, about a third slower.",
    )
    compile: bool = Field(False, description="torch.compile the decoder layers (first steps compile slowly).")
    eval_every_steps: int | None = Field(
        None, gt=0, description="Validation loss every N steps (and at the end); null: only at the end."
    )
    max_eval_loss_rows: int = Field(200, gt=0, description="Validation rows used for the validation loss.")
    checkpoint_every_steps: int | None = Field(
        None,
        gt=0,
        description="Save a resumable checkpoint every N steps; null: only at the end or on interrupt.",
    )
    log_every_steps: int = Field(1, gt=0, description="Write a metrics.jsonl line every N steps.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto picks CUDA when present.")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch; null: torch's default.")


class EvalConfig(Strict):
    """How the base and tuned models are scored on held-out rows."""

    task: str = Field(
        "exact_match",
        description="A task name: exact_match (normalised string equality), structured "
        "(act(slot[value], ...) scored by act accuracy and slot P/R/F1), sql (execution accuracy on "
        "generated databases), math "
        "(final numeric answer), perplexity (raw text), choice (multiple choice by log-likelihood), or a "
        "custom task registered through the 'honed.tasks' entry point or `--task-file`.",
    )
    task_options: dict[str, Any] = Field(
        default_factory=dict, description="Options passed to the task, e.g. {context_field: context} for sql."
    )
    split: Literal["validation", "train"] = Field("validation", description="Which data file to score.")
    max_rows: int | None = Field(100, gt=0, description="Score the first N rows; null: all.")
    max_new_tokens: int = Field(128, gt=0, description="Generation budget per answer, in tokens.")
    batch_size: int = Field(16, gt=0, description="Prompts generated together.")
    stop: list[str] = Field(default_factory=list, description="Stop strings: an answer is cut at the first.")
    base: bool = Field(True, description="Also score the base model zero-shot on the same rows.")
    few_shot_k: int = Field(
        0,
        ge=0,
        description="Also score the base model with k in-context examples drawn "
        "from the training file (0: off).",
    )
    few_shot_seed: int = Field(0, description="Seed for drawing the in-context examples.")
    forgetting_probe: bool = Field(
        False,
        description="Also compare base and tuned on a general probe: "
        "perplexity on general text and on the base model's answers to chat prompts.",
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str, info: ValidationInfo) -> str:
        try:  # task files named on the command line arrive through the validation context
            task_target(value, (info.context or {}).get("task_files", ()))
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("eval.task: ")) from None
        return value


class OutputConfig(Strict):
    """Where runs are written."""

    runs_dir: str = Field(
        "runs", description="Parent folder of run directories (relative to the working directory)."
    )
    run_name: str | None = Field(None, description="Run directory name; null: <recipe-name>-<timestamp>.")


class Recipe(Strict):
    """A complete, validated description of one fine-tuning run."""

    name: str = Field("run", description="A short name for the run, used in the run directory name.")
    method: Literal["sft", "cpt", "dpo", "distill"] = Field(
        "sft",
        description="Training method. sft: supervised fine-tuning on answers; cpt: continued pre-training "
        "on raw text; dpo: preference tuning on chosen/rejected pairs; distill: learn from a teacher model.",
    )
    adapter: Literal["lora", "qlora", "full"] = Field(
        "lora",
        description="lora: train a PEFT LoRA adapter; qlora: LoRA on a 4-bit (NF4) frozen base; full: train "
        "every weight.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    cpt: CptConfig = Field(default_factory=CptConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    distill: DistillConfig | None = Field(None, description="Teacher and mode; required by method distill.")
    tune: TuneConfig = Field(default_factory=TuneConfig)

    @model_validator(mode="after")
    def _distill_has_teacher(self) -> Recipe:
        if self.method == "distill" and self.distill is None:
            raise ValueError("method 'distill' needs a distill section with at least distill.teacher")
        return self

    @model_validator(mode="after")
    def _init_from_needs_adapter(self) -> Recipe:
        if self.lora.init_from and self.adapter == "full":
            raise ValueError(
                "lora.init_from continues a LoRA adapter, but adapter is 'full': use adapter lora or qlora, "
                "or, to continue a full fine-tune, set model.base to its runs/<id>/final/model"
            )
        return self

    @model_validator(mode="after")
    def _one_validation_source(self) -> Recipe:
        if self.data.validation and self.prepare.split.validation_fraction:
            raise ValueError(
                "data.validation is set and prepare.split.validation_fraction is "
                f"{self.prepare.split.validation_fraction}: take validation rows from one place, unset one"
            )
        return self

    @model_validator(mode="after")
    def _eval_split_exists(self) -> Recipe:
        if self.eval.split == "validation" and not self.data.has_validation:
            # Evaluation falls back to nothing silently otherwise; say it up front.
            raise ValueError(
                "eval.split is 'validation' but neither data.validation nor "
                "data.holdout_fraction is set: add one, or set eval.split: train"
            )
        return self
