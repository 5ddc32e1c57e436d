"""Preference tuning (`method: dpo`): DPO, IPO, SimPO and ORPO on chosen/rejected pairs.

This module owns what makes preference tuning differ from SFT: the pair examples (a chosen and a rejected
answer to one prompt), the reference model's log-probabilities, the pair batches and losses, and the reward
metrics on held-out pairs. The loop, the optimizer and the per-sequence log-probabilities are shared
(`loop.py`, `loss.sequence_nll_sums`).

The reference model is the base model itself, scored once before the adapter is attached: the summed
log-probability of every chosen and rejected answer is stored on its pair and cached in the run directory
(`reference_logps.safetensors`), so no second model is held during training and `--resume` does not score
again. SimPO and ORPO need no reference; for them only the validation pairs are scored, for the metrics.

Every log-probability is summed over the answer's labelled tokens (the answer and its end-of-turn token);
the "per token" forms divide by that token count.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from honed.config.schema import DpoConfig, Recipe, TrainConfig
from honed.data.dataset import BadRows, SplitReport, fit_length, iter_rows, nothing_usable, split_source
from honed.data.formats import RowError, to_preference
from honed.data.tokenize import Encoded, encode_pair, render_masked
from honed.errors import TrainingError
from honed.evaluation.likelihood import sequence_nll
from honed.methods.base import Examples
from honed.models.nll import DEFAULT_LOSS_CHUNK, collate, sequence_nll_sums
from honed.runs.results import write_data_report
from honed.training.loop import Collate, LossFn
from honed.training.packing import collate_packed
from honed.training.speed import uses_packing

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.safetensors"
# Losses that compare the policy with itself only; the reference is scored for the metrics alone.
REFERENCE_FREE = frozenset({"simpo", "orpo"})


@dataclass
class PreferencePair:
    """One preference example: the chosen and the rejected conversation, tokenized with labels on the answer.

    `ref_chosen`/`ref_rejected` are the base model's summed answer log-probabilities (None until
    `attach_reference` runs, and for reference-free losses on training pairs).
    """

    chosen: Encoded
    rejected: Encoded
    ref_chosen: float | None = None
    ref_rejected: float | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens the pair puts through the model: both sequences."""
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


# ---- data ----


def build_pairs(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, split: str
) -> tuple[list[PreferencePair], SplitReport]:
    """Tokenized pairs of a split and the report of every row's fate (malformed, too long, kept)."""
    cfg = recipe.data
    report = SplitReport(too_long_action=cfg.on_too_long)
    bad = BadRows(split_source(cfg, split)[0], cfg.on_bad_row)
    pairs = []
    for row in iter_rows(cfg, split, report, raw=True):
        if bad.count and cfg.on_bad_row == "error":
            continue  # iter_rows reads on; our own malformed rows are reported together at the end
        try:
            prompt, chosen, rejected = to_preference(row.fields)
            if cfg.system_prompt and prompt[0]["role"] != "system":
                prompt = [{"role": "system", "content": cfg.system_prompt}, *prompt]
            encoded = encode_pair(tokenizer, prompt, chosen, rejected, recipe.dpo.max_prompt_len)
        except RowError as exc:
            bad.add(report, f"{row.location}: {exc}", "preference")
            continue
        report.token_lengths.extend(len(e.input_ids) for e in encoded)
        fitted = fit_length(cfg, report, row.location, encoded, lower="dpo.max_prompt_len")
        if fitted is not None:
            report.label_tokens += fitted[0].num_labels + fitted[1].num_labels
            pairs.append(PreferencePair(fitted[0], fitted[1]))
    bad.raise_if_any("preference")
    report.examples = len(pairs)
    if not pairs:
        raise nothing_usable(cfg, report, split, "preference pairs")
    return pairs, report


def dpo_data(
    recipe: Recipe, tokenizer: PreTrainedTokenizerBase, run_dir: Path
) -> tuple[list[PreferencePair], list[PreferencePair] | None]:
    """Pairs of both splits; writes data/report.json and a sample showing both answers' loss masks."""
    train, train_report = build_pairs(recipe, tokenizer, "train")
    report = {"train": train_report.as_dict()}
    validation = None
    if recipe.data.has_validation:
        validation, val_report = build_pairs(recipe, tokenizer, "validation")
        report["validation"] = val_report.as_dict()
    first = train[0]
    sample = (
        f"--- chosen ---\n{render_masked(tokenizer, first.chosen)}\n\n"
        f"--- rejected ---\n{render_masked(tokenizer, first.rejected)}\n"
    )
    write_data_report(run_dir, recipe, report, sample)
    return train, validation


