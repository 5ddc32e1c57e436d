"""The serving engine: one model, many adapters, continuous batching on one worker thread.

The engine owns the model. Requests wait in a bounded queue (`submit` refuses with `QueueFull` when it is
full, which the app answers with 429). Between decoding steps the worker admits waiting requests: their
prompts are prefilled together and their KV cache is merged into the running batch (left-padded to a
common length), so a new request does not wait for the batch ahead of it to finish. Every row keeps its
own adapter (PEFT's mixed-adapter forward: rows naming different adapters share one forward pass), its own
sampling settings and seed, stop strings, token budget and deadline. Text is streamed as it is decoded,
holding back what could still turn out to be the start of a stop string.

The engine knows nothing about HTTP or chat messages: it takes token ids and gives text events.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from honed.errors import HonedError
from honed.models.decoding import Sampling, cache_argument, eos_ids, make_generator, pick_tokens
from honed.serve.settings import DEFAULTS, EngineSettings

if TYPE_CHECKING:
    from transformers import DynamicCache, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class QueueFull(HonedError):
    """The engine's waiting queue is full; the client should retry later (HTTP 429)."""


@dataclass(frozen=True)
class Event:
    """What the engine tells a request: a piece of text, the end (finish_reason), or an error."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "timeout" | "cancelled" | "error"
    error: str | None = None


@dataclass
class GenerationRequest:
    """One sequence to generate. `emit` is called from the engine's thread with each Event."""

    prompt_ids: list[int]
    emit: Callable[[Event], None]
    adapter: str = BASE_ADAPTER
    max_new_tokens: int = DEFAULTS.max_tokens_default
    stop: list[str] = field(default_factory=list)
    sampling: Sampling = field(default_factory=Sampling)
    cancelled: bool = False  # set by the caller (client went away); the row leaves at the next step
    # filled by the engine
    submitted_s: float = 0.0
    first_token_s: float | None = None
    completion_tokens: int = 0


