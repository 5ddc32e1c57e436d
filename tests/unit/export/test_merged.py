"""Merged export: plain transformers loads it and gives the adapter model's logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from honed.errors import ExportError
from honed.export.merged import export_merged
from honed.pipeline.finetune import finetune
from honed.runs.directory import load_run_recipe
from honed.runs.final import load_tuned


def test_merged_logits_equal_adapter_logits(tiny_recipe, tmp_path):
    run_dir = finetune(tiny_recipe("train.max_steps=3", "train.lr=1e-2"), progress=False)
    out = tmp_path / "merged"
    result = export_merged(run_dir, out)
    assert result["max_abs_logit_diff"] < 1e-3

    adapter_model, _ = load_tuned(run_dir, load_run_recipe(run_dir))
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # the chat template travels with the weights
    assert not list(out.glob("adapter_*")) and list(out.glob("*.safetensors"))
    ids = torch.tensor([tokenizer("<|im_start|>user\nTwo iced lattes<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        expected = adapter_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with adapter_model.disable_adapter():
            base = adapter_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (base - expected).abs().max() > 1e-4  # the adapter changed something, so the check can fail


def test_export_refuses_to_overwrite(tiny_recipe, tmp_path):
    run_dir = finetune(tiny_recipe("train.max_steps=1"), progress=False)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="--overwrite"):
        export_merged(run_dir, out)
    assert (out / "keep.txt").read_text() == "mine"
