"""Distillation: the logit loss against a plain reference, training moves the student towards the teacher,
sequence mode trains on the teacher's (filtered) answers, and a teacher with another vocabulary is refused."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from honed.config.load import load_recipe
from honed.data.tokenize import IGNORE, encode_example, render_prompt
from honed.errors import ConfigError, DataError
from honed.methods import distill_teacher
from honed.methods.distill_logits import LogitExample, collate_targets, mean_kl, mix_of, teacher_topk
from honed.methods.distill_loss import Mix, distill_loss
from honed.methods.registry import get_method
from honed.models.decoding import generate
from honed.models.load import load_model, load_tokenizer
from honed.models.nll import collate
from honed.models.prepare import load_training_model
from honed.models.tiny import build_tiny_model
from honed.pipeline.finetune import train_model
from honed.training.packing import collate_packed, packed_attention

CPU = torch.device("cpu")

METHOD = get_method("distill")


@pytest.fixture(autouse=True)
def one_thread():
    """What `train.threads=1` does in a run: these tests call the method's parts, not `finetune`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    """A wider, differently seeded tiny model with the student's tokenizer and a sharp next-token
    distribution (its output head scaled up), so there is something definite to learn from it."""
    folder = build_tiny_model(tmp_path_factory.mktemp("teacher"), hidden_size=48, seed=1)
    model = load_model(folder, torch.float32, CPU)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.save_pretrained(folder)
    return folder


def _fail(*args, **kwargs):
    raise AssertionError("the teacher was loaded again instead of reusing the cache")


def _conversations():
    pairs = [
        ("two lattes please", "order(drink[latte], quantity[2])"),
        ("cancel 1234", "cancel(order_id[1234])"),
        ("how much is a mocha?", "ask_price(drink[mocha])"),
    ]
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in pairs]


def _reference_loss(student, teacher, examples, mix: Mix, pad_id: int) -> torch.Tensor:
    """The mixed loss the plain way: full logits of both models, the teacher's full softmax at T, its
    top-k renormalised, KL against the student's log-softmax at T, times T^2, plus the reference CE."""
    batch = collate(examples, pad_id, CPU)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher_probs = torch.softmax(teacher(**inputs).logits.float() / mix.temperature, dim=-1)
    student_logits = student(**inputs).logits.float()
    keep = batch["labels"][:, 1:] != IGNORE
    targets = batch["labels"][:, 1:][keep]
    top = teacher_probs[:, :-1][keep].topk(6, dim=-1)
    p = top.values / top.values.sum(-1, keepdim=True)
    log_q = torch.log_softmax(student_logits[:, :-1][keep] / mix.temperature, dim=-1).gather(1, top.indices)
    kl = (p * (p.log() - log_q)).sum(-1)
    ce = torch.nn.functional.cross_entropy(student_logits[:, :-1][keep], targets, reduction="none")
    return (mix.kl_weight * mix.temperature**2 * kl + (1 - mix.kl_weight) * ce).sum()


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("head_trainable", [True, False])
def test_kl_loss_equals_reference_and_packed_equals_padded(
    tiny_model_dir, tiny_tokenizer, teacher_dir, head_trainable
):
    student = load_model(tiny_model_dir, torch.float32, CPU)
    teacher = load_model(teacher_dir, torch.float32, CPU)
    student.requires_grad_(True)
    student.lm_head.requires_grad_(head_trainable)  # False: the LoRA path (gradient made in forward)
    examples = [encode_example(tiny_tokenizer, c) for c in _conversations()]
    mix = Mix(temperature=2.0, kl_weight=0.7)
    pad = tiny_tokenizer.pad_token_id
    targets = teacher_topk(teacher, examples, pad, 6, mix.temperature, len(tiny_tokenizer), batch_size=2)
    logit_examples = [LogitExample(e, ids, lp) for e, (ids, lp) in zip(examples, targets, strict=True)]

    reference = _reference_loss(student, teacher, examples, mix, pad)
    reference.backward()
    reference_grads = _grads(student)
    padded = collate_targets(logit_examples, functools.partial(collate, pad_id=pad, device=CPU), CPU)
    loss, count = distill_loss(student, padded, mix, chunk=7)  # several chunks, one partial
    loss.backward()
    padded_grads = _grads(student)
    with packed_attention(student, CPU):
        packed = collate_targets(logit_examples, functools.partial(collate_packed, device=CPU), CPU)
        loss_packed, count_packed = distill_loss(student, packed, mix, chunk=7)
        loss_packed.backward()
    packed_grads = _grads(student)

    assert count == count_packed == sum(e.num_labels for e in examples)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_packed, loss, rtol=1e-5, atol=1e-5)
    assert ("lm_head.weight" in padded_grads) == head_trainable
    assert padded_grads.keys() == reference_grads.keys() == packed_grads.keys()
    for name, grad in reference_grads.items():
        torch.testing.assert_close(padded_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_logit_distillation_lowers_kl_to_teacher(
    tiny_recipe, tiny_model_dir, tiny_tokenizer, teacher_dir, tmp_path, monkeypatch
):
    recipe = tiny_recipe(
        "method=distill",
        f"distill.teacher={teacher_dir}",
        "distill.mode=logit",
        "distill.top_k=8",
        "distill.kl_weight=0.9",
        "adapter=full",
        "train.lr=3e-2",
        "train.lr_warmup_steps=0",
        "train.max_steps=10",
        "train.batch_size=4",
        "data.max_train_rows=16",
        "train.threads=1",
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pad = tiny_tokenizer.pad_token_id
    train, validation = METHOD.data(recipe, tiny_tokenizer, run_dir)
    model = load_training_model(tiny_model_dir, recipe, CPU)
    METHOD.before_training(model, tiny_tokenizer, train, validation, recipe, run_dir)
    before = mean_kl(model, train, pad, mix_of(recipe))

    model, _ = train_model(model, tiny_tokenizer, train, validation, recipe, run_dir, progress=False)

    after = mean_kl(model, train, pad, mix_of(recipe))
    assert after < 0.75 * before  # the student moved towards the teacher on what it trained on
    found = METHOD.after_training(model, tiny_tokenizer, validation, recipe, run_dir)
    assert found["mode"] == "logit" and found["positions"]["train"] == sum(len(e.ids) for e in train)
    assert found["kl_to_teacher"]["tuned"] < found["kl_to_teacher"]["base"]
    # A resumed run reads the teacher's targets from the run's cache instead of running the teacher again.
    monkeypatch.setattr(distill_teacher, "load_teacher", _fail)
    again, _ = METHOD.data(recipe, tiny_tokenizer, run_dir)
    assert all(
        torch.equal(a.ids, b.ids) and torch.equal(a.logprobs, b.logprobs)
        for a, b in zip(again, train, strict=True)
    )


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _sequence_recipe(tiny_model_dir, teacher_dir, tmp_path, train, *overrides):
    base = {
        "name": "distill",
        "method": "distill",
        "model": {"base": str(tiny_model_dir)},
        "distill": {"teacher": str(teacher_dir), "mode": "sequence", "max_new_tokens": 6},
        "data": {"train": str(train), "validation": str(train), "max_seq_len": 256},
        "train": {"max_steps": 2, "batch_size": 4, "threads": 1},
        "eval": {"task": "exact_match", "max_rows": 2, "max_new_tokens": 4, "batch_size": 4},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    return load_recipe(base=base, overrides=list(overrides))


def test_sequence_mode_trains_on_teacher_answers_filtered_by_score(
    tiny_model_dir, tiny_tokenizer, teacher_dir, tmp_path, monkeypatch
):
    prompts = [f"question number {i}?" for i in range(8)]
    teacher = load_model(teacher_dir, torch.float32, CPU)
    teacher_tokenizer = load_tokenizer(teacher_dir)
    rendered = [render_prompt(teacher_tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    answers = generate(teacher, teacher_tokenizer, rendered, 6, batch_size=4)
    assert all(answers)
    # Even rows' references are the teacher's own answer (exact_match 1), odd rows' are not (0).
    rows = [
        {"prompt": p, "completion": a if i % 2 == 0 else "no"}
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True))
    ]
    train = _write_rows(tmp_path / "train.jsonl", rows)
    recipe = _sequence_recipe(tiny_model_dir, teacher_dir, tmp_path, train, "distill.min_score=1.0")
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    examples, validation = METHOD.data(recipe, tiny_tokenizer, run_dir)

    records = [json.loads(line) for line in (run_dir / "data" / "distilled.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in records] == answers
    assert [r["score"] for r in records] == [1.0, 0.0] * 4
    assert [r["kept"] for r in records] == [True, False] * 4
    expected = [
        encode_example(tiny_tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": a}])
        for p, a in zip(prompts[::2], answers[::2], strict=True)
    ]
    assert examples == expected  # the student trains on the teacher's answers, and only the kept ones
    assert validation[1] == encode_example(
        tiny_tokenizer, [{"role": "user", "content": prompts[1]}, {"role": "assistant", "content": "no"}]
    )  # validation keeps the real references
    stats = json.loads((run_dir / "data" / "distill.json").read_text())
    assert (stats["kept"], stats["dropped_low_score"], stats["mean_score"]) == (4, 4, 0.5)
    assert METHOD.after_training(None, tiny_tokenizer, validation, recipe, run_dir) == stats

    # Resuming reuses the answers; a looser threshold keeps every row without asking the teacher again.
    monkeypatch.setattr(distill_teacher, "load_teacher", _fail)
    looser = _sequence_recipe(tiny_model_dir, teacher_dir, tmp_path, train, "distill.min_score=0.0")
    examples, _ = METHOD.data(looser, tiny_tokenizer, run_dir)
    assert len(examples) == 8
    assert json.loads((run_dir / "data" / "distill.json").read_text())["reused_cache"] is True


def test_sequence_mode_refuses_when_every_answer_is_dropped(
    tiny_model_dir, tiny_tokenizer, teacher_dir, tmp_path
):
    train = _write_rows(
        tmp_path / "train.jsonl", [{"prompt": f"q{i}", "completion": "zzz"} for i in range(3)]
    )
    recipe = _sequence_recipe(tiny_model_dir, teacher_dir, tmp_path, train, "distill.min_score=0.5")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(DataError, match="distill.min_score"):
        METHOD.data(recipe, tiny_tokenizer, run_dir)


def test_logit_mode_refuses_a_teacher_with_another_vocabulary(tiny_recipe, tiny_tokenizer, tmp_path):
    folder = build_tiny_model(tmp_path / "other-teacher", seed=2)
    other = load_tokenizer(folder)
    other.add_tokens(["<tool_call>", "</tool_call>"])
    other.save_pretrained(folder)
    recipe = tiny_recipe("method=distill", f"distill.teacher={folder}", "distill.mode=logit")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(ConfigError, match="distill.mode: sequence"):
        METHOD.data(recipe, tiny_tokenizer, run_dir)
    assert not (run_dir / "data" / "teacher_topk.safetensors").exists()