def pair_sequences(pairs: list[PreferencePair]) -> list[Encoded]:
    """Chosen, rejected, chosen, rejected, ...: the sequences the model runs (in batch order)."""
    return [sequence for pair in pairs for sequence in (pair.chosen, pair.rejected)]


# ---- the reference ----


def reference_logps(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair], batch_size: int
) -> torch.Tensor:
    """Summed answer log-probabilities under `model`, no gradients, eval mode: (pairs, 2) float64, columns
    chosen and rejected."""
    scored = sequence_nll(model, tokenizer, pair_sequences(pairs), batch_size)
    return -torch.tensor([nll for nll, _ in scored], dtype=torch.float64).reshape(-1, 2)


def pairs_digest(pairs: list[PreferencePair]) -> str:
    """sha256 of every pair's token ids and labels: what a cached reference was computed for."""
    digest = hashlib.sha256()
    for sequence in pair_sequences(pairs):
        digest.update(array("q", [len(sequence.input_ids)]).tobytes())
        digest.update(array("q", sequence.input_ids).tobytes())
        digest.update(array("q", sequence.labels).tobytes())
    return digest.hexdigest()


def attach_reference(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: list[PreferencePair],
    validation: list[PreferencePair] | None,
    recipe: Recipe,
    run_dir: Path,
) -> None:
    """Score the pairs under the base model (before the adapter) and store the results on each pair.

    Reads `run_dir/reference_logps.safetensors` when it was written for the same base and pairs (same
    count and token digest), so a resumed run does not score again; otherwise scores and (re)writes it.
    Reference-free losses score only the validation pairs (for the reward metrics).
    """
    splits = {"validation": validation} if validation else {}
    if recipe.dpo.loss not in REFERENCE_FREE:
        splits = {"train": train, **splits}
    if not splits:
        return
    path = run_dir / REFERENCE_FILE
    keys = {"base": f"{recipe.model.base}@{recipe.model.revision or ''}"}
    for split, pairs in splits.items():
        keys |= {f"{split}_pairs": str(len(pairs)), f"{split}_sha256": pairs_digest(pairs)}
    found = _read_reference(path, keys, list(splits))
    if found is None:
        batch_size = 2 * recipe.train.batch_size
        log.info("scoring %s under the reference (base) model", " and ".join(splits))
        found = {
            split: reference_logps(model, tokenizer, pairs, batch_size) for split, pairs in splits.items()
        }
        _write_reference(path, found, keys)
    else:
        log.info("reference log-probabilities read from %s", path)
    for split, pairs in splits.items():
        for pair, (chosen, rejected) in zip(pairs, found[split].tolist(), strict=True):
            pair.ref_chosen, pair.ref_rejected = chosen, rejected


def _read_reference(path: Path, keys: dict[str, str], splits: list[str]) -> dict[str, torch.Tensor] | None:
    """The cached reference of `splits`, or None when absent or written for other pairs or another base
    (its metadata must hold every entry of `keys`: the base, each split's pair count and token digest)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        stored = handle.metadata() or {}
        if any(stored.get(name) != value for name, value in keys.items()):
            log.warning("%s was computed for other pairs or another base; scoring again", path)
            return None
        return {split: handle.get_tensor(split) for split in splits}


def _write_reference(path: Path, found: dict[str, torch.Tensor], keys: dict[str, str]) -> None:
    from safetensors.torch import save_file

    partial = path.with_suffix(".partial")
    save_file({split: t.contiguous() for split, t in found.items()}, str(partial), metadata=keys)
    partial.replace(path)  # atomic: an interrupted write never leaves a half file that looks valid


# ---- losses ----


@dataclass
class PairLogps:
    """Per pair (shape (pairs,) each): policy answer log-probs (summed), answer token counts, and the
    reference's summed log-probs (None for reference-free losses)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None

    def log_ratio_margin(self, per_token: bool = False) -> torch.Tensor:
        """(policy - reference) of chosen minus that of rejected; per token: each divided by its length."""
        chosen = self.chosen - self.ref_chosen
        rejected = self.rejected - self.ref_rejected
        if per_token:
            chosen, rejected = chosen / self.chosen_tokens, rejected / self.rejected_tokens
        return chosen - rejected


