"""GGUF export of a tiny run: reloads as the merged model, carries the run's template, fails loudly if wrong.

The tiny random model's next-token logits are nearly flat (within +-0.75 over 420 tokens), so Q8_0's
rounding flips greedy near-ties that a real model does not have; its agreement with the float model is
what the embedded-model test bounds. Here Q8_0 is checked exactly instead: the file must reload as the
merged model with its weights rounded to Q8_0, logit for logit and answer for answer.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import gguf
import numpy as np
import pytest
import torch

from honed.cli.main import main
from honed.data.tokenize import chat_template_digest
from honed.errors import ExportError
from honed.export import gguf as gguf_export
from honed.export import parity
from honed.export.gguf import export_gguf
from honed.export.merged import golden_ids, logits, merge_run
from honed.models.decoding import generate
from honed.pipeline.finetune import finetune
from honed.runs.directory import create_run_dir


@pytest.fixture
def tiny_q8_bounds(monkeypatch):
    """Q8_0 judged by the exact checks of this module, not by greedy agreement (see the module docstring)."""
    relaxed = dataclasses.replace(parity.BOUNDS["q8_0"], min_greedy_agreement=0.0, max_metric_drop=None)
    monkeypatch.setitem(parity.BOUNDS, "q8_0", relaxed)


def rounded(model, quant: str):
    """A copy of `model` with every weight rounded as the GGUF file stores it (vectors stay float32)."""
    copied = copy.deepcopy(model)
    for name, param in copied.named_parameters():
        if param.dim() < 2:
            continue
        data, qtype = gguf_export.encode(name, param.detach().numpy(), quant)
        data = gguf.quants.dequantize(data, qtype)
        param.data = torch.from_numpy(np.ascontiguousarray(data.reshape(param.shape)))
    return copied


def reload(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ), tokenizer


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_gguf_files_reload_as_the_merged_model(bpe_recipe, tmp_path, tied, tiny_q8_bounds):
    run_dir = finetune(bpe_recipe("train.max_steps=3", "train.lr=1e-2", tied=tied), progress=False)
    out = tmp_path / "gguf"
    result = export_gguf(run_dir, out)

    f16, q8 = result["files"]["f16"], result["files"]["q8_0"]
    assert f16["max_abs_logit_diff"] <= parity.F16_MAX_LOGIT_DIFF and f16["greedy_agreement"] == 1.0
    assert f16["max_weight_error"] <= 1.0 and q8["max_weight_error"] <= 1.0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f16["file"], q8["file"], "Modelfile", "parity.json"]
    )
    assert json.loads((out / "parity.json").read_text())["files"] == result["files"]

    merged = merge_run(run_dir)
    ids = golden_ids(merged.tokenizer, merged.golden)
    prompts = [g.prompt for g in merged.golden]
    for quant, figures in result["files"].items():
        model, tokenizer = reload(out / figures["file"])
        expected = rounded(merged.model, quant)
        torch.testing.assert_close(logits(model, ids), logits(expected, ids), rtol=0, atol=1e-5)
        assert generate(model, tokenizer, prompts, 32) == generate(expected, merged.tokenizer, prompts, 32)
    assert (
        logits(reload(out / q8["file"])[0], ids) - logits(merged.model, ids)
    ).abs().max() > 0  # it did round

    reader = gguf.GGUFReader(out / f16["file"])
    assert reader.get_field("tokenizer.chat_template").contents() == merged.tokenizer.chat_template
    recorded = json.loads((run_dir / "train.json").read_text())["chat_template_sha256"]
    assert chat_template_digest(merged.tokenizer) == recorded
    assert reader.get_field("tokenizer.ggml.model").contents() == "gpt2"
    assert reader.get_field("tokenizer.ggml.pre").contents() == "gpt-2"
    tensors = {t.name: t.tensor_type for t in reader.tensors}
    assert ("output.weight" in tensors) is not tied
    assert tensors["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    q8_types = {t.name: t.tensor_type for t in gguf.GGUFReader(out / q8["file"]).tensors}
    assert q8_types["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_a_corrupted_export_fails_parity_and_leaves_nothing(bpe_recipe, tmp_path, monkeypatch):
    run_dir = finetune(bpe_recipe("train.max_steps=3", "train.lr=1e-2"), progress=False)
    out = tmp_path / "gguf"

    def no_rope_permutation(weights, n_head, n_head_kv):
        return weights

    def negated_ffn(name, array, quant, encode=gguf_export.encode):
        return encode(name, -array if name == "blk.1.ffn_down.weight" else array, quant)

    def swapped_tokens(tokenizer, vocab_size, vocabulary=gguf_export.vocabulary):
        tokens, types = vocabulary(tokenizer, vocab_size)
        e, t = tokenizer.convert_tokens_to_ids(["e", "t"])
        tokens[e], tokens[t] = tokens[t], tokens[e]
        return tokens, types

    corruptions = [
        (
            "permute",
            no_rope_permutation,
            r"weight model.layers.\d.self_attn.[qk]_proj.weight \(F16\) differs",
        ),
        ("encode", negated_ffn, r"weight model.layers.1.mlp.down_proj.weight \(F16\) differs"),
        ("vocabulary", swapped_tokens, "its tokenizer encodes golden prompt 0 differently"),
    ]
    for attribute, corrupt, message in corruptions:
        with monkeypatch.context() as patch:
            patch.setattr(gguf_export, attribute, corrupt)
            with pytest.raises(ExportError, match=message):
                export_gguf(run_dir, out, quants=["f16"])
        assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no file, no staging folder

    train = run_dir / "train.json"
    train.write_text(json.dumps({**json.loads(train.read_text()), "chat_template_sha256": "0" * 64}))
    with pytest.raises(
        ExportError, match=r"chat template sha256 .* differs from the run's 000000000000.*nothing"
    ):
        export_gguf(run_dir, out, quants=["f16"])
    assert not out.exists()


def test_other_architectures_are_refused_with_the_merged_alternative(tiny_recipe, qwen_model_dir, tmp_path):
    run_dir = create_run_dir(tiny_recipe(f"model.base={qwen_model_dir}"))
    with pytest.raises(ExportError, match=r"llama family .* this model is Qwen2ForCausalLM.*--merged DIR"):
        export_gguf(run_dir, tmp_path / "gguf")


def test_export_refuses_a_non_empty_folder_and_unknown_quants(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="--overwrite"):
        export_gguf(tmp_path / "no-run", taken)
    with pytest.raises(ExportError, match="choose from f16, q8_0"):
        export_gguf(tmp_path / "no-run", tmp_path / "new", quants=["q4_k"])
    assert (taken / "keep.txt").read_text() == "mine"


def test_cli_exports_merged_and_gguf_in_one_call(bpe_recipe, tmp_path, capsys):
    run_dir = finetune(bpe_recipe("train.max_steps=2"), progress=False)
    merged, gguf_dir = tmp_path / "merged", tmp_path / "gguf"
    argv = ["export", str(run_dir), "--merged", str(merged), "--gguf", str(gguf_dir), "--quant", "f16"]

    assert main([*argv, "--no-ollama"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"merged model: {merged}")
    assert lines[1].startswith(f"gguf f16: {gguf_dir}/") and "greedy 8/8 identical" in lines[1]
    assert len(lines) == 2 and not (gguf_dir / "Modelfile").exists()
    assert main(["export", str(run_dir), "--gguf", str(gguf_dir), "--quant", "f16"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip() == "error: choose an export: --merged DIR and/or --gguf DIR"
