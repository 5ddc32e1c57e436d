"""The shared training loop: what it updates, accumulation invariance, exact resume, failure stops."""

from __future__ import annotations

import functools
import json
import os
import signal

import pytest
import torch

from honed.config.schema import TrainConfig
from honed.data.dataset import build_examples
from honed.errors import TrainingError, TrainingInterrupted
from honed.models.load import load_model, load_tokenizer
from honed.models.lora import apply_lora
from honed.models.nll import collate, completion_loss
from honed.pipeline.finetune import finetune
from honed.training.checkpoint import trainable_parameters
from honed.training.loop import lr_at, train_loop


def _setup(recipe, tiny_model_dir, lora=True):
    tokenizer = load_tokenizer(tiny_model_dir)
    examples, _ = build_examples(recipe.data, tokenizer, "train")
    model = load_model(tiny_model_dir, torch.float32, torch.device("cpu"))
    if lora:
        model = apply_lora(model, recipe.lora, seed=0)
    batcher = functools.partial(collate, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"))
    return model, examples, batcher


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows]


def test_lora_updates_adapter_only(tiny_recipe, tiny_model_dir, tmp_path):
    recipe = tiny_recipe("train.max_steps=2", "train.lr=1e-2")
    model, examples, batcher = _setup(recipe, tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_loop(model, examples, None, recipe.train, tmp_path, completion_loss, batcher, progress=False)
    trainable = set(trainable_parameters(model))
    assert trainable and all("lora_" in name for name in trainable)
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        # lora_A of a layer whose lora_B is still ~0 can move too; every lora_B must move.
        if "lora_B" in name:
            assert changed, f"{name} did not change"
        if name not in trainable:
            assert not changed, f"frozen {name} changed"


def test_full_finetune_updates_every_weight(tiny_recipe, tiny_model_dir, tmp_path):
    recipe = tiny_recipe("adapter=full", "train.max_steps=1", "train.lr=1e-2")
    model, examples, batcher = _setup(recipe, tiny_model_dir, lora=False)
    model.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_loop(model, examples, None, recipe.train, tmp_path, completion_loss, batcher, progress=False)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p.detach())]
    assert unchanged == []


def test_batch_8x1_equals_2x4(tiny_recipe, tiny_model_dir, tmp_path):
    """Gradient accumulation is exact: same examples per step, same loss, same update."""
    results = []
    for batch, accum in ((8, 1), (2, 4)):
        recipe = tiny_recipe(
            "train.max_steps=2",
            f"train.batch_size={batch}",
            f"train.grad_accum_steps={accum}",
            "lora.dropout=0.0",
            "train.lr=1e-2",
        )
        model, examples, batcher = _setup(recipe, tiny_model_dir)
        run_dir = tmp_path / f"{batch}x{accum}"
        run_dir.mkdir()
        train_loop(model, examples, None, recipe.train, run_dir, completion_loss, batcher, progress=False)
        results.append(
            (_losses(run_dir), {n: p.detach().clone() for n, p in trainable_parameters(model).items()})
        )
    (losses_a, params_a), (losses_b, params_b) = results
    for (step_a, loss_a), (step_b, loss_b) in zip(losses_a, losses_b, strict=True):
        assert step_a == step_b and loss_a == pytest.approx(loss_b, rel=1e-5)
    for name, value in params_a.items():
        torch.testing.assert_close(params_b[name], value, rtol=1e-4, atol=1e-6)


def test_resume_gives_the_uninterrupted_loss_sequence(tiny_recipe, monkeypatch):
    """Interrupt by SIGINT after step 3, resume, and get exactly the loss sequence of a straight run."""
    overrides = ("train.max_steps=6", "lora.dropout=0.1", "train.lr=5e-3", "train.eval_every_steps=2")
    straight = finetune(tiny_recipe(*overrides, "output.run_name=straight"), progress=False)

    calls = {"n": 0}

    def interrupting_loss(model, batch, chunk):
        calls["n"] += torch.is_grad_enabled()  # count training micro-batches, not validation batches
        if calls["n"] == 3 and torch.is_grad_enabled():  # one micro-batch per step: interrupt in step 3
            os.kill(os.getpid(), signal.SIGINT)
        return completion_loss(model, batch, chunk)

    monkeypatch.setattr("honed.training.speed.completion_loss", interrupting_loss)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        finetune(tiny_recipe(*overrides, "output.run_name=resumed"), progress=False)
    resumed_dir = straight.parent / "resumed"
    assert len(_losses(resumed_dir)) == 3
    monkeypatch.setattr("honed.training.speed.completion_loss", completion_loss)
    finetune(resume=resumed_dir, progress=False)

    assert _losses(resumed_dir) == _losses(straight)
    from safetensors.torch import load_file

    adapter = "final/adapter/adapter_model.safetensors"
    a, b = load_file(straight / adapter), load_file(resumed_dir / adapter)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_clear_error(tiny_recipe, tiny_model_dir, tmp_path):
    recipe = tiny_recipe("train.max_steps=2")
    model, examples, batcher = _setup(recipe, tiny_model_dir)

    def nan_loss(model, batch):
        loss, n = completion_loss(model, batch)
        return loss * float("nan"), n

    with pytest.raises(TrainingError, match="loss became nan at step 1"):
        train_loop(model, examples, None, recipe.train, tmp_path, nan_loss, batcher, progress=False)


def test_lr_schedule_warmup_then_decay():
    cfg = TrainConfig(lr=1.0, lr_warmup_steps=4, lr_schedule="cosine")
    assert [lr_at(s, 14, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, 14, cfg) == pytest.approx(1.0)
    assert lr_at(9, 14, cfg) == pytest.approx(0.5)
    assert lr_at(14, 14, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(5, 10, TrainConfig(lr=1.0, lr_schedule="linear")) == pytest.approx(0.5)
    assert lr_at(7, 10, TrainConfig(lr=0.1, lr_schedule="constant")) == pytest.approx(0.1)
