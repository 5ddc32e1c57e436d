"""The estimate: its parts against the real model and real steps, the time model, and the cheapest fit."""

from __future__ import annotations

import pytest
import torch

from honed.data.tokenize import Encoded
from honed.errors import ResourceError
from honed.sizing.estimate import GIB, Workload, cheapest_fit, estimate, lora_params, step_flops, step_shape
from honed.sizing.fit import check_fit, config_from_architecture, model_config, refusal, workload_of


def _examples(n: int = 16, distinct: bool = False) -> list[Encoded]:
    result = []
    for i in range(n):
        length = 40 + 3 * i if distinct else 40 + 7 * (i % 5)
        ids = [5 + (i + j) % 200 for j in range(length)]
        result.append(Encoded(ids, [-100] * (length // 2) + ids[length // 2 :]))
    return result


@pytest.fixture
def tiny(tiny_model_dir, tiny_recipe):
    arch, config = model_config(tiny_model_dir)
    return arch, config, tiny_recipe


def test_workload_peak_is_the_largest_micro_batch() -> None:
    examples = _examples()
    packed = Workload.from_examples(examples, batch_size=3, packing=True)
    padded = Workload.from_examples(examples, batch_size=3, packing=False)
    assert packed.longest == 68 and packed.peak_positions == 3 * 68
    assert padded.peak_positions == 3 * 68
    assert packed.tokens == sum(len(e.input_ids) for e in examples)
    assert packed.labelled_tokens == sum(e.num_labels for e in examples)


def test_parameter_counts_equal_the_loaded_model(tiny, tiny_model_dir) -> None:
    from honed.models.load import load_model
    from honed.models.lora import apply_lora, count_parameters

    arch, config, make = tiny
    for targets in ("all-linear", "[q_proj,v_proj]"):
        recipe = make(f"lora.target_modules={targets}")
        model = load_model(tiny_model_dir, torch.float32, torch.device("cpu"))
        base_params = sum(p.numel() for p in model.parameters())
        result = estimate(arch, config, recipe, Workload.from_examples(_examples(), 2, True))
        trainable, _ = count_parameters(apply_lora(model, recipe.lora, 0))
        assert result.params == base_params
        assert result.trainable == trainable == lora_params(arch, recipe)
        assert result.memory.weights == 4 * result.params
        assert result.memory.optimizer == 2 * result.memory.gradients == 8 * trainable


@pytest.mark.parametrize("overrides", [[], ["adapter=full"], ["train.packing=false"], ["lora.dropout=0"]])
def test_activation_bytes_equal_a_real_step_on_the_model(tiny, tiny_model_dir, overrides) -> None:
    from honed.models.load import load_model
    from honed.models.prepare import prepare_model
    from honed.sizing.calibrate import calibrate

    arch, config, make = tiny
    recipe = make("train.batch_size=2", "train.grad_accum_steps=2", *overrides)
    examples = _examples(distinct=True)  # the largest padded micro-batch has padding, as real data does
    predicted = estimate(arch, config, recipe, workload_of(examples, recipe, "cpu"))
    model = prepare_model(load_model(tiny_model_dir, torch.float32, torch.device("cpu")), recipe)
    measured = calibrate(model, examples, recipe, arch, torch.device("cpu"), steps=2)
    assert predicted.activation_bytes_per_token == pytest.approx(
        measured["activation_bytes_per_token"], rel=0.02
    )
    assert measured["throughput_flops"] > 0 and len(measured["step_s"]) == 2
    assert measured["peak_memory_bytes"] > 0


def test_full_costs_more_compute_than_lora_and_checkpointing_adds_a_forward(tiny) -> None:
    arch, _, make = tiny
    workload = Workload.from_examples(_examples(), 2, True)

    def flops(*overrides):
        recipe = make(*overrides)
        return step_flops(arch, recipe, workload, step_shape(recipe, "cpu", workload.labelled_fraction))

    assert flops("adapter=full") > flops("lora.r=2") > 0  # at r=16 a 32-wide model's adapters cost more
    assert flops("train.gradient_checkpointing=true") > flops()


def test_time_is_flops_over_throughput(tiny) -> None:
    arch, config, make = tiny
    recipe = make("train.max_steps=10")
    result = estimate(
        arch, config, recipe, Workload.from_examples(_examples(), 2, True), throughput_flops=1e9
    )
    assert result.step_s == pytest.approx(result.flops_per_step / 1e9)
    assert result.train_s == pytest.approx(10 * result.step_s)


def _space(arch, config, recipe, examples, cut: float) -> int:
    """Available bytes such that the recipe needs `cut` x what it needs now (plus the headroom)."""
    need = estimate(arch, config, recipe, workload_of(examples, recipe, "cpu")).memory.total
    return int(need * cut / 0.9)


def test_cheapest_fit_prefers_a_change_that_keeps_the_result(tiny) -> None:
    arch, config, make = tiny
    recipe = make("train.batch_size=8")
    examples = _examples(64)
    available = _space(arch, config, recipe, examples, 0.9999)
    found = cheapest_fit(arch, config, recipe, examples, "cpu", None, available)
    assert found is not None
    overrides, fitted = found
    assert fitted.fits and fitted.memory.total <= 0.9 * available
    assert not any(o.startswith(("adapter=", "data.max_seq_len")) for o in overrides)


def test_nothing_fits_a_machine_smaller_than_the_weights(tiny) -> None:
    arch, config, make = tiny
    assert cheapest_fit(arch, config, make(), _examples(), "cpu", None, available_bytes=1024) is None


def test_check_fit_refuses_with_numbers_and_the_change_unless_forced(
    tiny, tiny_model_dir, monkeypatch
) -> None:
    arch, config, make = tiny
    recipe = make("train.batch_size=8")
    examples = _examples(64)
    available = _space(arch, config, recipe, examples, 0.9999)
    monkeypatch.setattr("honed.sizing.fit.available_bytes", lambda device: available)
    with pytest.raises(ResourceError) as caught:
        check_fit(recipe, tiny_model_dir, examples, torch.device("cpu"))
    message = str(caught.value)
    assert "GiB at its peak" in message and "available" in message
    assert "cheapest change that fits:" in message and "--force" in message
    assert check_fit(recipe, tiny_model_dir, examples, torch.device("cpu"), force=True).fits is False


def test_refusal_without_a_fitting_change_says_so(tiny) -> None:
    arch, config, make = tiny
    result = estimate(
        arch, config, make(), Workload.from_examples(_examples(), 2, True), available_bytes=GIB // 1024
    )
    assert not result.fits
    assert "no change honed knows" in refusal(result, None)


def test_registry_architecture_builds_a_miniature_of_the_right_class() -> None:
    from honed.models.registry import lookup

    assert config_from_architecture(lookup("qwen2.5-0.5b-instruct").architecture)["model_type"] == "qwen2"
    assert config_from_architecture(lookup("qwen3-0.6b").architecture)["model_type"] == "qwen3"
    assert config_from_architecture(lookup("gemma-3-270m").architecture)["model_type"] == "gemma3_text"
    assert config_from_architecture(lookup("llama-3.2-1b-instruct").architecture)["model_type"] == "llama"
