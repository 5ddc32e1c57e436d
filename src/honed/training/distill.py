"""Distillation (`method: distill`): a student learns from a larger teacher, in one of two modes.

- sequence: the teacher writes a greedy answer to every training prompt (rendered with its own chat
  template); answers can be filtered by the eval task's score against the row's reference
  (`distill.min_score`); they are written to data/distilled.jsonl and the student is fine-tuned on them
  with SFT's completion loss.
- logit: the teacher's top-k next-token log-probabilities (at `distill.temperature`) are computed once at
  every labelled position of every example and cached in data/teacher_topk.safetensors; the loss mixes
  KL(teacher top-k || student) with the reference cross-entropy. Teacher and student must share the
  vocabulary (checked).

Either way the teacher is loaded, used and freed inside `data`, before the student is loaded, so the two
are never in memory together and training runs through the shared loop unchanged. Validation examples
keep the real references. The module supplies examples, batches, a loss and two reports; it knows nothing
of the loop, checkpoints or the run's evaluation.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from honed.config.schema import DataConfig, Recipe
from honed.data.cache import cached_examples
from honed.data.dataset import SplitReport, iter_rows
from honed.data.formats import RowError, split_prompt
from honed.data.tokenize import IGNORE, Encoded, encode_example, render_masked, render_prompt
from honed.errors import ConfigError, DataError
from honed.models.load import load_model, load_tokenizer, resolve_base, resolve_device, resolve_dtype
from honed.training.distill_loss import Mix, distill_loss, labelled_hidden, linear_distill
from honed.training.loss import DEFAULT_LOSS_CHUNK, causal_lm, collate
from honed.training.methods import Method
from honed.training.sft import sft_data, write_data_report
from honed.training.speed import batching

log = logging.getLogger(__name__)

DISTILLED = "distilled.jsonl"  # sequence mode: the teacher's answers, under run_dir/data/
TARGETS = "teacher_topk.safetensors"  # logit mode: the teacher's top-k, under run_dir/data/
SUMMARY = "distill.json"  # what the data step found, under run_dir/data/
BASE_KL = "distill_base.json"  # the base student's KL to the teacher, under run_dir/eval/


# ---------------------------------------------------------------- the teacher


def load_teacher(recipe: Recipe):
    """The teacher model (on the run's device, in the recipe's dtype) and its tokenizer."""
    folder = resolve_base(recipe.distill.teacher).folder
    device = resolve_device(recipe.train.device)
    tokenizer = load_tokenizer(folder, recipe.model.trust_remote_code)
    dtype = resolve_dtype(recipe.model.dtype, device)
    log.info("loading teacher %s", recipe.distill.teacher)
    return load_model(folder, dtype, device, recipe.model.trust_remote_code), tokenizer


def with_teacher(recipe: Recipe, use):
    """Load the teacher, return `use(model, tokenizer)`, and free the teacher's memory before returning
    (the student loads next; the two are never held together)."""
    model, tokenizer = load_teacher(recipe)
    device = next(model.parameters()).device
    try:
        return use(model, tokenizer)
    finally:
        del model  # the last reference: `use` has returned
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _interactive() -> bool:
    return sys.stderr.isatty()


def distill_data(recipe: Recipe, tokenizer, run_dir: Path):
    """Training and validation examples for `distill.mode`; writes data/ (report, distill.json, cache)."""
    if recipe.distill.mode == "sequence":
        return sequence_data(recipe, tokenizer, run_dir)
    return logit_data(recipe, tokenizer, run_dir)


# ---------------------------------------------------------------- sequence mode


def sequence_data(recipe: Recipe, tokenizer, run_dir: Path) -> tuple[list[Encoded], list[Encoded] | None]:
    """The student's examples: training prompts with the teacher's (kept) answers; real validation."""
    report = SplitReport(too_long_action=recipe.data.on_too_long)
    rows = list(iter_rows(recipe.data, "train", report))
    path = run_dir / "data" / DISTILLED
    answers = _cached_answers(path, rows, recipe.distill.teacher)
    reused = answers is not None
    if answers is None:
        answers = teacher_answers(recipe, [split_prompt(row.messages)[0] for row in rows])
    records = score_answers(recipe, rows, answers)
    _write_jsonl(path, records)
    stats = _sequence_stats(recipe, records, reused)
    train = _encode_answers(recipe.data, tokenizer, records, report)
    data_report = {"train": {**report.as_dict(), "distill": stats}}
    validation = None
    if recipe.data.validation or recipe.data.holdout_fraction:
        validation, val_report = cached_examples(recipe.data, tokenizer, "validation")
        data_report["validation"] = val_report.as_dict()
    write_data_report(run_dir, recipe, data_report, render_masked(tokenizer, train[0]))
    (run_dir / "data" / SUMMARY).write_text(json.dumps(stats, indent=2))
    return train, validation


def teacher_answers(recipe: Recipe, prompts: list[list[dict[str, str]]]) -> list[str]:
    """The teacher's greedy answers to `prompts` (its own chat template, cut at eval.stop), in order."""
    from honed.evaluation.generate import generate

    def answer(teacher, teacher_tokenizer) -> list[str]:
        return generate(
            teacher,
            teacher_tokenizer,
            [render_prompt(teacher_tokenizer, prompt) for prompt in prompts],
            recipe.distill.max_new_tokens,
            recipe.eval.batch_size,
            stop=recipe.eval.stop,
            progress=_interactive(),
            desc="teacher answers",
        )

    return with_teacher(recipe, answer)


