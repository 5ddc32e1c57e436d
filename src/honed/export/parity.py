"""Judge an exported GGUF file against the merged float model it was written from; fail loudly.

Each file is reloaded with transformers (`from_pretrained(folder, gguf_file=name)`, model and tokenizer)
and compared with the merged model on the run's golden prompts (export/merged.py `golden_rows`):

- the chat template has the run's digest (one template for training, export and serving);
- the tokenizer encodes every golden prompt to the run tokenizer's ids (with and without special tokens);
- every weight equals the merged model's within the rounding of the type it was stored in (F32 and F16
  within an ulp, Q8_0 within its block's scale): a wrong tensor layout, name or rope permutation shows
  here even on a model whose logits barely depend on it (the tiny test llama's attention is nearly uniform);
- logits: max |difference| over every position of every golden prompt (bounded for F16);
- greedy answers of GREEDY_NEW_TOKENS tokens: the share identical to the merged model's;
- the run's task metric on the golden rows that have references (bounded for Q8_0 as a drop).

A failed check raises ExportError naming the file, the figure seen and its bound. This module knows nothing
about how a GGUF file is written.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from honed.config.schema import Recipe
from honed.data.tokenize import chat_template_digest
from honed.errors import ExportError, HonedError
from honed.evaluation.evaluate import is_model_task
from honed.evaluation.registry import build_task
from honed.evaluation.tasks import Task
from honed.export.merged import Golden, MergedRun, golden_ids, logits
from honed.models.decoding import generate

if TYPE_CHECKING:  # transformers is heavy: only the type checker imports it here
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

GREEDY_NEW_TOKENS = 32  # answer length compared between the merged model and each file

# F16 keeps 11 significant bits. Measured max |logit diff| between the merged float model and its reloaded
# F16 file (8 golden prompts, every position; docs/export.md): the tiny test llama 1.8e-4 (its logits stay
# within +-0.75), SmolLM2-135M-Instruct 0.045 as shipped, 0.055 after 1 LoRA step and 0.058 after 30
# (logits up to 41). The bound is 4x SmolLM2's figure: it says fp16 rounding is harmless for this model.
# A missing rope permutation gives 40 on SmolLM2 (but 0.003 on the tiny llama, whose attention is nearly
# uniform: the weight check catches layout errors independently of the logits' scale).
F16_MAX_LOGIT_DIFF = 0.25

# Q8_0 rounds each block of 32 weights to 8 bits. Measured on SmolLM2-135M-Instruct: max |logit diff| 1.3
# as shipped, 1.5 after 1 and after 30 LoRA steps; greedy answers identical on 7 of 8 golden prompts after
# 1 and after 30 steps (a near tie flips), slot_f1 unchanged (0.889 after 30 steps). Bounds: 6 of 8
# answers identical, and the task metric no more than 0.1 below the merged model's.
Q8_0_MIN_GREEDY_AGREEMENT = 0.75
Q8_0_MAX_METRIC_DROP = 0.1


@dataclass(frozen=True)
class Bounds:
    """What one quantization must meet; None: the figure is recorded, not bounded."""

    max_logit_diff: float | None
    min_greedy_agreement: float
    max_metric_drop: float | None


BOUNDS = {
    "f16": Bounds(F16_MAX_LOGIT_DIFF, 1.0, None),
    "q8_0": Bounds(None, Q8_0_MIN_GREEDY_AGREEMENT, Q8_0_MAX_METRIC_DROP),
}


def bounds_table() -> dict[str, dict[str, float | None]]:
    """The bounds of every quantization, for parity.json."""
    return {quant: asdict(bounds) for quant, bounds in BOUNDS.items()}


@dataclass
class Reference:
    """The merged float model's figures on the golden prompts, computed once per export."""

    template_sha256: str
    ids: list[list[int]]  # golden prompts encoded without special tokens (as evaluation encodes them)
    ids_with_special: list[list[int]]  # ... and with them (as llama.cpp encodes a raw prompt)
    logits: torch.Tensor  # (golden tokens, vocab)
    greedy: list[str]
    metric_name: str | None
    metric: float | None
    task: Task | None = field(default=None, repr=False)  # the run's generation task (None: not scored)

    def figures(self) -> dict[str, Any]:
        """What parity.json records of the merged model."""
        return {
            "chat_template_sha256": self.template_sha256,
            "max_abs_logit": float(self.logits.abs().max()),
            "metric_name": self.metric_name,
            "metric": self.metric,
        }


