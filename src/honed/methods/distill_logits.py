"""Logit distillation (`distill.mode: logit`): the teacher's top-k next-token log-probabilities at every
labelled position, computed once before the student loads and cached in data/teacher_topk.safetensors
(with a digest of the tokens they belong to); batches that carry them; the student's mean KL to them."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from honed.config.schema import Recipe
from honed.data.tokenize import IGNORE, Encoded
from honed.errors import ConfigError
from honed.methods.base import Examples
from honed.methods.distill_loss import Mix, labelled_hidden, linear_distill
from honed.methods.distill_teacher import (
    SUMMARY,
    TARGETS,
    atomic_write,
    distill_config,
    interactive,
    with_teacher,
)
from honed.methods.sft import sft_data
from honed.models.load import load_tokenizer, resolve_base
from honed.models.nll import DEFAULT_LOSS_CHUNK, causal_lm, collate
from honed.training.loop import Collate

log = logging.getLogger(__name__)

# Per split, per example: the teacher's (ids, logprobs), each (positions, k), as `teacher_topk` returns.
Targets = dict[str, list[tuple[torch.Tensor, torch.Tensor]]]


def mix_of(recipe: Recipe) -> Mix:
    """The recipe's logit-mode weighting."""
    cfg = distill_config(recipe)
    return Mix(cfg.temperature, cfg.kl_weight)


@dataclass
class LogitExample:
    """An example and the teacher's top-k at each of its labelled positions (those `labels[1:]` marks).

    Shapes: ids (positions, k) int32, logprobs (positions, k) float32 (log-softmax at the temperature,
    not renormalised over the k).
    """

    example: Encoded
    ids: torch.Tensor
    logprobs: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """What the loop groups examples by (the teacher's targets add no tokens)."""
        return self.example.num_tokens


def logit_data(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path
) -> tuple[list[LogitExample], list[LogitExample] | None]:
    """SFT's examples, each with the teacher's top-k targets (computed once, cached in the run dir)."""
    cfg = distill_config(recipe)
    teacher_tokenizer = load_tokenizer(resolve_base(cfg.teacher).folder, recipe.model.trust_remote_code)
    check_same_vocabulary(tokenizer, teacher_tokenizer, recipe)
    train, validation = sft_data(recipe, tokenizer, run_dir)
    splits = {"train": train, **({"validation": validation} if validation else {})}
    path = run_dir / "data" / TARGETS
    key = _targets_key(recipe, splits)
    targets = _load_targets(path, key, splits)
    reused = targets is not None
    if targets is None:
        targets = _teacher_targets(recipe, tokenizer, splits)
        _save_targets(path, key, targets)
    wrapped = {
        split: [LogitExample(e, ids, lp) for e, (ids, lp) in zip(examples, targets[split], strict=True)]
        for split, examples in splits.items()
    }
    stats = _logit_stats(recipe, targets, reused)
    (run_dir / "data" / SUMMARY).write_text(json.dumps(stats, indent=2))
    return wrapped["train"], wrapped.get("validation")


def check_same_vocabulary(
    student_tokenizer: PreTrainedTokenizerBase, teacher_tokenizer: PreTrainedTokenizerBase, recipe: Recipe
) -> None:
    """Logit distillation compares distributions token id by token id: the vocabularies must be equal."""
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student == teacher:
        return
    differ = len(set(student.items()) ^ set(teacher.items()))
    raise ConfigError(
        f"distill.teacher: {distill_config(recipe).teacher!r} has a different vocabulary from model.base "
        f"{recipe.model.base!r} ({len(teacher)} vs {len(student)} tokens, {differ} token/id pairs differ); "
        "distill.mode: logit compares next-token distributions id by id and needs the same tokenizer. "
        "Use distill.mode: sequence (the teacher writes answers), or a teacher from the student's family"
    )


def _teacher_targets(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, splits: dict[str, list[Encoded]]
) -> Targets:
    cfg = distill_config(recipe)

    def run(teacher: PreTrainedModel, _teacher_tokenizer: PreTrainedTokenizerBase) -> Targets:
        return {
            split: teacher_topk(
                teacher,
                examples,
                tokenizer.pad_token_id,
                cfg.top_k,
                cfg.temperature,
                len(tokenizer),
                recipe.eval.batch_size,
                desc=f"teacher top-k ({split})",
            )
            for split, examples in splits.items()
        }

    return with_teacher(recipe, run)