def _cached_answers(path: Path, rows, teacher: str) -> list[str] | None:
    """The answers in an earlier data/distilled.jsonl when it was written for these rows by this teacher."""
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    same = len(records) == len(rows) and all(
        r["teacher"] == teacher and r["prompt"] == split_prompt(row.messages)[0]
        for r, row in zip(records, rows, strict=False)
    )
    if not same:
        log.info("%s does not match the training rows; the teacher answers again", path)
        return None
    log.info("reusing the teacher's %d answers in %s", len(records), path)
    return [r["answer"] for r in records]


def score_answers(recipe: Recipe, rows, answers: list[str]) -> list[dict[str, Any]]:
    """One record per row: prompt, reference, teacher answer, its score against the reference (None
    when the eval task cannot score text) and whether it is kept for training."""
    task = _scoring_task(recipe)
    threshold = recipe.distill.min_score
    records = []
    for row, answer in zip(rows, answers, strict=True):
        prompt, reference = split_prompt(row.messages)
        score = None if task is None else task.score(answer, reference, row.fields)[task.primary_metric]
        low = threshold is not None and score < threshold
        records.append(
            {
                "location": row.location,
                "teacher": recipe.distill.teacher,
                "prompt": prompt,
                "reference": reference,
                "answer": answer,
                "score": score,
                "metric": None if task is None else task.primary_metric,
                "kept": bool(answer.strip()) and not low,
                "dropped": "empty" if not answer.strip() else "low_score" if low else None,
            }
        )
    return records


def _scoring_task(recipe: Recipe):
    """The eval task, when it scores generated text; None otherwise (an error if min_score needs it)."""
    from honed.evaluation.evaluate import is_model_task
    from honed.evaluation.registry import build_task

    try:
        task = build_task(recipe.eval.task, recipe.eval.task_options)
    except ConfigError:  # a custom task from --task-file: not known to the data step
        task = None
    if task is not None and not is_model_task(task):
        return task
    if recipe.distill.min_score is not None:
        raise ConfigError(
            f"distill.min_score: eval.task {recipe.eval.task!r} cannot score the teacher's answers here "
            "(a likelihood task, or a task from --task-file); use a built-in text task (exact_match, "
            "structured, sql, math) or set distill.min_score: null"
        )
    return None


def _sequence_stats(recipe: Recipe, records: list[dict[str, Any]], reused: bool) -> dict[str, Any]:
    scores = [r["score"] for r in records if r["score"] is not None]
    kept = sum(r["kept"] for r in records)
    stats = {
        "mode": "sequence",
        "teacher": recipe.distill.teacher,
        "rows": len(records),
        "kept": kept,
        "dropped": len(records) - kept,
        "dropped_low_score": sum(r["dropped"] == "low_score" for r in records),
        "dropped_empty": sum(r["dropped"] == "empty" for r in records),
        "min_score": recipe.distill.min_score,
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
        "metric": records[0]["metric"] if records else None,
        "reused_cache": reused,
    }
    log.info(
        "teacher answers: %d kept, %d dropped (%d below distill.min_score, %d empty); mean score %s",
        kept,
        stats["dropped"],
        stats["dropped_low_score"],
        stats["dropped_empty"],
        stats["mean_score"],
    )
    if not kept:
        raise DataError(
            f"distill: no teacher answer kept out of {len(records)} (mean score {stats['mean_score']}, "
            f"distill.min_score {recipe.distill.min_score}); lower distill.min_score, raise "
            "distill.max_new_tokens or use a stronger teacher. The answers are in data/" + DISTILLED
        )
    return stats


