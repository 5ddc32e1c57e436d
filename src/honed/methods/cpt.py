"""Continued pre-training (`method: cpt`): raw domain text, every token trained, as in pre-training.

Documents are tokenized, each followed by an end-of-document token, and laid end to end in one stream
that is cut into blocks of `data.max_seq_len` tokens: a document may start in one block and end in the
next, so no token is wasted on padding or dropped for being long. Attention runs over the whole block,
across document boundaries, as GPT-style pre-training does (the end-of-document token tells the model a
new document starts). With `cpt.replay`, a share of the blocks (`cpt.replay_fraction`) is general text,
which limits forgetting.

The loss is the shared next-token loss over every position (the blocks carry labels everywhere); what
CPT owns is the data. It measures itself by perplexity: on held-out domain text through `eval.task:
perplexity`, and on general text before and after training (`cpt.general_eval`, or the paragraphs of
everyday English that `evaluation.forgetting` ships), written to eval/cpt.json.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from honed.config.schema import Recipe
from honed.data.dataset import BadRows, SplitReport, iter_rows, split_source
from honed.data.sources import read_rows
from honed.data.tokenize import Encoded
from honed.errors import DataError
from honed.evaluation.forgetting import GENERAL_TEXT
from honed.evaluation.likelihood import PerplexityTask, sequence_nll
from honed.methods.base import Examples, one_sequence_each
from honed.methods.sft import sft_batching
from honed.runs.results import write_data_report

log = logging.getLogger(__name__)

# Preferred end-of-document token: the pre-training separator of SmolLM2, Qwen and GPT-2-style
# vocabularies. A chat model's eos is often its end-of-turn token (<|im_end|>), which is not what ends a
# document; it is used only when the vocabulary has no <|endoftext|>.
DOCUMENT_END = "<|endoftext|>"
TOKENIZE_BATCH = 64


def document_end_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token put after every document: <|endoftext|> when the vocabulary has it, else eos."""
    found = tokenizer.get_vocab().get(DOCUMENT_END)
    if found is not None:
        return found
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has neither <|endoftext|> nor an eos token to end documents with")
    return tokenizer.eos_token_id


def token_stream(texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, end_id: int) -> list[int]:
    """Every text's tokens followed by `end_id`, end to end."""
    stream: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(end_id)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == TOKENIZE_BATCH:
            flush()
    if batch:
        flush()
    return stream


def blocks(stream: list[int], block_len: int) -> list[Encoded]:
    """Cut the stream into blocks of `block_len` tokens, every token labelled (the last block may be
    shorter; one of a single token has nothing to predict and is dropped)."""
    cut = [stream[start : start + block_len] for start in range(0, len(stream), block_len)]
    return [Encoded(ids, list(ids)) for ids in cut if len(ids) > 1]


def cpt_data(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path
) -> tuple[list[Encoded], list[Encoded] | None]:
    """Domain blocks (plus replay blocks) for training, domain blocks of the validation split."""
    end_id = document_end_id(tokenizer)
    block_len = recipe.data.max_seq_len
    train, train_report = _split_blocks(recipe, "train", tokenizer, end_id)
    report = {"train": train_report}
    replay = _replay_blocks(recipe, tokenizer, end_id, len(train))
    if replay:
        train_report["replay_blocks"] = len(replay)
        train_report["examples"] += len(replay)
        train = train + replay
    validation = None
    if recipe.data.has_validation:
        validation, report["validation"] = _split_blocks(recipe, "validation", tokenizer, end_id)
    sample = tokenizer.decode(train[0].input_ids)
    write_data_report(run_dir, recipe, report, f"block 1 of {len(train)} ({block_len} tokens):\n{sample}")
    log.info(
        "cpt: %d training blocks of %d tokens (%d general-text replay), document end %r",
        len(train),
        block_len,
        len(replay),
        tokenizer.convert_ids_to_tokens(end_id),
    )
    return train, validation


def _split_blocks(
    recipe: Recipe, split: str, tokenizer: PreTrainedTokenizerBase, end_id: int
) -> tuple[list[Encoded], dict[str, Any]]:
    report = SplitReport(too_long_action="packed across blocks")
    texts = list(_documents(recipe, split, report))
    stream = token_stream(texts, tokenizer, end_id)
    found = blocks(stream, recipe.data.max_seq_len)
    if not found:
        raise DataError(f"{split} data: no text to train on in {report.rows_read} rows")
    report.examples = len(found)
    report.label_tokens = sum(len(b.input_ids) - 1 for b in found)
    report.token_lengths = [len(b.input_ids) for b in found]
    info = report.as_dict()
    info.update(documents=len(texts), document_tokens=len(stream), block_len=recipe.data.max_seq_len)
    return found, info


def _documents(recipe: Recipe, split: str, report: SplitReport) -> Iterable[str]:
    """The split's document texts; a row without text is malformed (skipped or an error, as configured)."""
    field = recipe.cpt.text_field
    bad = BadRows(split_source(recipe.data, split)[0], recipe.data.on_bad_row)
    for row in iter_rows(recipe.data, split, report, raw=True):
        text = row.fields.get(field)
        if isinstance(text, str) and text.strip():
            yield text
            continue
        fields = ", ".join(sorted(row.fields))
        message = f"{row.location}: no text in field {field!r} (fields: {fields}; set cpt.text_field)"
        bad.add(report, message, None)
    bad.raise_if_any("text")


