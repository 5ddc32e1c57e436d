"""lora.init_from: a run continues a saved adapter (its weights, its shape), trainable, with fused dropout,
resumes exactly, and refuses a folder that is not a fitting LoRA adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from honed.errors import ConfigError
from honed.models.load import load_model
from honed.models.prepare import prepare_model
from honed.pipeline.finetune import finetune
from honed.training.checkpoint import trainable_parameters

ADAPTER = "final/adapter/adapter_model.safetensors"


@pytest.fixture(scope="module")
def old_run(make_tiny_run) -> Path:
    """A finished tiny run with a rank-4 adapter trained away from its zero-initialised B (one per module:
    the tests only read it)."""
    return make_tiny_run("old", "train.max_steps=2", "train.lr=1e-2", "lora.r=4")


def _saved_name(name: str) -> str:
    """A PeftModel parameter's name as save_pretrained writes it (without the adapter name)."""
    return name.replace(".default.", ".")


def test_init_from_loads_the_saved_adapter_trainable_with_fused_dropout(tiny_recipe, tiny_model_dir, old_run):
    recipe = tiny_recipe(f"lora.init_from={old_run}/final/adapter", "lora.r=16", "lora.dropout=0.1")
    model = prepare_model(load_model(tiny_model_dir, torch.float32, torch.device("cpu")), recipe)

    saved = load_file(old_run / ADAPTER)
    params = trainable_parameters(model)
    assert {_saved_name(name) for name in params} == set(saved)  # only the adapter trains, all of it
    for name, param in params.items():
        torch.testing.assert_close(param.detach(), saved[_saved_name(name)], rtol=0, atol=0)
    b = next(p for n, p in params.items() if "lora_B" in n)
    assert b.shape[1] == 4 and b.abs().max() > 0  # the adapter's r (4) won over lora.r (16)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.lora_dropout["default"], torch.nn.Identity)  # fused into lora_A on CPU
    assert layer.lora_A["default"].forward.func.__name__ == "_dropped_forward"


def test_init_from_has_the_parameter_names_of_a_fresh_adapter(tiny_recipe, tiny_model_dir, old_run):
    """Checkpoints (and --resume) match parameters by name, so both paths must name them alike."""
    fresh = prepare_model(
        load_model(tiny_model_dir, torch.float32, torch.device("cpu")), tiny_recipe("lora.r=4")
    )
    continued = prepare_model(
        load_model(tiny_model_dir, torch.float32, torch.device("cpu")),
        tiny_recipe(f"lora.init_from={old_run}/final/adapter"),
    )
    assert list(trainable_parameters(fresh)) == list(trainable_parameters(continued))


def test_init_from_run_resumes_exactly(tiny_recipe, old_run):
    overrides = (
        f"lora.init_from={old_run}/final/adapter",
        "train.max_steps=2",
        "train.lr=5e-3",
        "lora.dropout=0.1",
        "train.checkpoint_every_steps=1",
        "eval.base=false",
    )
    straight = finetune(tiny_recipe(*overrides, "output.run_name=straight"), progress=False)
    expected = load_file(straight / ADAPTER)
    assert any(not torch.equal(expected[k], v) for k, v in load_file(old_run / ADAPTER).items())

    shutil.rmtree(straight / "checkpoints" / "step-00000002")  # as if stopped after step 1
    shutil.rmtree(straight / "final")
    finetune(resume=straight, progress=False)
    resumed = load_file(straight / ADAPTER)
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-7)


def test_init_from_errors(tiny_recipe, tiny_model_dir, old_run, tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        finetune(tiny_recipe(f"lora.init_from={tmp_path / 'missing'}"), progress=False)
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
    with pytest.raises(ConfigError, match="set it as model.base"):
        finetune(tiny_recipe(f"lora.init_from={tiny_model_dir}"), progress=False)
    not_lora = tmp_path / "ia3"
    not_lora.mkdir()
    (not_lora / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ConfigError, match="IA3 adapter"):
        finetune(tiny_recipe(f"lora.init_from={not_lora}"), progress=False)
    with pytest.raises(ConfigError, match="adapter lora or qlora"):
        tiny_recipe(f"lora.init_from={old_run}/final/adapter", "adapter=full")


def test_init_from_refuses_an_adapter_of_another_shape(tiny_recipe, old_run, tmp_path):
    from honed.models.tiny import build_tiny_model

    wider = build_tiny_model(tmp_path / "wider", hidden_size=64)
    recipe = tiny_recipe(f"lora.init_from={old_run}/final/adapter", f"model.base={wider}")
    with pytest.raises(
        ConfigError, match=r"shapes differ from model.base: .*down_proj: adapter 64 -> 32, model 128 -> 64"
    ):
        prepare_model(load_model(wider, torch.float32, torch.device("cpu")), recipe)


def test_init_from_is_stored_absolute(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe("lora.init_from=runs/old/final/adapter")
    assert recipe.lora.init_from == str(tmp_path / "runs" / "old" / "final" / "adapter")