def _encode_answers(
    cfg: DataConfig, tokenizer, records: list[dict[str, Any]], report: SplitReport
) -> list[Encoded]:
    """The kept records as student examples (prompt + teacher answer), with data.on_too_long applied."""
    examples = []
    for record in filter(lambda r: r["kept"], records):
        messages = [*record["prompt"], {"role": "assistant", "content": record["answer"]}]
        try:
            encoded = encode_example(tokenizer, messages)
        except RowError as exc:
            report.skipped_bad_rows += 1
            report.note(f"{record['location']}: {exc}")
            continue
        report.token_lengths.append(len(encoded.input_ids))
        if len(encoded.input_ids) > cfg.max_seq_len:
            report.too_long += 1
            message = f"{record['location']}: {len(encoded.input_ids)} tokens > data.max_seq_len"
            if cfg.on_too_long == "error":
                raise DataError(f"{message} {cfg.max_seq_len}; raise it or set data.on_too_long: skip")
            report.note(message)
            encoded = Encoded(encoded.input_ids[: cfg.max_seq_len], encoded.labels[: cfg.max_seq_len])
            if cfg.on_too_long == "skip" or not encoded.num_labels:
                continue
        report.label_tokens += encoded.num_labels
        examples.append(encoded)
    report.examples = len(examples)
    if not examples:
        raise DataError(
            f"distill: none of the kept teacher answers made a usable example ({report.problems})"
        )
    return examples


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda out: out.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def _atomic(path: Path, write) -> None:
    """Write `path` through a temporary file, so a half-written cache is never read."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- logit mode


def mix_of(recipe: Recipe) -> Mix:
    """The recipe's logit-mode weighting."""
    return Mix(recipe.distill.temperature, recipe.distill.kl_weight)


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


def logit_data(recipe: Recipe, tokenizer, run_dir: Path):
    """SFT's examples, each with the teacher's top-k targets (computed once, cached in the run dir)."""
    cfg = recipe.distill
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


def check_same_vocabulary(student_tokenizer, teacher_tokenizer, recipe: Recipe) -> None:
    """Logit distillation compares distributions token id by token id: the vocabularies must be equal."""
    student, teacher = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student == teacher:
        return
    differ = len(set(student.items()) ^ set(teacher.items()))
    raise ConfigError(
        f"distill.teacher: {recipe.distill.teacher!r} has a different vocabulary from model.base "
        f"{recipe.model.base!r} ({len(teacher)} vs {len(student)} tokens, {differ} token/id pairs differ); "
        "distill.mode: logit compares next-token distributions id by id and needs the same tokenizer. "
        "Use distill.mode: sequence (the teacher writes answers), or a teacher from the student's family"
    )


def _teacher_targets(recipe: Recipe, tokenizer, splits: dict[str, list[Encoded]]):
    def run(teacher, _teacher_tokenizer) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        return {
            split: teacher_topk(
                teacher,
                examples,
                tokenizer.pad_token_id,
                recipe.distill.top_k,
                recipe.distill.temperature,
                len(tokenizer),
                recipe.eval.batch_size,
                desc=f"teacher top-k ({split})",
            )
            for split, examples in splits.items()
        }

    return with_teacher(recipe, run)