def score_reference(merged: MergedRun) -> Reference:
    """The merged model's logits, greedy answers and task metric on the golden prompts."""
    log.info("parity: scoring the merged model on %d golden prompts", len(merged.golden))
    tokenizer, golden = merged.tokenizer, merged.golden
    task = _task(merged.recipe)
    greedy = _greedy(merged.model, tokenizer, golden, merged.recipe.eval.stop)
    return Reference(
        template_sha256=_run_template_digest(merged),
        ids=_encode(tokenizer, golden, special=False),
        ids_with_special=_encode(tokenizer, golden, special=True),
        logits=logits(merged.model, golden_ids(tokenizer, golden)),
        greedy=greedy,
        metric_name=task.primary_metric if task is not None else None,
        metric=_metric(task, golden, greedy),
        task=task,
    )


def check_gguf(
    path: Path, quant: str, merged: MergedRun, reference: Reference, stored: dict[str, str]
) -> dict[str, Any]:
    """Reload `path` with transformers, compare it with the merged model, and return the figures.

    `stored` is the GGML type each weight was written in, by Hugging Face name (what `write_gguf` returns).
    Raises ExportError, naming the file, the figure and its bound, when a check fails.
    """
    log.info("reload: %s with transformers", path.name)
    model, tokenizer = _reload(path)
    log.info("parity: %s against the merged model", path.name)
    _check_tokenizer(path, tokenizer, merged.golden, reference)
    weight_error = _check_weights(path, model, merged.model, stored)
    got = logits(model, [torch.tensor([ids]) for ids in reference.ids])
    greedy = _greedy(model, tokenizer, merged.golden, merged.recipe.eval.stop)
    del model
    gc.collect()
    metric = _metric(reference.task, merged.golden, greedy)
    max_diff = float((got - reference.logits).abs().max())
    identical = sum(a == b for a, b in zip(greedy, reference.greedy, strict=True))
    figures = {
        "max_weight_error": weight_error,
        "max_abs_logit_diff": max_diff,
        "greedy_agreement": identical / len(greedy),
        "greedy_identical": identical,
        "metric": metric,
        "metric_delta": None if metric is None or reference.metric is None else metric - reference.metric,
        "token_ids_match": True,
        "chat_template_sha256": reference.template_sha256,
    }
    _enforce(path, figures, BOUNDS[quant], reference)
    delta = "n/a" if figures["metric_delta"] is None else f"{figures['metric_delta']:+.3f}"
    log.info(
        "parity: %s max |logit diff| %.3g, greedy %d/%d identical, metric delta %s",
        path.name,
        max_diff,
        identical,
        len(greedy),
        delta,
    )
    return figures


