"""Batched generation with a KV cache: greedy or sampled, stop strings, finished rows dropped early.

Prompts arrive as already-rendered text (see `honed.data.tokenize.render_prompt`), so evaluation and
serving see exactly what training saw. Rows are sorted by length so each batch carries little padding,
and results come back in the caller's order.

Why not `model.generate`: its per-step machinery (logits processors, stopping criteria, full-vocabulary
logits for every prompt position at prefill) costs time and memory a CPU cannot spare, and it keeps
computing rows that have already finished. This loop asks for the last position's logits only, and
removes finished rows from the batch and the cache (`DynamicCache.batch_select_indices`), so one long
rambling answer no longer makes the whole batch pay for its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy when temperature is 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


GREEDY = Sampling()


def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    stop: list[str] | None = None,
    sampling: Sampling = GREEDY,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Completions of `prompts` (special tokens removed, cut at the first stop string), in input order."""
    from tqdm.auto import tqdm

    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    generator = make_generator(sampling, next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with tqdm(total=len(prompts), desc=desc, unit="row", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = _Batch(model, tokenizer, [encoded[i] for i in chosen], stop or [], sampling, generator)
            for i, text in zip(chosen, batch.run(max_new_tokens), strict=True):
                outputs[i] = text
            bar.update(len(chosen))
    model.train(was_training)
    return outputs


def make_generator(sampling: Sampling, device: torch.device) -> torch.Generator | None:
    if sampling.temperature <= 0:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(sampling.seed if sampling.seed is not None else torch.seed())
    return generator


class _Batch:
    """One left-padded batch decoded step by step; rows leave the batch when they finish."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[list[int]],
        stop: list[str],
        sampling: Sampling,
        generator: torch.Generator | None,
    ) -> None:
        self.model, self.tokenizer, self.stop, self.sampling, self.generator = (
            model,
            tokenizer,
            stop,
            sampling,
            generator,
        )
        self.device = next(model.parameters()).device
        self.eos = eos_ids(model, tokenizer)
        self.cache_key = cache_argument(model)
        self.new_tokens: list[list[int]] = [[] for _ in prompts]
        self.texts: list[str | None] = [None] * len(prompts)
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        self.alive = list(range(len(prompts)))  # original row of each batch position

    @torch.no_grad()
    def run(self, max_new_tokens: int) -> list[str]:
        from transformers import DynamicCache

        cache = DynamicCache()
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        tokens = self.input_ids
        for _ in range(max_new_tokens):
            logits = self.model(
                input_ids=tokens,
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_key: cache},
            ).logits[:, -1]
            chosen = self._pick(logits)
            keep = self._record(chosen.tolist())
            if not keep:
                break
            if len(keep) < len(chosen):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                chosen, self.mask, positions = chosen[index], self.mask[index], positions[index]
                self.alive = [self.alive[k] for k in keep]
            tokens = chosen[:, None]
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(keep), 1))], dim=1)
            positions = positions[:, -1:] + 1
        for row in self.alive:
            self.texts[row] = self._finish(row)
        return [text or "" for text in self.texts]

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        return pick_tokens(logits, self.sampling, self.generator)

    def _record(self, chosen: list[int]) -> list[int]:
        """Append each alive row's token; return the batch positions that go on."""
        keep = []
        for position, token in enumerate(chosen):
            row = self.alive[position]
            if token in self.eos:
                self.texts[row] = self._finish(row)
                continue
            self.new_tokens[row].append(token)
            if self.stop and self._stopped(row):
                continue
            keep.append(position)
        return keep

    def _stopped(self, row: int) -> bool:
        text = self.tokenizer.decode(self.new_tokens[row][-16:], skip_special_tokens=True)
        if not any(s in text for s in self.stop):
            return False
        self.texts[row] = self._finish(row)
        return True

    def _finish(self, row: int) -> str:
        text = self.tokenizer.decode(self.new_tokens[row], skip_special_tokens=True)
        for s in self.stop:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return text.strip()


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword the model's forward takes its KV cache by: `cache` since transformers renamed
    `past_key_values` (the old name is deprecated and announced to go in 5.40), the old name before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def pick_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row of `logits` (rows x vocab): argmax, or a draw from the temperature-scaled
    distribution cut to its top-p nucleus when `generator` is given."""
    if generator is None or sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_ids, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def eos_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends a turn: the tokenizer's eos plus the model's generation config eos."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else [])
    return ids
