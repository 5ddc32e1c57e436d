"""GGUF writer parts (tensor types, rope permutation, vocabulary, pre-tokenizer) and parity's messages."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from honed.errors import ExportError
from honed.export.gguf import encode, permute, pre_tokenizer_name, vocabulary

Q8_0, F16, F32 = (gguf.GGMLQuantizationType[name] for name in ("Q8_0", "F16", "F32"))


@pytest.mark.parametrize(
    ("name", "shape", "quant", "expected"),
    [
        ("blk.0.ffn_down.weight", (4, 64), "q8_0", Q8_0),
        ("blk.0.ffn_down.weight", (4, 40), "q8_0", F16),  # 40 values per row do not fill 32-value blocks
        ("token_embd.weight", (10, 64), "f16", F16),
        ("blk.0.attn_norm.weight", (64,), "q8_0", F32),
        ("output_norm.weight", (64,), "f16", F32),
        ("blk.0.attn_q.bias", (64,), "q8_0", F32),
    ],
)
def test_tensor_types_follow_llama_cpp(name, shape, quant, expected):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    data, qtype = encode(name, array, quant)
    assert qtype == expected
    restored = gguf.quants.dequantize(data, qtype).reshape(shape)
    tolerance = {F32: 0, F16: 1e-3, Q8_0: 0.02}[expected]
    np.testing.assert_allclose(restored, array, atol=tolerance * np.abs(array).max())


@pytest.mark.parametrize(("n_head", "n_head_kv"), [(4, 4), (4, 2), (9, 3)])
def test_transformers_undoes_the_rope_permutation(n_head, n_head_kv):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rows = n_head_kv * 8
    weights = torch.randn(rows, 16)
    permuted = permute(weights, n_head, n_head_kv)
    assert not torch.equal(permuted, weights)
    processor = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_head_kv})
    restored = processor._reverse_permute_weights(permuted.numpy(), n_head, n_head_kv)
    np.testing.assert_array_equal(restored, weights.numpy())


def test_vocabulary_marks_special_tokens_and_pads_to_the_model_size(bpe_tokenizer):
    tokenizer = bpe_tokenizer
    tokens, types = vocabulary(tokenizer, len(tokenizer) + 2)
    assert tokens[tokenizer.convert_tokens_to_ids("<|im_end|>")] == "<|im_end|>"
    assert types[tokenizer.convert_tokens_to_ids("<|im_end|>")] == gguf.TokenType.CONTROL
    assert types[tokenizer.convert_tokens_to_ids("Ġthe")] == gguf.TokenType.NORMAL
    assert tokens[-2:] == [f"[PAD{len(tokenizer)}]", f"[PAD{len(tokenizer) + 1}]"]
    assert types[-1] == gguf.TokenType.UNUSED
    with pytest.raises(ExportError, match="vocab_size"):
        vocabulary(tokenizer, len(tokenizer) - 1)


def test_pre_tokenizer_names_match_llama_cpp():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert pre_tokenizer_name(byte_level) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer_name({"type": "Sequence", "pretokenizers": [digits, byte_level]}) == "smollm"
    with pytest.raises(ExportError, match="no llama.cpp pre-tokenizer name"):
        pre_tokenizer_name({"type": "Metaspace", "replacement": "▁"})


def test_parity_failures_name_the_file_the_figure_and_the_bound():
    from pathlib import Path

    from honed.export.parity import BOUNDS, Reference, _enforce

    reference = Reference("", [], [], torch.zeros(1), [], metric_name="slot_f1", metric=0.7)
    figures = {"max_abs_logit_diff": 0.4, "greedy_agreement": 0.5, "metric": 0.5, "metric_delta": -0.2}
    with pytest.raises(ExportError) as f16:
        _enforce(Path("run-F16.gguf"), figures, BOUNDS["f16"], reference)
    assert str(f16.value) == (
        "run-F16.gguf fails its parity check: max |logit diff| 0.4 > 0.25; greedy answers identical on 50% "
        "of golden prompts < 100%"
    )
    with pytest.raises(
        ExportError, match=r"slot_f1 0.500 is 0.200 below the merged model's 0.700 \(bound 0.1\)"
    ):
        _enforce(Path("run-Q8_0.gguf"), figures, BOUNDS["q8_0"], reference)
    _enforce(
        Path("run-Q8_0.gguf"),
        {**figures, "greedy_agreement": 0.75, "metric_delta": -0.1},
        BOUNDS["q8_0"],
        reference,
    )