class Engine:
    """Decode many requests at once on one thread; `submit` from any thread."""

    def __init__(
        self,
        model: torch.nn.Module,  # a transformers model, or a PeftModel holding `adapters`
        tokenizer: PreTrainedTokenizerBase,
        settings: EngineSettings,
        adapters: list[str] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.settings = model.eval(), tokenizer, settings
        self.adapters = set(adapters or [])  # the adapter names requests may pick, BASE_ADAPTER aside
        self.device = next(model.parameters()).device
        self.eos = eos_ids(model, tokenizer)
        self.cache_key = cache_argument(model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._wake = threading.Condition()
        self._running: _Running | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="honed-engine", daemon=True)
        self.steps = 0  # decoding steps run (metrics)
        self.on_step: Callable[[int], None] | None = None  # called with the batch size of every step

    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self._thread.join(timeout_s)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running.rows) if self._running else 0

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request, or raise QueueFull when `max_queue` requests are already waiting."""
        if request.adapter != BASE_ADAPTER and request.adapter not in self.adapters:
            raise ValueError(f"unknown adapter {request.adapter!r}")
        with self._wake:
            if len(self._waiting) >= self.settings.max_queue:
                raise QueueFull(
                    f"the server is busy: {len(self._waiting)} requests are waiting (--max-queue "
                    f"{self.settings.max_queue}); retry later"
                )
            request.submitted_s = time.monotonic()
            self._waiting.append(request)
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self._waiting and self._running is None:
                    self._wake.wait()
                if self._stopped:
                    break
            try:
                self._admit()
                if self._running is not None:
                    self._step()
            except Exception as exc:  # a bug or an out-of-memory: fail the rows, keep serving
                log.exception("decoding step failed")
                self._fail_all(f"generation failed: {exc}")
        self._fail_all("the server is shutting down")

    def _admit(self) -> None:
        """Move waiting requests into the running batch, as many as it has room for."""
        room = self.settings.max_batch_size - self.running
        if room <= 0 or not self._waiting:
            return
        if self._running is not None and not self._running.can_merge:
            return  # a cache that cannot be merged (sliding windows): admit when the batch is done
        taken: list[GenerationRequest] = []
        with self._wake:
            while self._waiting and len(taken) < room:
                taken.append(self._waiting.popleft())
        now = time.monotonic()
        fresh = [r for r in taken if not self._expired(r, now) and not r.cancelled]
        if not fresh:
            return
        group = _Running.prefill(self, fresh)
        self._running = group if self._running is None else self._running.merge(group)
        self._drop_finished()

    def _expired(self, request: GenerationRequest, now: float) -> bool:
        if request.cancelled:
            request.emit(Event(finish_reason="cancelled"))
            return True
        if now - request.submitted_s <= self.settings.request_timeout_s:
            return False
        request.emit(
            Event(finish_reason="timeout", error=f"timed out after {self.settings.request_timeout_s:g} s")
        )
        return True

    def _step(self) -> None:
        running = self._running
        assert running is not None, "_work steps only when a batch is running"
        if self.on_step is not None:
            self.on_step(len(running.rows))
        running.step(self)
        self.steps += 1
        now = time.monotonic()
        for row in running.rows:
            if row.finish is None and self._expired(row.request, now):
                row.finish = "timeout"
        self._drop_finished()
        self._sweep_waiting(now)

    def _sweep_waiting(self, now: float) -> None:
        """Answer the waiting requests whose deadline passed while the batch was full."""
        limit = self.settings.request_timeout_s
        with self._wake:
            late = [r for r in self._waiting if r.cancelled or now - r.submitted_s > limit]
            for request in late:
                self._waiting.remove(request)
        for request in late:
            self._expired(request, now)

    def _drop_finished(self) -> None:
        running = self._running
        assert running is not None, "called right after admitting or stepping a batch"
        keep = [i for i, row in enumerate(running.rows) if row.finish is None]
        if not keep:
            self._running = None
        elif len(keep) < len(running.rows):
            running.select(keep)

    def _fail_all(self, message: str) -> None:
        rows = [row.request for row in self._running.rows] if self._running else []
        self._running = None
        with self._wake:
            rows += list(self._waiting)
            self._waiting.clear()
        for request in rows:
            request.emit(Event(finish_reason="error", error=message))


@dataclass
class _Row:
    """A running request: the tokens it generated and how much of their text was already emitted."""

    request: GenerationRequest
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the decoded text already sent
    finish: str | None = None


class _Running:
    """The running batch: left-padded rows sharing one KV cache; `tokens` is each row's next input."""

    def __init__(
        self,
        rows: list[_Row],
        cache: DynamicCache,
        mask: torch.Tensor,  # (rows, width) 1 for real positions, 0 for left padding
        positions: torch.Tensor,  # (rows, 1 or width) position ids of `tokens`
        tokens: torch.Tensor,  # (rows, 1 or width) the next input ids
    ) -> None:
        self.rows, self.cache, self.mask, self.positions, self.tokens = rows, cache, mask, positions, tokens

    @property
    def can_merge(self) -> bool:
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in self.cache.layers)

    @classmethod
    def prefill(cls, engine: Engine, requests: list[GenerationRequest]) -> _Running:
        """Run the prompts of `requests` (left-padded together) and choose each one's first token."""
        from transformers import DynamicCache

        prompts = [r.prompt_ids for r in requests]
        width = max(len(p) for p in prompts)
        device = engine.device
        ids = torch.tensor([[engine.pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [_Row(r, make_generator(r.sampling, device)) for r in requests]
        running = cls(rows, DynamicCache(), mask, positions, ids)
        running._forward_and_pick(engine)
        return running

    def step(self, engine: Engine) -> None:
        self._forward_and_pick(engine)

    def _forward_and_pick(self, engine: Engine) -> None:
        kwargs = {engine.cache_key: self.cache}
        if engine.adapters:
            kwargs["adapter_names"] = [row.request.adapter for row in self.rows]
        with torch.no_grad():
            logits = engine.model(
                input_ids=self.tokens,
                attention_mask=self.mask,
                position_ids=self.positions,
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            ).logits[:, -1]
        chosen = self._pick(logits)
        for row, token in zip(self.rows, chosen.tolist(), strict=True):
            _advance(engine, row, token)
        self.tokens = chosen[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        self.positions = self.positions[:, -1:] + 1

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        chosen = logits.argmax(dim=-1)
        for i, row in enumerate(self.rows):
            if row.generator is not None:
                chosen[i] = pick_tokens(logits[i : i + 1], row.request.sampling, row.generator)[0]
        return chosen

    def select(self, keep: list[int]) -> None:
        """Keep only the rows at `keep` (batch positions), in the cache too."""
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.positions, self.tokens = self.mask[index], self.positions[index], self.tokens[index]

    def merge(self, other: _Running) -> _Running:
        """This batch and `other` as one: the shorter one's cache and mask are padded on the left."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            length = width - 1  # the cache holds every position but the pending token
            mine.keys = torch.cat([_left_pad(mine.keys, length, 2), _left_pad(theirs.keys, length, 2)])
            mine.values = torch.cat([_left_pad(mine.values, length, 2), _left_pad(theirs.values, length, 2)])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(other.mask, width, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.rows = self.rows + other.rows
        return self


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`tensor` padded with zeros at the start of `dim` to `length`."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _advance(engine: Engine, row: _Row, token: int) -> None:
    """Record `token` for `row`, emit the text that is now certain, and mark the row finished if it is."""
    request = row.request
    if request.first_token_s is None:
        request.first_token_s = time.monotonic()
    if request.cancelled:
        row.finish = "cancelled"
        request.emit(Event(finish_reason="cancelled"))
        return
    if token in engine.eos:
        _finish(engine, row, "stop")
        return
    row.tokens.append(token)
    request.completion_tokens += 1
    text = engine.tokenizer.decode(row.tokens, skip_special_tokens=True)
    cut = _stop_at(text, request.stop)
    if cut is not None:
        _finish(engine, row, "stop", text[:cut])
        return
    if len(row.tokens) >= request.max_new_tokens:
        _finish(engine, row, "length", text)
        return
    hold = max((len(s) for s in request.stop), default=1) - 1
    safe = len(text) - hold
    while safe > row.emitted and text[safe - 1] == "\ufffd":  # part of a multi-byte character
        safe -= 1
    if safe > row.emitted:
        request.emit(Event(text=text[row.emitted : safe]))
        row.emitted = safe


def _finish(engine: Engine, row: _Row, reason: str, text: str | None = None) -> None:
    if text is None:
        text = engine.tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = _stop_at(text, row.request.stop)
        text = text if cut is None else text[:cut]
    row.finish = reason
    row.request.emit(Event(text=text[row.emitted :], finish_reason=reason))
    row.emitted = len(text)


def _stop_at(text: str, stop: list[str]) -> int | None:
    """Where the first stop string starts in `text`, or None."""
    found = [i for s in stop if (i := text.find(s)) >= 0]
    return min(found) if found else None