@torch.no_grad()
def teacher_topk(
    model: torch.nn.Module,
    examples: list[Encoded],
    pad_id: int,
    top_k: int,
    temperature: float,
    vocab_size: int,
    batch_size: int = 16,
    chunk: int = DEFAULT_LOSS_CHUNK,
    desc: str = "teacher top-k",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example, the teacher's k most likely next tokens at each labelled position and their
    log-probabilities under softmax(logits / temperature) over the first `vocab_size` ids.

    Returns [(ids (positions, k) int32, logprobs (positions, k) float32)] on the CPU, in input order;
    positions are those `labels[1:] != IGNORE` selects, in order.
    """
    from tqdm.auto import tqdm

    lm, device = causal_lm(model), next(model.parameters()).device
    model.eval()
    k = min(top_k, vocab_size)
    order = sorted(range(len(examples)), key=lambda i: -examples[i].num_tokens)  # little padding
    found: list[Any] = [None] * len(examples)
    with tqdm(total=len(examples), desc=desc, unit="row", disable=not interactive()) as bar:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            hidden, _ = labelled_hidden(model, collate([examples[i] for i in chosen], pad_id, device))
            ids, logprobs = [], []
            for part in hidden.split(chunk):
                logits = lm.get_output_embeddings()(part).float()[:, :vocab_size] / temperature
                top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
                ids.append(top.indices.to(torch.int32).cpu())
                logprobs.append(top.values.cpu())
            counts = [_positions(examples[i]) for i in chosen]
            pairs = zip(torch.cat(ids).split(counts), torch.cat(logprobs).split(counts), strict=True)
            for i, (row_ids, row_logprobs) in zip(chosen, pairs, strict=True):
                found[i] = (row_ids.clone(), row_logprobs.clone())
            bar.update(len(chosen))
    return found


def _positions(example: Encoded) -> int:
    """Labelled positions the loss sees: a first-token label has nothing before it to predict it."""
    return sum(label != IGNORE for label in example.labels[1:])


def _targets_key(recipe: Recipe, splits: dict[str, list[Encoded]]) -> str:
    """Hash of what the teacher's targets depend on: teacher, k, temperature and every example's tokens."""
    cfg = distill_config(recipe)
    digest = hashlib.sha256(f"{cfg.teacher}\0{cfg.top_k}\0{cfg.temperature}".encode())
    for split, examples in splits.items():
        digest.update(split.encode())
        for example in examples:
            digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


def _save_targets(path: Path, key: str, targets: Targets) -> None:
    from safetensors.torch import save

    tensors = {}
    for split, pairs in targets.items():
        tensors[f"{split}.ids"] = torch.cat([ids for ids, _ in pairs]).contiguous()
        tensors[f"{split}.logprobs"] = torch.cat([lp for _, lp in pairs]).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda out: out.write(save(tensors, metadata={"key": key})))


def _load_targets(path: Path, key: str, splits: dict[str, list[Encoded]]) -> Targets | None:
    """The cached targets when `path` was written for exactly these examples and settings, else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("key") != key:
            log.info("%s was made for other data or settings; the teacher runs again", path)
            return None
        found: Targets = {}
        for split, examples in splits.items():
            counts = [_positions(e) for e in examples]
            ids = handle.get_tensor(f"{split}.ids").split(counts)
            found[split] = list(zip(ids, handle.get_tensor(f"{split}.logprobs").split(counts), strict=True))
    log.info("reusing the teacher's top-k targets in %s", path)
    return found


def _logit_stats(recipe: Recipe, targets: Targets, reused: bool) -> dict[str, Any]:
    cfg = distill_config(recipe)
    train = torch.cat([lp for _, lp in targets["train"]])
    return {
        "mode": "logit",
        "teacher": cfg.teacher,
        "top_k": cfg.top_k,
        "temperature": cfg.temperature,
        "kl_weight": cfg.kl_weight,
        "positions": {split: sum(len(ids) for ids, _ in pairs) for split, pairs in targets.items()},
        # How much of the teacher's probability its top-k holds (what renormalising scales up).
        "teacher_topk_mass": round(float(train.exp().sum(-1).mean()), 4),
        "reused_cache": reused,
    }


def collate_targets(examples: Examples, collate: Collate, device: torch.device) -> dict[str, Any]:
    """`collate` (padded or packed) plus, for logit examples, the teacher's top-k in the order of the
    batch's labelled positions: teacher_ids (n, k) long, teacher_logprobs (n, k)."""
    if not isinstance(examples[0], LogitExample):
        return collate(examples)
    batch = collate([e.example for e in examples])
    batch["teacher_ids"] = torch.cat([e.ids for e in examples]).to(device, torch.long)
    batch["teacher_logprobs"] = torch.cat([e.logprobs for e in examples]).to(device)
    return batch


@torch.no_grad()
def mean_kl(
    model: torch.nn.Module, examples: list[LogitExample], pad_id: int, mix: Mix, batch_size: int = 8
) -> float:
    """Mean per-position KL(teacher top-k || model) at `mix`'s temperature (not scaled by T^2)."""
    device = next(model.parameters()).device
    padded = functools.partial(collate, pad_id=pad_id, device=device)
    head = causal_lm(model).get_output_embeddings()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_targets(examples[start : start + batch_size], padded, device)
        hidden, targets = labelled_hidden(model, batch)
        _, kl = linear_distill(hidden, head, targets, batch["teacher_ids"], batch["teacher_logprobs"], mix)
        total, count = total + float(kl.sum()), count + kl.numel()
    model.train(was_training)
    return total / max(1, count)