@torch.no_grad()
def teacher_topk(
    model,
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
    with tqdm(total=len(examples), desc=desc, unit="row", disable=not _interactive()) as bar:
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
    cfg = recipe.distill
    digest = hashlib.sha256(f"{cfg.teacher}\0{cfg.top_k}\0{cfg.temperature}".encode())
    for split, examples in splits.items():
        digest.update(split.encode())
        for example in examples:
            digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


def _save_targets(path: Path, key: str, targets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
    from safetensors.torch import save

    tensors = {}
    for split, pairs in targets.items():
        tensors[f"{split}.ids"] = torch.cat([ids for ids, _ in pairs]).contiguous()
        tensors[f"{split}.logprobs"] = torch.cat([lp for _, lp in pairs]).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda out: out.write(save(tensors, metadata={"key": key})))


def _load_targets(path: Path, key: str, splits: dict[str, list[Encoded]]):
    """The cached targets when `path` was written for exactly these examples and settings, else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("key") != key:
            log.info("%s was made for other data or settings; the teacher runs again", path)
            return None
        found = {}
        for split, examples in splits.items():
            counts = [_positions(e) for e in examples]
            ids = handle.get_tensor(f"{split}.ids").split(counts)
            found[split] = list(zip(ids, handle.get_tensor(f"{split}.logprobs").split(counts), strict=True))
    log.info("reusing the teacher's top-k targets in %s", path)
    return found


def _logit_stats(recipe: Recipe, targets, reused: bool) -> dict[str, Any]:
    train = torch.cat([lp for _, lp in targets["train"]])
    return {
        "mode": "logit",
        "teacher": recipe.distill.teacher,
        "top_k": recipe.distill.top_k,
        "temperature": recipe.distill.temperature,
        "kl_weight": recipe.distill.kl_weight,
        "positions": {split: sum(len(ids) for ids, _ in pairs) for split, pairs in targets.items()},
        # How much of the teacher's probability its top-k holds (what renormalising scales up).
        "teacher_topk_mass": round(float(train.exp().sum(-1).mean()), 4),
        "reused_cache": reused,
    }


def collate_targets(examples: list, collate, device: torch.device) -> dict:
    """`collate` (padded or packed) plus, for logit examples, the teacher's top-k in the order of the
    batch's labelled positions: teacher_ids (n, k) long, teacher_logprobs (n, k)."""
    if not isinstance(examples[0], LogitExample):
        return collate(examples)
    batch = collate([e.example for e in examples])
    batch["teacher_ids"] = torch.cat([e.ids for e in examples]).to(device, torch.long)
    batch["teacher_logprobs"] = torch.cat([e.logprobs for e in examples]).to(device)
    return batch


def distill_batching(recipe: Recipe, cfg, tokenizer, device):
    """Packed or padded batches (with teacher targets in logit mode) and the distillation loss."""
    loss = functools.partial(distill_loss, mix=mix_of(recipe))
    collate_fn, loss_fn = batching(cfg, tokenizer.pad_token_id, device, loss=loss)
    return functools.partial(collate_targets, collate=collate_fn, device=device), loss_fn


# ---------------------------------------------------------------- before and after training


@torch.no_grad()
def mean_kl(model, examples: list[LogitExample], pad_id: int, mix: Mix, batch_size: int = 8) -> float:
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


def distill_before(model, tokenizer, train, validation, recipe: Recipe, run_dir: Path) -> None:
    """Logit mode: the base student's KL to the teacher on validation, for the after-training report."""
    if recipe.distill.mode != "logit" or not validation:
        return
    rows = validation[: recipe.train.max_eval_loss_rows]
    kl = mean_kl(model, rows, tokenizer.pad_token_id, mix_of(recipe), recipe.train.batch_size)
    log.info("base student's KL to the teacher on %d validation rows: %.4f", len(rows), kl)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    (run_dir / "eval" / BASE_KL).write_text(json.dumps({"kl_to_teacher": kl, "rows": len(rows)}))


def distill_after(model, tokenizer, validation, recipe: Recipe, run_dir: Path) -> dict[str, Any]:
    """What the data step found (kept/dropped answers, or top-k coverage) and, in logit mode, the
    student's mean KL to the teacher on validation before and after training."""
    found = json.loads((run_dir / "data" / SUMMARY).read_text())
    if recipe.distill.mode != "logit":
        return found
    rows = validation[: recipe.train.max_eval_loss_rows]
    tuned = mean_kl(model, rows, tokenizer.pad_token_id, mix_of(recipe), recipe.train.batch_size)
    base_path = run_dir / "eval" / BASE_KL
    base = json.loads(base_path.read_text())["kl_to_teacher"] if base_path.is_file() else None
    log.info("KL to the teacher on %d validation rows: base %s, tuned %.4f", len(rows), base, tuned)
    return {**found, "validation_rows": len(rows), "kl_to_teacher": {"base": base, "tuned": tuned}}


def _sequences(train: list) -> list[Encoded]:
    return [e.example if isinstance(e, LogitExample) else e for e in train]


METHOD = Method("distill", distill_data, distill_batching, distill_before, distill_after, _sequences)
