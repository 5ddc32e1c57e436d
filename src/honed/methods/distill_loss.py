"""The logit-distillation loss: KL to a teacher's top-k next-token distribution, mixed with cross-entropy.

At every labelled position the teacher's top-k log-probabilities (renormalised over the k) are compared
with the student's full log-softmax at the same temperature; the loss is
`kl_weight * T^2 * KL + (1 - kl_weight) * CE(reference token)`. Like `loss.linear_cross_entropy`, the
student's logits are made `chunk` positions at a time and never all at once. This module owns the loss
only; where the teacher's targets come from is `distill.py`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from honed.data.tokenize import IGNORE
from honed.models.nll import DECODER_KEYS, DEFAULT_LOSS_CHUNK, causal_lm, completion_loss


@dataclass(frozen=True)
class Mix:
    """How logit mode weighs its loss: `kl_weight * T^2 * KL + (1 - kl_weight) * CE`, at temperature T."""

    temperature: float
    kl_weight: float


def distill_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position, KL(teacher top-k renormalised || student) at `temperature`, and the reference NLL.

    Shapes: logits (n, vocab) float, targets (n,), ids and teacher_logprobs (n, k) -> two (n,) tensors.
    The student's log-probabilities are its full log-softmax(logits / T) gathered at the k ids.
    """
    ce = torch.logsumexp(logits, dim=-1) - logits.gather(1, targets[:, None]).squeeze(1)
    scaled = logits / temperature
    student = scaled.gather(1, ids) - torch.logsumexp(scaled, dim=-1, keepdim=True)
    teacher = torch.log_softmax(teacher_logprobs.float(), dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1), ce


def _grad_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    temperature: float,
    kl_weight: float,
) -> torch.Tensor:
    """d loss / d logits of the mixed per-position loss: T * w * (softmax(z / T) - p_teacher) +
    (1 - w) * (softmax(z) - onehot(target)), where p_teacher sits on the k ids."""
    grad = torch.softmax(logits / temperature, dim=-1).mul_(kl_weight * temperature)
    teacher = torch.softmax(teacher_logprobs.float(), dim=-1)
    grad.scatter_add_(1, ids, teacher.mul_(-kl_weight * temperature))
    if kl_weight < 1:
        grad.add_(torch.softmax(logits, dim=-1), alpha=1 - kl_weight)
        grad[torch.arange(targets.shape[0], device=targets.device), targets] -= 1 - kl_weight
    return grad


class _LinearDistill(torch.autograd.Function):
    """The mixed loss of `hidden @ weight.T`, chunk by chunk, like loss._LinearCrossEntropy: with a frozen
    head the gradient for the hidden states is computed in forward and no logits are kept; otherwise
    backward recomputes each chunk's logits. The second output (the KL alone) has no gradient."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ids: torch.Tensor,
        teacher_logprobs: torch.Tensor,
        temperature: float,
        kl_weight: float,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        kl = torch.empty_like(loss)
        # A frozen head: the hidden states' gradient is made here (a trained head recomputes in backward).
        precompute = ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if precompute else None
        terms = (temperature, kl_weight)
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            logits = (hidden[part] @ weight.T).float()
            kl[part], ce = distill_terms(
                logits, targets[part], ids[part], teacher_logprobs[part], temperature
            )
            loss[part] = kl_weight * temperature**2 * kl[part] + (1 - kl_weight) * ce
            if grad_hidden is not None:
                grad = _grad_logits(logits, targets[part], ids[part], teacher_logprobs[part], *terms)
                grad_hidden[part] = grad.to(weight.dtype) @ weight
        ctx.chunk, ctx.terms, ctx.precompute = chunk, terms, precompute
        ctx.save_for_backward(grad_hidden if precompute else hidden, weight, targets, ids, teacher_logprobs)
        ctx.mark_non_differentiable(kl)
        return loss, kl

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor, _grad_kl: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        saved, weight, targets, ids, teacher_logprobs = ctx.saved_tensors
        if ctx.precompute:
            return saved * grad_loss[:, None].to(saved.dtype), *[None] * 7
        hidden = saved
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            part = slice(start, start + ctx.chunk)
            logits = (hidden[part] @ weight.T).float()
            grad = _grad_logits(logits, targets[part], ids[part], teacher_logprobs[part], *ctx.terms)
            grad = (grad * grad_loss[part, None]).to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[part] = grad @ weight
            if grad_weight is not None:
                grad_weight += grad.T @ hidden[part]
        return grad_hidden, grad_weight, *[None] * 6


def linear_distill(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mix: Mix,
    chunk: int = DEFAULT_LOSS_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per labelled position: the mixed loss (with gradients) and the KL alone (without), for `head`
    applied to `hidden` (n, d), without holding more than `chunk` rows of logits."""
    weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
    if type(head) is not torch.nn.Linear or bias is not None:  # an adapted or biased head: the plain path
        kl, ce = distill_terms(head(hidden).float(), targets, ids, teacher_logprobs, mix.temperature)
        return mix.kl_weight * mix.temperature**2 * kl + (1 - mix.kl_weight) * ce, kl.detach()
    return _LinearDistill.apply(
        hidden, weight, targets, ids, teacher_logprobs, mix.temperature, mix.kl_weight, chunk
    )


def labelled_hidden(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's hidden states at the positions whose next token is labelled, and those labels.

    Shapes: (n_labels, hidden) and (n_labels,), in the order `labels[:, 1:] != IGNORE` selects them.
    """
    extra = {key: batch[key] for key in DECODER_KEYS if key in batch}
    decoder = causal_lm(model).get_decoder()
    hidden = decoder(input_ids=batch["input_ids"], use_cache=False, **extra).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    return hidden[:, :-1][keep], targets[keep]


def distill_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    mix: Mix | None = None,
    chunk: int = DEFAULT_LOSS_CHUNK,
) -> tuple[torch.Tensor, int]:
    """Sum of the mixed loss (weighed by `mix`) over labelled positions and their count; the completion
    loss for batches without teacher targets (sequence mode)."""
    if "teacher_ids" not in batch:
        return completion_loss(model, batch, chunk)
    assert mix is not None, "batches with teacher targets (logit mode) need the recipe's Mix"
    hidden, targets = labelled_hidden(model, batch)
    head = causal_lm(model).get_output_embeddings()
    loss, _ = linear_distill(
        hidden, head, targets, batch["teacher_ids"], batch["teacher_logprobs"], mix, chunk
    )
    return loss.sum(), int(loss.numel())
