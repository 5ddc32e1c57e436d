"""DoRA and rsLoRA: each trains through the shared loop, saves a PEFT adapter, and merges exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from honed.export.merged import export_merged
from honed.models.lora import apply_lora, count_parameters
from honed.pipeline.finetune import finetune
from honed.runs.directory import load_run_recipe
from honed.runs.final import load_tuned


@pytest.mark.parametrize("variant", ["lora.use_dora=true", "lora.use_rslora=true"])
def test_variant_trains_saves_and_merges(tiny_recipe, tmp_path, variant) -> None:
    run_dir = finetune(tiny_recipe(variant, "train.max_steps=3", "train.lr=1e-2"), progress=False)
    config = json.loads((run_dir / "final" / "adapter" / "adapter_config.json").read_text())
    key = variant.split("=")[0].removeprefix("lora.")
    assert config[key] is True
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]

    result = export_merged(run_dir, tmp_path / "merged")
    assert result["max_abs_logit_diff"] < 1e-3
    adapter_model, tokenizer = load_tuned(run_dir, load_run_recipe(run_dir))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    ids = torch.tensor([tokenizer("<|im_start|>user\nTwo iced lattes<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        expected = adapter_model(input_ids=ids).logits
        with adapter_model.disable_adapter():
            base = adapter_model(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
    assert (base - expected).abs().max() > 1e-4  # the adapter changed something, so the check can fail


def test_dora_trains_a_magnitude_per_output_feature(tiny_recipe, tiny_model_dir) -> None:
    from honed.models.load import load_model
    from honed.sizing.estimate import lora_params
    from honed.sizing.fit import model_config

    recipe = tiny_recipe("lora.use_dora=true")
    model = apply_lora(load_model(tiny_model_dir, torch.float32, torch.device("cpu")), recipe.lora, 0)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names)
    trainable, _ = count_parameters(model)
    assert trainable == lora_params(model_config(tiny_model_dir)[0], recipe)


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_recipe, tiny_model_dir) -> None:
    from honed.models.load import load_model

    recipe = tiny_recipe("lora.use_rslora=true", "lora.r=16", "lora.alpha=32")
    model = apply_lora(load_model(tiny_model_dir, torch.float32, torch.device("cpu")), recipe.lora, 0)
    scaling = next(m.scaling["default"] for m in model.modules() if hasattr(m, "lora_A"))
    assert scaling == pytest.approx(32 / math.sqrt(16))
