"""`honed serve` as a user calls it: the official `openai` client against a live server on localhost."""

from __future__ import annotations

import concurrent.futures
import json
import re
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from honed.serve.app import BackgroundServer, ServeSettings, create_app


@pytest.fixture(scope="module")
def two_runs(make_tiny_run):
    """Two finished tiny runs with different adapters on the same base."""
    runs = []
    for seed in (1, 2):
        run_dir = make_tiny_run(f"run{seed}", "train.max_steps=3", "train.lr=3e-2", f"train.seed={seed}")
        _randomize_adapter(run_dir / "final" / "adapter", seed)
        runs.append(run_dir)
    return runs


def _randomize_adapter(folder, seed: int) -> None:
    """Give the adapter large random B matrices: a few tiny training steps leave both runs answering
    alike, and the tests need adapters whose outputs differ visibly."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    weights = load_file(path)
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in weights.items():
        if "lora_B" in name:
            weights[name] = torch.randn(tensor.shape, generator=generator) * 0.5
    save_file(weights, path)


@pytest.fixture(scope="module")
def server(two_runs, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "feedback.db"
    settings = ServeSettings(store=f"sqlite:///{store}", max_batch_size=8)
    app = create_app([f"alpha={two_runs[0]}", f"beta={two_runs[1]}"], settings)
    with BackgroundServer(app) as running:
        running.store_url = settings.store
        yield running


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def _chat(client, model: str, text: str, max_tokens: int = 12, **kwargs):
    kwargs.setdefault("temperature", 0)
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, **kwargs)


def test_models_lists_both_adapters_and_the_base(client, tiny_model_dir):
    names = {model.id for model in client.models.list()}
    assert names == {"alpha", "beta", tiny_model_dir.name}


def test_chat_completion_answers_with_usage_and_an_id(client):
    reply = _chat(client, "alpha", "Two iced lattes, please")
    assert reply.id.startswith("chatcmpl-") and reply.model == "alpha"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 5


def test_streaming_gives_the_same_text_as_the_whole_answer(client):
    whole = _chat(client, "beta", "Say something", max_tokens=16).choices[0].message.content
    chunks = list(
        _chat(
            client,
            "beta",
            "Say something",
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_completions_endpoint_and_stop(client):
    plain = client.completions.create(model="alpha", prompt="Order: ", max_tokens=10, temperature=0)
    text = plain.choices[0].text
    assert plain.id.startswith("cmpl-") and plain.object == "text_completion"
    if len(text) > 4:
        stopped = client.completions.create(
            model="alpha", prompt="Order: ", max_tokens=10, temperature=0, stop=[text[2:4]]
        )
        assert stopped.choices[0].text == text[: text.find(text[2:4])]
        assert stopped.choices[0].finish_reason == "stop"


def test_two_adapters_in_one_batch_give_each_ones_solo_output(client, server):
    prompts = [
        ("alpha", "Two iced lattes"),
        ("beta", "Two iced lattes"),
        ("alpha", "A cold brew"),
        ("beta", "hi"),
    ]
    alone = [_chat(client, m, p, max_tokens=24).choices[0].message.content for m, p in prompts]
    before = _batch_rows(server)
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(
            pool.map(lambda mp: _chat(client, *mp, max_tokens=24).choices[0].message.content, prompts)
        )
    after = _batch_rows(server)
    assert together == alone
    assert alone[0] != alone[1]  # the adapters differ, so a mix-up would show
    assert after["multi"] > before["multi"]  # some decoding steps held more than one request


def test_seeded_sampling_repeats(client):
    sampled = {"temperature": 1.0, "top_p": 0.9}
    first, second = (_chat(client, "alpha", "hi", max_tokens=10, seed=3, **sampled) for _ in range(2))
    other = _chat(client, "alpha", "hi", max_tokens=10, seed=4, **sampled)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content


def test_errors_have_openai_shape(client):
    with pytest.raises(openai.NotFoundError, match="no model 'gamma'"):
        _chat(client, "gamma", "hi")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        _chat(client, "alpha", "hi", extra_body={"temperature": 5})
    with pytest.raises(openai.BadRequestError, match="tools is not supported"):
        _chat(
            client, "alpha", "hi", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]
        )


def test_health_and_metrics(server, client):
    _chat(client, "alpha", "hi", max_tokens=2)
    health = json.loads(_get(server, "/health"))
    assert health["status"] == "ok" and "alpha" in health["models"]
    metrics = _get(server, "/metrics")
    assert re.search(r'honed_requests_total\{endpoint="chat",model="alpha",status="200"\} [1-9]', metrics)
    assert "honed_request_latency_seconds_bucket" in metrics and "honed_queue_waiting" in metrics


def test_feedback_round_trip(client, server):
    reply = _chat(client, "alpha", "Two iced lattes, please")
    body = {"request_id": reply.id, "rating": -1, "correction": "inform(drink[latte], count[2])"}
    status, answer = _post(server, "/v1/feedback", body)
    assert status == 200 and answer["request_id"] == reply.id and answer["id"].startswith("fb-")
    store = server.server.config.app.state.store
    entry = next(e for e in store.entries() if e["id"] == reply.id)
    assert entry["response"] == reply.choices[0].message.content
    assert entry["messages"] == [{"role": "user", "content": "Two iced lattes, please"}]
    assert entry["feedback"]["rating"] == -1
    assert entry["feedback"]["correction"] == "inform(drink[latte], count[2])"
    status, answer = _post(server, "/v1/feedback", {"request_id": "chatcmpl-nope", "rating": 1})
    assert status == 404 and "chatcmpl-nope" in answer["error"]["message"]
    status, answer = _post(server, "/v1/feedback", {"request_id": reply.id, "rating": 5})
    assert status == 400 and answer["error"]["param"] == "rating"


def test_served_feedback_becomes_training_data(client, server, two_runs, tmp_path):
    """The whole loop on a live server: an answer, a correction posted over HTTP, then the dataset."""
    from honed.feedback.export import export_feedback

    reply = _chat(client, "alpha", "Three hot mochas, large")
    correction = "order(drink[mocha], size[large], quantity[3], temperature[hot])"
    assert (
        _post(server, "/v1/feedback", {"request_id": reply.id, "rating": -1, "correction": correction})[0]
        == 200
    )
    report = export_feedback(server.store_url, two_runs[0], tmp_path / "out", model="alpha")
    train = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (tmp_path / "out" / "preference.jsonl").read_text().splitlines()]
    targets = [row["messages"][-1]["content"] for row in train]
    assert correction in targets
    pair = next(p for p in pairs if p["chosen"] == correction)
    assert pair["rejected"] == reply.choices[0].message.content
    assert (tmp_path / "out" / "retrain.yaml").is_file() and report


def test_full_queue_answers_429(two_runs, tmp_path):
    settings = ServeSettings(store="off", max_batch_size=1, max_queue=1)
    app = create_app([str(two_runs[0])], settings)
    with BackgroundServer(app) as running:
        client = OpenAI(base_url=running.base_url, api_key="unused", max_retries=0, timeout=120)

        def call(_):
            try:
                _chat(client, "run1", "hi", max_tokens=200)
                return "ok"
            except openai.RateLimitError as exc:
                assert "busy" in str(exc)
                return "429"

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(8)))
        metrics = _get(running, "/metrics")
    assert "ok" in outcomes and "429" in outcomes
    assert re.search(r"honed_rejected_total [1-9]", metrics)


def _batch_rows(server) -> dict[str, float]:
    metrics = _get(server, "/metrics")
    single = float(re.search(r'honed_batch_rows_bucket\{le="1.0"\} (\S+)', metrics).group(1))
    total = float(re.search(r"honed_batch_rows_count (\S+)", metrics).group(1))
    return {"multi": total - single}


def _get(server, path: str) -> str:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + path, timeout=30) as response:
        return response.read().decode()


def _post(server, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.base_url.removesuffix("/v1") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