def sigmoid_loss(logps: PairLogps, settings: DpoConfig) -> torch.Tensor:
    """DPO: -log sigmoid(beta * margin of the log-ratios), summed log-probs."""
    return -F.logsigmoid(settings.beta * logps.log_ratio_margin())


def ipo_loss(logps: PairLogps, settings: DpoConfig) -> torch.Tensor:
    """IPO: (h - 1 / (2 beta))^2, with h the log-ratio margin of per-token log-probs, as TRL computes it
    (TRL divides policy and reference log-probs by the answer length for IPO)."""
    return (logps.log_ratio_margin(per_token=True) - 1 / (2 * settings.beta)) ** 2


def simpo_loss(logps: PairLogps, settings: DpoConfig) -> torch.Tensor:
    """SimPO: -log sigmoid(beta * (chosen - rejected per-token log-probs) - gamma); no reference."""
    margin = logps.chosen / logps.chosen_tokens - logps.rejected / logps.rejected_tokens
    return -F.logsigmoid(settings.beta * margin - settings.simpo_gamma)


def orpo_loss(logps: PairLogps, settings: DpoConfig) -> torch.Tensor:
    """ORPO: the chosen answer's NLL per token + beta * -log sigmoid(log odds(chosen) - log odds(rejected)),
    with log odds(p) = log p - log(1 - p) of the per-token (mean) log-prob; no reference. The NLL is
    averaged per pair (TRL averages over the batch's chosen tokens)."""
    chosen = logps.chosen / logps.chosen_tokens
    rejected = logps.rejected / logps.rejected_tokens
    ratio = _log_odds(chosen) - _log_odds(rejected)
    return -chosen - settings.beta * F.logsigmoid(ratio)


def _log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    # log(1 - exp(x)) = log(-expm1(x)) is exact near 0, where log1p(-exp(x)) loses digits; a mean log-prob
    # of exactly 0 (a certain answer) would make it -inf, so it is kept just below.
    mean_logp = mean_logp.clamp(max=-1e-6)
    return mean_logp - torch.log(-torch.expm1(mean_logp))


