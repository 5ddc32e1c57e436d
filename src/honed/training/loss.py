"""Batch collation and the supervised (completion-only) loss.

The loss runs the decoder once, then applies the output projection only at positions whose next token
carries a label, so prompt tokens cost no vocabulary-sized logits. It returns the *sum* of token losses
and the label count; the loop divides by the label count of the whole optimizer step, which makes
gradient accumulation exact (batch 8 x 1 equals batch 2 x 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from honed.data.tokenize import IGNORE, Encoded


def collate(examples: list[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into input_ids, attention_mask and labels tensors."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def causal_lm(model):
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def labelled_token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token negative log-likelihood of every labelled position, and the batch row it belongs to.

    Shapes: input_ids/labels (batch, seq) -> two (n_labels,) tensors. Logits are computed for labelled
    positions only: an (n_labels x vocab) tensor instead of (batch x seq x vocab).
    """
    lm = causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[keep]
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="none"), rows


def completion_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over labelled positions, and how many there are."""
    nll, _ = labelled_token_nll(model, batch)
    return nll.sum(), int(nll.numel())


def row_nll(model, batch: dict[str, torch.Tensor]) -> tuple[list[float], list[int]]:
    """Per batch row: summed NLL of its labelled tokens and their count (for log-likelihood scoring)."""
    nll, rows = labelled_token_nll(model, batch)
    size = batch["input_ids"].shape[0]
    sums = torch.zeros(size, device=nll.device).index_add_(0, rows, nll.detach())
    counts = torch.zeros(size, dtype=torch.long, device=nll.device).index_add_(0, rows, torch.ones_like(rows))
    return sums.tolist(), counts.tolist()