def _reload(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF file's model (float32, eval) and tokenizer, as transformers builds them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for a malformed file
        raise ExportError(f"{path.name}: transformers cannot load the exported file ({exc})") from None
    return model.eval(), tokenizer


def _check_tokenizer(
    path: Path, tokenizer: PreTrainedTokenizerBase, golden: list[Golden], reference: Reference
) -> None:
    """The file's chat template and tokenization must be the run's."""
    digest = chat_template_digest(tokenizer)
    if digest != reference.template_sha256:
        raise ExportError(
            f"{path.name}: chat template sha256 {digest[:12]} differs from the run's "
            f"{reference.template_sha256[:12]}; a model must be served with the template it was trained with"
        )
    for special, expected in ((False, reference.ids), (True, reference.ids_with_special)):
        for index, (got, want) in enumerate(zip(_encode(tokenizer, golden, special), expected, strict=True)):
            if got != want:
                where = next(
                    (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                    min(len(got), len(want)),
                )
                raise ExportError(
                    f"{path.name}: its tokenizer encodes golden prompt {index} differently from the run's "
                    f"(add_special_tokens={special}; first difference at token {where}: "
                    f"{got[where : where + 3]} vs {want[where : where + 3]}); bound: identical ids"
                )


def _check_weights(
    path: Path, reloaded: torch.nn.Module, merged: torch.nn.Module, stored: dict[str, str]
) -> float:
    """The largest weight difference as a share of its stored type's rounding; ExportError above 1."""
    got, want = reloaded.state_dict(), merged.state_dict()
    worst, where = 0.0, ""
    for name, kind in stored.items():
        if name not in got:
            raise ExportError(
                f"{path.name}: transformers finds no weight {name} in it; the tensor names are wrong"
            )
        error = _rounding_share(got[name].float(), want[name].float(), kind)
        if error > worst:
            worst, where = error, name
    if worst > 1.0:
        raise ExportError(
            f"{path.name}: weight {where} ({stored[where]}) differs from the merged model's by {worst:.3g}x "
            "what its rounding allows (bound 1.0): the tensor layout is wrong"
        )
    return worst


def _rounding_share(got: torch.Tensor, want: torch.Tensor, kind: str) -> float:
    """max |got - want| / the rounding `kind` allows at each weight: one ulp for F32 and F16, and for Q8_0
    the block's scale (its largest |weight| / 127: rounding costs half of it, the scale's own F16 less)."""
    if got.shape != want.shape:
        return float("inf")
    if kind == "Q8_0":
        blocks = want.reshape(*want.shape[:-1], -1, 32).abs().amax(-1, keepdim=True)
        allowed = (blocks / 127).expand(*want.shape[:-1], -1, 32).reshape(want.shape) + 2.0**-24
    else:
        bits = 10 if kind == "F16" else 23
        allowed = want.abs() * 2.0**-bits + 2.0**-24
    return float(((got - want).abs() / allowed).max())


def _enforce(path: Path, figures: dict[str, Any], bounds: Bounds, reference: Reference) -> None:
    """Raise ExportError for the first figure outside its bound."""
    failures = []
    if bounds.max_logit_diff is not None and figures["max_abs_logit_diff"] > bounds.max_logit_diff:
        failures.append(f"max |logit diff| {figures['max_abs_logit_diff']:.3g} > {bounds.max_logit_diff}")
    if figures["greedy_agreement"] < bounds.min_greedy_agreement:
        failures.append(
            f"greedy answers identical on {figures['greedy_agreement']:.0%} of golden prompts "
            f"< {bounds.min_greedy_agreement:.0%}"
        )
    drop = -figures["metric_delta"] if figures["metric_delta"] is not None else None
    if bounds.max_metric_drop is not None and drop is not None and drop > bounds.max_metric_drop:
        failures.append(
            f"{reference.metric_name} {figures['metric']:.3f} is {drop:.3f} below the merged model's "
            f"{reference.metric:.3f} (bound {bounds.max_metric_drop})"
        )
    if failures:
        raise ExportError(f"{path.name} fails its parity check: {'; '.join(failures)}")


def _encode(tokenizer: PreTrainedTokenizerBase, golden: list[Golden], special: bool) -> list[list[int]]:
    return [tokenizer(g.prompt, add_special_tokens=special)["input_ids"] for g in golden]


def _greedy(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, golden: list[Golden], stop: list[str]
) -> list[str]:
    prompts = [g.prompt for g in golden]
    return generate(model, tokenizer, prompts, GREEDY_NEW_TOKENS, batch_size=len(prompts), stop=stop)


def _task(recipe: Recipe) -> Task | None:
    """The run's generation task, or None for likelihood tasks and tasks that cannot be built here."""
    try:
        task = build_task(recipe.eval.task, recipe.eval.task_options)
    except HonedError as exc:
        log.warning("parity: task %r not scored (%s)", recipe.eval.task, exc)
        return None
    return None if is_model_task(task) else task


def _metric(task: Task | None, golden: list[Golden], answers: list[str]) -> float | None:
    """The task's primary metric over the golden rows that have a reference; None when none do."""
    rows = [(g.reference, a) for g, a in zip(golden, answers, strict=True) if g.reference is not None]
    if task is None or not rows:
        return None
    try:
        scores = [task.score(answer, reference, {}) for reference, answer in rows]
    except HonedError as exc:  # e.g. sql needs the data row's schema, which predictions.jsonl does not keep
        log.warning("parity: task %s not scored on golden rows (%s)", task.name, exc)
        return None
    return float(task.aggregate(scores)[task.primary_metric])


def _run_template_digest(merged: MergedRun) -> str:
    """The chat template digest the run recorded at training time, else its final tokenizer's."""
    train = merged.run_dir / "train.json"
    recorded = json.loads(train.read_text()).get("chat_template_sha256") if train.is_file() else None
    return recorded or chat_template_digest(merged.tokenizer)