def _replay_blocks(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, end_id: int, domain_blocks: int
) -> list[Encoded]:
    """General-text blocks making up `cpt.replay_fraction` of the training blocks, drawn with the seed
    (repeated when the replay source is shorter than the share asks for)."""
    cfg = recipe.cpt
    if not cfg.replay or cfg.replay_fraction <= 0:
        return []
    wanted = round(domain_blocks * cfg.replay_fraction / (1 - cfg.replay_fraction))
    texts = _texts(cfg.replay, cfg.replay_text_field, "cpt.replay")
    pool = blocks(token_stream(texts, tokenizer, end_id), recipe.data.max_seq_len)
    if not pool or wanted == 0:
        return []
    if len(pool) < wanted:
        log.warning("cpt.replay has %d blocks, fewer than the %d wanted: repeating them", len(pool), wanted)
    rng = random.Random(recipe.train.seed)
    return [pool[i % len(pool)] for i in rng.sample(range(max(wanted, len(pool))), wanted)]


def _texts(source: str, field: str, key: str, limit: int | None = None) -> list[str]:
    """The `field` strings of a source's rows (rows without it are skipped, and counted in the log)."""
    texts, missing = [], 0
    for row in read_rows(source):
        value = (row.row or {}).get(field)
        if isinstance(value, str) and value.strip():
            texts.append(value)
        else:
            missing += 1
        if limit is not None and len(texts) >= limit:
            break
    if missing:
        log.warning("%s: %d rows of %s have no text in field %r; skipped", key, missing, source, field)
    if not texts:
        raise DataError(f"{key}: {source} has no rows with text in field {field!r}; set {key}_text_field")
    return texts


def general_rows(recipe: Recipe) -> list[Mapping[str, Any]]:
    """The general text whose perplexity shows forgetting: `cpt.general_eval`, or honed's own paragraphs."""
    cfg = recipe.cpt
    if cfg.general_eval is None:
        return [{"text": text} for text in GENERAL_TEXT]
    texts = _texts(cfg.general_eval, cfg.general_eval_field, "cpt.general_eval", cfg.general_eval_max_rows)
    return [{"text": text} for text in texts]


def perplexities(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    validation: list[Encoded] | None,
    recipe: Recipe,
) -> dict[str, Any]:
    """Perplexity of `model` on the general text and on the held-out domain blocks."""
    task = PerplexityTask(max_seq_len=recipe.data.max_seq_len)
    rows = general_rows(recipe)
    general = task.aggregate([r["score"] for r in task.run(model, tokenizer, rows, recipe.eval.batch_size)])
    found = {"general_text": {"perplexity": general["perplexity"], "tokens": int(general["tokens"])}}
    if validation:
        results = sequence_nll(model, tokenizer, validation, recipe.eval.batch_size)
        nll, count = sum(r[0] for r in results), sum(r[1] for r in results)
        found["domain_validation"] = {"perplexity": math.exp(nll / max(count, 1)), "tokens": count}
    return found


_BASE_SCORES = "_cpt_base.json"


def before_training(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: Examples,
    validation: Examples | None,
    recipe: Recipe,
    run_dir: Path,
) -> None:
    """Score the base model on general text and held-out domain blocks (kept for after_training)."""
    path = run_dir / "eval" / _BASE_SCORES
    if path.is_file():  # a resumed run scored its base already
        return
    path.parent.mkdir(exist_ok=True)
    found = perplexities(model, tokenizer, validation, recipe)
    log.info("cpt: base perplexity %s", _brief(found))
    path.write_text(json.dumps(found))


def after_training(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    validation: Examples,
    recipe: Recipe,
    run_dir: Path,
) -> dict[str, Any]:
    """Perplexity before and after training on general text (forgetting) and held-out domain blocks."""
    base = json.loads((run_dir / "eval" / _BASE_SCORES).read_text())
    tuned = perplexities(model, tokenizer, validation, recipe)
    log.info("cpt: tuned perplexity %s (base %s)", _brief(tuned), _brief(base))
    found = {
        name: {
            "base_perplexity": base[name]["perplexity"],
            "tuned_perplexity": tuned[name]["perplexity"],
            "tokens": tuned[name]["tokens"],
        }
        for name in tuned
    }
    found["general_text"]["source"] = recipe.cpt.general_eval or "honed's built-in English paragraphs"
    return found


def _brief(found: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value['perplexity']:.3f}" for name, value in found.items())


def check_split(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, split: str) -> dict[str, Any]:
    """The split's block report, as training would build it (`honed validate`)."""
    return _split_blocks(recipe, split, tokenizer, document_end_id(tokenizer))[1]


# This module is a `methods.base.Method`: its hooks (mypy checks them in methods/registry.py).
data = cpt_data
batching = sft_batching
sequences = one_sequence_each
