"""Batch collation and the supervised (completion-only) loss.

The loss runs the decoder once, then applies the output projection only at positions whose next token
carries a label, so prompt tokens cost no vocabulary-sized logits. Those positions go through
`linear_cross_entropy` in chunks of `chunk` tokens, so not even the (labelled tokens x vocab) logits exist
at once: each chunk's logits are made, reduced to its token losses (and, when training, to the gradient
with respect to the hidden states), and freed. The loss returns the *sum* of token losses and the label
count; the loop divides by the label count of the whole optimizer step, which makes gradient accumulation
exact (batch 8 x 1 equals batch 2 x 4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from honed.data.tokenize import IGNORE, Encoded

if TYPE_CHECKING:
    from torch.autograd.function import FunctionCtx
    from transformers import PreTrainedModel

# Labelled tokens whose logits are materialised together: 512 x 49,152 vocab x 4 bytes = 100 MB.
DEFAULT_LOSS_CHUNK = 512

# Batch keys the decoder receives besides input_ids (packed rows carry the example boundaries).
DECODER_KEYS = (
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
)


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


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in a padded or packed batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-token NLL of `hidden @ weight.T` against `targets`, chunk by chunk.

    When only the hidden states need a gradient (LoRA: the output projection is frozen), the forward pass
    computes it at once, d nll_i / d h_i = (softmax_i - onehot_i) @ W, and keeps that (tokens x hidden)
    tensor instead of any logits; backward just scales it. When the weight needs a gradient too (full
    fine-tuning), backward recomputes each chunk's logits.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> torch.Tensor:
        nll = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        precompute = grad_hidden is not None and not ctx.needs_input_grad[1]
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            nll[start : start + chunk] = lse - logits.gather(1, t[:, None]).squeeze(1)
            if precompute and grad_hidden is not None:  # precompute implies the buffer exists
                grad_hidden[start : start + chunk] = _grad_logits(logits, lse, t).to(weight.dtype) @ weight
        ctx.chunk, ctx.precompute = chunk, precompute
        ctx.save_for_backward(grad_hidden if precompute else hidden, weight, targets)
        return nll

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad_nll: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        saved, weight, targets = ctx.saved_tensors
        if ctx.precompute:
            return saved * grad_nll[:, None].to(saved.dtype), None, None, None
        hidden, chunk = saved, ctx.chunk
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            upstream = grad_nll[start : start + chunk, None]
            grad_logits = (_grad_logits(logits, lse, t) * upstream).to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.T @ h
        return grad_hidden, grad_weight, None, None


def _grad_logits(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d nll / d logits = softmax - onehot, computed in place in `logits`."""
    probs = logits.sub_(lse[:, None]).exp_()
    probs[torch.arange(targets.shape[0], device=targets.device), targets] -= 1.0
    return probs


def linear_cross_entropy(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk: int = DEFAULT_LOSS_CHUNK
) -> torch.Tensor:
    """Per-token NLL of the output projection `head` applied to `hidden` (n, d) against `targets` (n,).

    Equal to `F.cross_entropy(head(hidden).float(), targets, reduction="none")` in value and gradients
    (tested), without holding more than `chunk` rows of logits.
    """
    weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
    if type(head) is not torch.nn.Linear or bias is not None:
        # An adapted or biased head (e.g. LoRA on lm_head): the plain path, correct if not lean.
        return F.cross_entropy(head(hidden).float(), targets, reduction="none")
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk)


def labelled_token_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int = DEFAULT_LOSS_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token negative log-likelihood of every labelled position, and the sequence it belongs to.

    Shapes: input_ids/labels (batch, seq) -> two (n_labels,) tensors. Works on padded batches (`collate`)
    and packed rows (`packing.collate_packed`). The owner is the batch row, or, when the batch carries
    `segment_ids` (batch, seq) (a packed row made with `segments=True`), the packed example's index.
    """
    lm = causal_lm(model)
    extra = {key: batch[key] for key in DECODER_KEYS if key in batch}
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], use_cache=False, **extra).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    if "segment_ids" in batch:
        rows = batch["segment_ids"][:, 1:][keep]
    else:
        rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[keep]
    nll = linear_cross_entropy(hidden[:, :-1][keep], lm.get_output_embeddings(), targets[keep], chunk)
    return nll, rows


def completion_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int = DEFAULT_LOSS_CHUNK
) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over labelled positions, and how many there are."""
    nll, _ = labelled_token_nll(model, batch, chunk)
    return nll.sum(), int(nll.numel())


def sequence_nll_sums(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int = DEFAULT_LOSS_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence (batch row, or packed segment): summed NLL of its labelled tokens (with gradients)
    and their count. Shapes: (sequences,) each."""
    nll, rows = labelled_token_nll(model, batch, chunk)
    size = sequence_count(batch)
    sums = torch.zeros(size, dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    counts = torch.zeros(size, dtype=torch.long, device=nll.device).index_add_(0, rows, torch.ones_like(rows))
    return sums, counts


def sequence_count(batch: dict[str, torch.Tensor]) -> int:
    """Sequences in a batch: packed segments when it carries `segment_ids`, else rows."""
    if "segment_ids" in batch:
        return int(batch["cu_seq_lens_q"].numel()) - 1
    return int(batch["input_ids"].shape[0])


def row_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[list[float], list[int]]:
    """Per batch row: summed NLL of its labelled tokens and their count (for log-likelihood scoring)."""
    sums, counts = sequence_nll_sums(model, batch)
    return sums.detach().tolist(), counts.tolist()
