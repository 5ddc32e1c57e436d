"""The serving engine: mixed-adapter batches and rows admitted mid-flight give each row's solo output."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from honed.data.tokenize import render_prompt
from honed.models.decoding import Sampling, generate
from honed.models.load import load_model, load_tokenizer
from honed.serve.engine import BASE_ADAPTER, Engine, EngineSettings, GenerationRequest, QueueFull

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir, tmp_path_factory):
    """The tiny model with two random (non-zero) LoRA adapters, `a` and `b`, and its tokenizer."""
    folder = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(["a", "b"]):
        torch.manual_seed(seed)
        model = load_model(tiny_model_dir, torch.float32, CPU)
        config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(model, config).save_pretrained(folder / name)
    model = PeftModel.from_pretrained(load_model(tiny_model_dir, torch.float32, CPU), folder / "a", "a")
    model.load_adapter(folder / "b", adapter_name="b")
    return model.eval(), load_tokenizer(tiny_model_dir)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(render_prompt(tokenizer, [{"role": "user", "content": text}]), add_special_tokens=False)[
        "input_ids"
    ]


def _run(engine: Engine, tokenizer, rows: list[dict], stagger_s: float = 0.0) -> list[tuple[str, str]]:
    """Submit rows (prompt, adapter, max_new_tokens, ...), wait, return (text, finish_reason) per row."""
    results: list = [None] * len(rows)
    done = [threading.Event() for _ in rows]
    for i, row in enumerate(rows):
        parts: list[str] = []

        def emit(event, i=i, parts=parts):
            parts.append(event.text)
            if event.finish_reason:
                results[i] = ("".join(parts), event.finish_reason)
                done[i].set()

        prompt = row.pop("prompt")
        engine.submit(GenerationRequest(_ids(tokenizer, prompt), emit, **row))
        time.sleep(stagger_s)
    for event in done:
        assert event.wait(60)
    return results


ROWS = [
    {"prompt": "Two iced lattes, please", "adapter": "a", "max_new_tokens": 12},
    {"prompt": "hi", "adapter": "b", "max_new_tokens": 20},
    {"prompt": "What can you do for me today?", "adapter": BASE_ADAPTER, "max_new_tokens": 7},
]


def test_mixed_adapter_batches_and_late_rows_match_each_row_alone(two_adapters):
    model, tokenizer = two_adapters
    engine = Engine(model, tokenizer, EngineSettings(max_batch_size=8), ["a", "b"]).start()
    steps_seen: list[int] = []
    engine.on_step = steps_seen.append
    try:
        alone = [_run(engine, tokenizer, [dict(row)])[0] for row in ROWS]
        steps_seen.clear()
        together = _run(engine, tokenizer, [dict(row) for row in ROWS])
        assert max(steps_seen) == 3  # all three adapters' rows were in one forward pass
        staggered = _run(engine, tokenizer, [dict(row) for row in ROWS], stagger_s=0.01)
    finally:
        engine.stop()
    assert together == alone
    assert staggered == alone
    assert len({text for text, _ in alone}) == 3  # the adapters really differ, so the check can fail
    with model.disable_adapter():  # the base row equals honed's evaluation decoding of the base
        prompt = render_prompt(tokenizer, [{"role": "user", "content": ROWS[2]["prompt"]}])
        expected = generate(model, tokenizer, [prompt], max_new_tokens=7)[0]
    assert alone[2][0].strip() == expected


def test_stop_strings_are_never_streamed(two_adapters):
    model, tokenizer = two_adapters
    engine = Engine(model, tokenizer, EngineSettings(), ["a", "b"]).start()
    try:
        ((full, _),) = _run(engine, tokenizer, [{"prompt": "hi", "adapter": "b", "max_new_tokens": 20}])
        stop = full[5:8]
        pieces: list[str] = []
        finished = threading.Event()

        def emit(event):
            pieces.append(event.text)
            if event.finish_reason:
                finished.set()

        engine.submit(GenerationRequest(_ids(tokenizer, "hi"), emit, "b", 20, stop=[stop]))
        assert finished.wait(30)
    finally:
        engine.stop()
    assert "".join(pieces) == full[: full.find(stop)]
    assert all(stop not in "".join(pieces[: k + 1]) for k in range(len(pieces)))


def test_seeded_sampling_is_reproducible_whatever_the_batch(two_adapters):
    model, tokenizer = two_adapters
    engine = Engine(model, tokenizer, EngineSettings(), ["a", "b"]).start()
    sampled = {"prompt": "hi", "adapter": "a", "max_new_tokens": 10, "sampling": Sampling(1.0, 0.9, 7)}
    try:
        alone = _run(engine, tokenizer, [dict(sampled)])[0]
        crowded = _run(engine, tokenizer, [dict(row) for row in ROWS] + [dict(sampled)])[-1]
        other_seed = _run(engine, tokenizer, [{**sampled, "sampling": Sampling(1.0, 0.9, 8)}])[0]
    finally:
        engine.stop()
    assert crowded == alone
    assert other_seed != alone


def test_full_queue_is_refused_and_late_requests_time_out(two_adapters):
    model, tokenizer = two_adapters
    settings = EngineSettings(max_batch_size=1, max_queue=1, request_timeout_s=0.3)
    engine = Engine(model, tokenizer, settings, ["a", "b"])  # not started: nothing leaves the queue
    events = []
    engine.submit(GenerationRequest(_ids(tokenizer, "hi"), events.append, "a", 5))
    with pytest.raises(QueueFull, match="max-queue 1"):
        engine.submit(GenerationRequest(_ids(tokenizer, "hi"), events.append, "a", 5))
    time.sleep(0.4)
    engine.start()
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()
    assert events[-1].finish_reason == "timeout" and "timed out" in events[-1].error
    with pytest.raises(ValueError, match="unknown adapter"):
        engine.submit(GenerationRequest([1, 2], events.append, "nope", 5))
