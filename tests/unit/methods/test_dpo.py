"""Preference tuning: pair data, the cached reference, loss variants, batch invariances, the whole run."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from honed.config.load import load_recipe
from honed.config.schema import TrainConfig
from honed.data.tokenize import IGNORE
from honed.errors import DataError, TrainingError
from honed.evaluation.preference import PreferenceTask
from honed.methods import dpo
from honed.methods.dpo import (
    REFERENCE_FILE,
    attach_reference,
    build_pairs,
    collate_pairs,
    encode_pair,
    pair_loss,
    reference_logps,
)
from honed.models.load import load_model
from honed.pipeline.finetune import finetune, train_model
from honed.training.loop import optimizer_step
from honed.training.packing import packed_attention

CPU = torch.device("cpu")
HH_CHOSEN = "\n\nHuman: Hi\n\nAssistant: Hey.\n\nHuman: Help me?\n\nAssistant: Sure, with what?"
HH_REJECTED = "\n\nHuman: Hi\n\nAssistant: Hey.\n\nHuman: Help me?\n\nAssistant: Go away."
ROWS = [
    {"prompt": "Say hello.", "chosen": "Hello, friend!", "rejected": "No."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I will not say."},
    {"prompt": "Count to three.", "chosen": "One, two, three.", "rejected": "Whatever."},
    {"chosen": HH_CHOSEN, "rejected": HH_REJECTED},
]


def _recipe(tmp_path, tiny_model_dir, *overrides: str, rows=ROWS):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = {
        "name": "dpo-test",
        "method": "dpo",
        "adapter": "lora",
        "model": {"base": str(tiny_model_dir)},
        "data": {"train": str(data), "validation": str(data), "format": "preference", "max_seq_len": 256},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"batch_size": 4, "max_steps": 6, "lr": 1e-2, "lr_schedule": "constant", "threads": 1},
        "eval": {"task": "preference", "max_rows": 4, "batch_size": 8},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    return load_recipe(base=base, overrides=list(overrides))


def _model(tiny_model_dir):
    return load_model(tiny_model_dir, torch.float32, CPU)


def _margins(model, tokenizer, pairs) -> torch.Tensor:
    """Per pair: log p(chosen) - log p(rejected), summed over the answer."""
    logps = reference_logps(model, tokenizer, pairs, batch_size=8)
    return logps[:, 0] - logps[:, 1]


def _answer_start(encoded) -> int:
    return next(i for i, label in enumerate(encoded.labels) if label != IGNORE)


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- data ----


def test_pair_labels_only_the_final_answer(tiny_tokenizer):
    prompt = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey."},
        {"role": "user", "content": "Help me?"},
    ]
    chosen, rejected = encode_pair(tiny_tokenizer, prompt, "Sure.", "Go away.")
    for encoded, answer in ((chosen, "Sure."), (rejected, "Go away.")):
        labelled = [token for token in encoded.labels if token != IGNORE]
        assert tiny_tokenizer.decode(labelled) == answer + tiny_tokenizer.eos_token  # not "Hey." too
    start = _answer_start(chosen)
    assert start == _answer_start(rejected)
    assert chosen.input_ids[:start] == rejected.input_ids[:start]  # one prompt, shared


def test_long_prompts_keep_their_last_tokens(tiny_tokenizer):
    prompt = [{"role": "user", "content": "a long question " * 10}]
    full, _ = encode_pair(tiny_tokenizer, prompt, "Yes.", "No.")
    cut, _ = encode_pair(tiny_tokenizer, prompt, "Yes.", "No.", max_prompt_len=12)
    assert _answer_start(cut) == 12
    assert cut.input_ids == full.input_ids[-len(cut.input_ids) :]
    assert cut.labels == full.labels[-len(cut.labels) :]


def test_build_pairs_reports_malformed_and_too_long_rows(tmp_path, tiny_model_dir, tiny_tokenizer):
    rows = [
        *ROWS,
        {"prompt": "Hi", "chosen": "", "rejected": "x"},
        {"prompt": "Hi", "chosen": "a" * 400, "rejected": "b"},
    ]
    recipe = _recipe(tmp_path, tiny_model_dir, "data.on_bad_row=skip", rows=rows)
    pairs, report = build_pairs(recipe, tiny_tokenizer, "train")
    assert len(pairs) == 4 and report.rows_read == 6
    assert report.skipped_bad_rows == 1 and report.too_long == 1
    assert pairs[0].num_tokens == len(pairs[0].chosen.input_ids) + len(pairs[0].rejected.input_ids)
    with pytest.raises(DataError, match="1 malformed row"):
        build_pairs(_recipe(tmp_path, tiny_model_dir, rows=rows), tiny_tokenizer, "train")


# ---- the reference ----


def test_cached_reference_equals_fresh_scores(tmp_path, tiny_model_dir, tiny_tokenizer, monkeypatch):
    recipe = _recipe(tmp_path, tiny_model_dir)
    model = _model(tiny_model_dir)
    train, _ = build_pairs(recipe, tiny_tokenizer, "train")
    validation, _ = build_pairs(recipe, tiny_tokenizer, "validation")
    attach_reference(model, tiny_tokenizer, train, validation, recipe, tmp_path)
    assert (tmp_path / REFERENCE_FILE).is_file()

    fresh = reference_logps(model, tiny_tokenizer, train, batch_size=1)  # unbatched: no padding at all
    stored = torch.tensor([[p.ref_chosen, p.ref_rejected] for p in train], dtype=torch.float64)
    torch.testing.assert_close(stored, fresh, atol=1e-5, rtol=0)
    assert (stored < 0).all()

    def must_not_score(*args, **kwargs):
        raise AssertionError("the reference was scored again instead of read from the cache")

    monkeypatch.setattr(dpo, "reference_logps", must_not_score)
    again, _ = build_pairs(recipe, tiny_tokenizer, "train")
    again_val, _ = build_pairs(recipe, tiny_tokenizer, "validation")
    attach_reference(model, tiny_tokenizer, again, again_val, recipe, tmp_path)
    assert [(p.ref_chosen, p.ref_rejected) for p in again] == [(p.ref_chosen, p.ref_rejected) for p in train]


def test_stale_reference_cache_is_scored_again(tmp_path, tiny_model_dir, tiny_tokenizer, monkeypatch):
    model = _model(tiny_model_dir)
    recipe = _recipe(tmp_path, tiny_model_dir)
    train, _ = build_pairs(recipe, tiny_tokenizer, "train")
    attach_reference(model, tiny_tokenizer, train, None, recipe, tmp_path)
    shorter = _recipe(tmp_path, tiny_model_dir, "dpo.max_prompt_len=9")  # other token ids, same count
    changed, _ = build_pairs(shorter, tiny_tokenizer, "train")
    calls = []
    real = dpo.reference_logps
    monkeypatch.setattr(dpo, "reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    attach_reference(model, tiny_tokenizer, changed, None, shorter, tmp_path)
    assert calls == [1]
    assert changed[0].ref_chosen != train[0].ref_chosen


def test_reference_free_losses_score_only_validation(tmp_path, tiny_model_dir, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_model_dir, "dpo.loss=simpo")
    train, _ = build_pairs(recipe, tiny_tokenizer, "train")
    validation, _ = build_pairs(recipe, tiny_tokenizer, "validation")
    attach_reference(_model(tiny_model_dir), tiny_tokenizer, train, validation, recipe, tmp_path)
    assert all(p.ref_chosen is None for p in train)
    assert all(p.ref_chosen is not None for p in validation)


# ---- losses and batches ----


def _pairs_with_reference(recipe, tokenizer):
    """Pairs with made-up reference log-probs, so the policy (the tiny model) differs from its reference."""
    pairs, _ = build_pairs(recipe, tokenizer, "train")
    for i, pair in enumerate(pairs):
        pair.ref_chosen, pair.ref_rejected = -200.0 - 3 * i, -190.0 + i
    return pairs


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo", "orpo"])
def test_packed_and_padded_batches_give_the_same_loss(tmp_path, tiny_model_dir, tiny_tokenizer, loss):
    recipe = _recipe(tmp_path, tiny_model_dir, f"dpo.loss={loss}")
    pairs = _pairs_with_reference(recipe, tiny_tokenizer)
    model = _model(tiny_model_dir)
    padded_loss, padded_units = pair_loss(
        model, collate_pairs(pairs, tiny_tokenizer.pad_token_id, CPU, False), recipe.dpo
    )
    with packed_attention(model, CPU):
        packed = collate_pairs(pairs, tiny_tokenizer.pad_token_id, CPU, True)
        packed_loss, packed_units = pair_loss(model, packed, recipe.dpo)
    assert packed["input_ids"].shape[0] == 1 and padded_units == packed_units == len(pairs)
    assert abs(padded_loss.item() - packed_loss.item()) < 1e-4
    assert padded_loss.item() > 0


def test_four_pairs_at_once_equal_two_micro_batches_of_two(tmp_path, tiny_model_dir, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_model_dir)
    pairs = _pairs_with_reference(recipe, tiny_tokenizer)
    collate, loss_fn = dpo.dpo_batching(
        recipe, recipe.train.model_copy(update={"packing": False}), tiny_tokenizer, CPU
    )
    base = _model(tiny_model_dir).requires_grad_(True)
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = copy.deepcopy(base)
        params = list(model.parameters())
        # SGD moves each weight by lr x gradient, so equal updates mean equal gradients (AdamW's first
        # step would hide a wrongly scaled gradient).
        optimizer = torch.optim.SGD(params, lr=1.0)
        cfg = TrainConfig(
            batch_size=batch_size,
            grad_accum_steps=accumulation,
            lr=1.0,
            lr_schedule="constant",
            max_grad_norm=None,
            packing=False,
        )
        loss, _ = optimizer_step(model, optimizer, params, pairs, 0, 1, cfg, loss_fn, collate)
        delta = torch.cat(
            [
                (p.detach() - q.detach()).flatten()
                for p, q in zip(model.parameters(), base.parameters(), strict=True)
            ]
        )
        results.append((loss, delta))
    (loss_a, delta_a), (loss_b, delta_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert delta_a.abs().max() > 0
    torch.testing.assert_close(delta_a, delta_b, atol=1e-6, rtol=1e-4)


def test_sigmoid_dpo_raises_chosen_over_rejected(tmp_path, tiny_model_dir, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_model_dir, "train.max_steps=6")
    train, _ = build_pairs(recipe, tiny_tokenizer, "train")
    model = _model(tiny_model_dir)
    attach_reference(model, tiny_tokenizer, train, None, recipe, tmp_path)
    before = _margins(model, tiny_tokenizer, train)
    model, _ = train_model(model, tiny_tokenizer, train, None, recipe, tmp_path, progress=False)
    after = _margins(model, tiny_tokenizer, train)
    assert (after > before).all(), (before, after)
    losses = _losses(tmp_path)
    # The adapter starts as a no-op, so the policy is the reference: DPO's first loss is log 2.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("loss", ["ipo", "simpo", "orpo"])
def test_other_losses_train_with_falling_loss(tmp_path, tiny_model_dir, tiny_tokenizer, loss):
    recipe = _recipe(tmp_path, tiny_model_dir, f"dpo.loss={loss}", "train.max_steps=5")
    train, _ = build_pairs(recipe, tiny_tokenizer, "train")
    model = _model(tiny_model_dir)
    attach_reference(model, tiny_tokenizer, train, None, recipe, tmp_path)
    train_model(model, tiny_tokenizer, train, None, recipe, tmp_path, progress=False)
    losses = _losses(tmp_path)
    if loss == "ipo":  # policy == reference at step 0: h = 0, loss = (1 / (2 beta))^2
        assert losses[0] == pytest.approx((1 / (2 * recipe.dpo.beta)) ** 2, rel=1e-4)
    assert losses[-1] < losses[0], losses


def test_reference_based_loss_without_reference_is_an_error(tmp_path, tiny_model_dir, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_model_dir)
    pairs, _ = build_pairs(recipe, tiny_tokenizer, "train")
    with pytest.raises(TrainingError, match="reference log-probabilities"):
        pair_loss(
            _model(tiny_model_dir), collate_pairs(pairs, tiny_tokenizer.pad_token_id, CPU, False), recipe.dpo
        )


# ---- evaluation and the whole run ----


def test_preference_task_scores_each_answer_as_trained(tmp_path, tiny_model_dir, tiny_tokenizer):
    model = _model(tiny_model_dir)
    task = PreferenceTask()
    predictions = task.run(model, tiny_tokenizer, ROWS, batch_size=3)
    recipe = _recipe(tmp_path, tiny_model_dir, "dpo.max_prompt_len=100000")
    pairs, _ = build_pairs(recipe, tiny_tokenizer, "train")
    logps = reference_logps(model, tiny_tokenizer, pairs, batch_size=1)
    for prediction, (chosen, rejected) in zip(predictions, logps.tolist(), strict=True):
        assert prediction["score"]["chosen_logp"] == pytest.approx(chosen, abs=1e-4)
        assert prediction["score"]["accuracy_summed"] == float(chosen > rejected)
    metrics = task.aggregate([p["score"] for p in predictions])
    assert metrics["accuracy"] == sum(p["score"]["accuracy"] for p in predictions) / 4
    assert task.aggregate_sums(
        {k: sum(p["score"][k] for p in predictions) for k in metrics if k != "rows"}, 4
    )["accuracy"] == pytest.approx(metrics["accuracy"])
    with pytest.raises(DataError, match="row 1"):
        task.run(model, tiny_tokenizer, [{"prompt": "Hi", "chosen": "Yes"}], batch_size=1)


def test_finetune_with_dpo_writes_reward_metrics(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, "train.max_steps=3")
    run_dir = finetune(recipe, progress=False)
    found = json.loads((run_dir / "eval" / "dpo.json").read_text())
    assert found["pairs"] == 4 and found["loss"] == "sigmoid"
    assert 0.0 <= found["reward_accuracy"] <= 1.0
    assert found["reward_margin"] == pytest.approx(
        found["chosen_reward"] - found["rejected_reward"], abs=1e-5
    )
    assert (run_dir / REFERENCE_FILE).is_file()
    for label in ("base", "tuned"):
        metrics = json.loads((run_dir / "eval" / label / "metrics.json").read_text())
        assert metrics["primary_metric"] == "accuracy" and metrics["rows"] == 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["dpo"]["reward_accuracy"] == found["reward_accuracy"]
    val_losses = [
        row["val_loss"]
        for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "val_loss" in row
    ]
    assert val_losses and all(math.isfinite(v) for v in val_losses)


def test_validate_counts_pairs_and_the_memory_check_counts_both_sequences(
    tmp_path, tiny_model_dir, tiny_tokenizer
):
    from honed.methods.registry import validate
    from honed.sizing.fit import workload_of

    recipe = _recipe(tmp_path, tiny_model_dir, "train.batch_size=2", "train.packing=true")
    report = validate(recipe, tiny_tokenizer)
    pairs, _ = build_pairs(recipe, tiny_tokenizer, "train")
    assert report["train"]["examples"] == len(pairs) == len(ROWS)
    sequences = dpo.pair_sequences(pairs)
    lengths = sorted((len(s.input_ids) for s in sequences), reverse=True)
    workload = workload_of(sequences, recipe, "cpu", sequences_per_example=2)
    assert workload.peak_positions == sum(lengths[:4])  # 2 pairs per micro-batch run 4 sequences