LOSSES: dict[str, Callable[[PairLogps, DpoConfig], torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
    "simpo": simpo_loss,
    "orpo": orpo_loss,
}


# ---- batches ----


def collate_pairs(
    pairs: list[PreferencePair], pad_id: int, device: torch.device, packed: bool
) -> dict[str, Any]:
    """One batch of pairs: sequences in the order chosen, rejected, chosen, ... (packed in one row with
    segment ids, or padded rows), `loss_units` = pairs, and the pairs' reference log-probs."""
    sequences = pair_sequences(pairs)
    batch: dict[str, Any] = (
        collate_packed(sequences, device, segments=True) if packed else collate(sequences, pad_id, device)
    )
    batch["loss_units"] = len(pairs)
    if all(p.ref_chosen is not None and p.ref_rejected is not None for p in pairs):
        refs = [[p.ref_chosen, p.ref_rejected] for p in pairs]
        batch["ref_logps"] = torch.tensor(refs, dtype=torch.float32, device=device)
    return batch


def pair_loss(
    model: torch.nn.Module, batch: dict[str, Any], settings: DpoConfig, chunk: int = DEFAULT_LOSS_CHUNK
) -> tuple[torch.Tensor, int]:
    """Sum of the pairs' losses under the recipe's `dpo` settings (with gradients), and the pair count."""
    nll, counts = sequence_nll_sums(model, batch, chunk)
    logps = PairLogps(-nll[0::2], -nll[1::2], counts[0::2].clamp(min=1), counts[1::2].clamp(min=1))
    if settings.loss not in REFERENCE_FREE:
        if "ref_logps" not in batch:
            raise TrainingError(
                f"dpo.loss {settings.loss!r} needs the reference log-probabilities, but these pairs have "
                "none; the dpo method's before_training pass (dpo.attach_reference) computes them"
            )
        logps.ref_chosen, logps.ref_rejected = batch["ref_logps"][:, 0], batch["ref_logps"][:, 1]
    losses = LOSSES[settings.loss](logps, settings)
    return losses.sum(), int(batch["loss_units"])


def dpo_batching(
    recipe: Recipe, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device
) -> tuple[Collate, LossFn]:
    """(collate, loss_fn) for the loop: pairs packed (when `train.packing` resolves on) or padded."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    packed = uses_packing(cfg, device)

    def collate_fn(pairs: Examples) -> dict[str, Any]:  # PreferencePairs; loop.Collate says list[Encoded]
        return collate_pairs(pairs, pad, device, packed)

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        return pair_loss(model, batch, recipe.dpo, cfg.loss_chunk_tokens)

    return collate_fn, loss_fn


# ---- held-out metrics ----


def preference_metrics(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    validation: list[PreferencePair],
    recipe: Recipe,
    run_dir: Path,
) -> dict[str, Any]:
    """Reward and log-prob preference metrics of `model` on held-out pairs (eval/dpo.json).

    - reward = beta * (log p_model(answer) - log p_base(answer)), the implicit reward DPO trains
      (per-token log-probs for ipo, as its loss uses; summed otherwise);
      reward_accuracy: fraction of pairs whose chosen reward beats the rejected one; reward_margin and
      chosen_reward/rejected_reward: their means.
    - logp_accuracy (summed) and logp_accuracy_per_token: fraction of pairs where the model gives the
      chosen answer the higher log-prob; base_logp_accuracy*: the same for the base (from the reference).
    """
    scored = sequence_nll(model, tokenizer, pair_sequences(validation), recipe.eval.batch_size)
    chosen = torch.tensor([-nll for nll, _ in scored[0::2]], dtype=torch.float64)
    rejected = torch.tensor([-nll for nll, _ in scored[1::2]], dtype=torch.float64)
    chosen_tokens = torch.tensor([max(n, 1) for _, n in scored[0::2]], dtype=torch.float64)
    rejected_tokens = torch.tensor([max(n, 1) for _, n in scored[1::2]], dtype=torch.float64)
    found: dict[str, Any] = {
        "loss": recipe.dpo.loss,
        "beta": recipe.dpo.beta,
        "pairs": len(validation),
        **_logp_accuracy("", chosen, rejected, chosen_tokens, rejected_tokens),
    }
    if any(p.ref_chosen is None or p.ref_rejected is None for p in validation):
        found["reference"] = None  # no base scores: log-prob metrics only
        return found
    ref_chosen = torch.tensor([p.ref_chosen for p in validation], dtype=torch.float64)
    ref_rejected = torch.tensor([p.ref_rejected for p in validation], dtype=torch.float64)
    per_token = recipe.dpo.loss == "ipo"
    scale_chosen, scale_rejected = (chosen_tokens, rejected_tokens) if per_token else (1.0, 1.0)
    chosen_reward = recipe.dpo.beta * (chosen - ref_chosen) / scale_chosen
    rejected_reward = recipe.dpo.beta * (rejected - ref_rejected) / scale_rejected
    return {
        **found,
        "reference": "base model, scored before training",
        "reward_logps": "per_token" if per_token else "summed",
        "reward_accuracy": _mean(chosen_reward > rejected_reward),
        "reward_margin": _mean(chosen_reward - rejected_reward),
        "chosen_reward": _mean(chosen_reward),
        "rejected_reward": _mean(rejected_reward),
        **_logp_accuracy("base_", ref_chosen, ref_rejected, chosen_tokens, rejected_tokens),
    }


def _logp_accuracy(
    prefix: str,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
) -> dict[str, float]:
    return {
        f"{prefix}logp_accuracy": _mean(chosen > rejected),
        f"{prefix}logp_accuracy_per_token": _mean(chosen / chosen_tokens > rejected / rejected_tokens),
        f"{prefix}logp_margin_per_token": _mean(chosen / chosen_tokens - rejected / rejected_tokens),
    }


def _mean(values: torch.Tensor) -> float:
    return round(float(values.double().mean()), 6)


def check_split(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, split: str) -> dict[str, Any]:
    """The split's pair report, as training would build it (`honed validate`)."""
    return build_pairs(recipe, tokenizer, split)[1].as_dict()


# This module is a `methods.base.Method`: its hooks (mypy checks them in methods/registry.py).
data = dpo_data
batching = dpo_batching
before_training = attach_reference
after_training = preference_metrics
sequences = pair_sequences
