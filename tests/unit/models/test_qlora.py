"""QLoRA: a 4-bit NF4 base that takes less memory, an adapter that trains on it through the shared loop,
and a merge into the float base that gives float base + adapter's logits."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from honed.errors import ConfigError, ModelError
from honed.export.merged import export_merged
from honed.models.load import load_model, load_tokenizer
from honed.models.lora import apply_lora, fuse_lora_dropout, keep_mask
from honed.models.prepare import load_training_model
from honed.models.quantize import load_quantized
from honed.pipeline.finetune import finetune, train_model
from honed.runs.directory import load_run_recipe
from honed.runs.final import load_tuned

bnb = pytest.importorskip("bitsandbytes")
CPU = torch.device("cpu")
PROMPT = "<|im_start|>user\nTwo iced lattes<|im_end|>\n"


def _stored_bytes(model) -> int:
    """Bytes the model's weights really take: parameters (4-bit ones packed) plus their quantisation
    state (absmax scales, code books), which are not parameters."""
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        while state is not None:
            tensors = (state.absmax, state.code, getattr(state, "offset", None))
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
            state = state.state2 if state.nested else None
    return total


def test_linear_layers_load_in_4bit_and_take_less_memory(tiny_recipe, tiny_model_dir) -> None:
    from honed.sizing.estimate import Workload, estimate
    from honed.sizing.fit import model_config

    recipe = tiny_recipe("adapter=qlora")
    model = load_training_model(tiny_model_dir, recipe, CPU)
    decoder = [m for n, m in model.named_modules() if n.endswith(("_proj",))]
    assert decoder and all(isinstance(m, bnb.nn.Linear4bit) for m in decoder)
    assert all(m.weight.quant_state.quant_type == "nf4" and m.weight.quant_state.nested for m in decoder)
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.float32

    float_bytes = _stored_bytes(load_model(tiny_model_dir, torch.float32, CPU))
    quantised = _stored_bytes(model)
    assert quantised < 0.7 * float_bytes  # the tiny model is mostly embeddings; its linears shrink ~5x
    arch, config = model_config(tiny_model_dir)
    examples = [_example()]
    predicted = estimate(arch, config, recipe, Workload.from_examples(examples, 1, True)).memory.weights
    assert predicted == quantised  # the estimate's weights term is the bytes bitsandbytes stores


def _example():
    from honed.data.tokenize import Encoded

    ids = list(range(5, 45))
    return Encoded(ids, [-100] * 20 + ids[20:])


def test_adapter_trains_through_the_shared_loop_and_the_base_stays_frozen(
    tiny_recipe, tiny_model_dir, tmp_path
) -> None:
    from honed.data.cache import cached_examples

    recipe = tiny_recipe("adapter=qlora", "train.max_steps=6", "train.lr=1e-2")
    tokenizer = load_tokenizer(tiny_model_dir)
    train, _ = cached_examples(recipe.data, tokenizer, "train")
    model = load_training_model(tiny_model_dir, recipe, CPU)
    base = [(param, param.detach().clone()) for param in model.parameters()]  # PEFT keeps these objects

    model, result = train_model(model, tokenizer, train, None, recipe, tmp_path, progress=False)

    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 6 and losses[-1] < losses[0]
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    assert all(p.abs().max() > 0 for n, p in trained.items() if "lora_B" in n)  # B starts at zero
    assert sum(isinstance(param, bnb.nn.Params4bit) for param, _ in base) == 14
    for param, before in base:
        assert not param.requires_grad and torch.equal(param, before)  # 4-bit bytes, norms, embeddings


def test_fused_dropout_runs_on_4bit_base_layers(tiny_model_dir) -> None:
    from honed.config.schema import LoraConfig

    model = load_quantized(tiny_model_dir, torch.float32, CPU)
    cfg = LoraConfig(r=4, dropout=0.25)
    model = apply_lora(model, cfg, 0, fuse_dropout=False)
    assert fuse_lora_dropout(model) == 14  # 7 linears x 2 layers, each on a Linear4bit
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(layer.lora_B["default"].weight)  # B starts at zero: make the update visible
    layer.train()
    x = torch.randn(2, 5, 32)
    torch.manual_seed(3)
    got = layer(x)
    got.sum().backward()
    torch.manual_seed(3)
    keep = keep_mask(x.shape, cfg.dropout)  # the fused op draws exactly this mask
    lora_a, lora_b = layer.lora_A["default"], layer.lora_B["default"]
    with torch.no_grad():
        dropped = x * keep / (1 - cfg.dropout)  # lora_A's forward is the fused op: use its weight directly
        update = lora_b(torch.nn.functional.linear(dropped, lora_a.weight)) * layer.scaling["default"]
        torch.testing.assert_close(got, layer.base_layer(x) + update)
    assert lora_a.weight.grad is not None and lora_a.weight.grad.abs().sum() > 0


def test_merged_export_equals_the_float_base_plus_the_adapter(tiny_recipe, tiny_model_dir, tmp_path) -> None:
    run_dir = finetune(tiny_recipe("adapter=qlora", "train.max_steps=3", "train.lr=1e-2"), progress=False)
    adapter = run_dir / "final" / "adapter"
    assert "quantization" not in (adapter / "adapter_config.json").read_text()  # a plain PEFT adapter

    result = export_merged(run_dir, tmp_path / "merged")
    assert result["max_abs_logit_diff"] < 1e-3
    recipe = load_run_recipe(run_dir)
    float_adapter, tokenizer = load_tuned(run_dir, recipe)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in float_adapter.modules())
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert not hasattr(merged.config, "quantization_config")
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        expected = float_adapter(input_ids=ids).logits
        with float_adapter.disable_adapter():
            base = float_adapter(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
        assert (base - expected).abs().max() > 1e-4  # the adapter changed something, so the check can fail

        # The model as trained (4-bit base + adapter) differs from the merged one by the quantisation error.
        from peft import PeftModel

        quantised = load_training_model(tiny_model_dir, recipe, CPU)
        trained = PeftModel.from_pretrained(quantised, adapter).eval()
        assert (trained(input_ids=ids).logits - expected).abs().max() > 1e-4


def test_missing_bitsandbytes_names_the_install_and_lora(tiny_recipe, tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(ModelError) as caught:
        load_training_model(tiny_model_dir, tiny_recipe("adapter=qlora"), CPU)
    assert "pip install 'honed[qlora]'" in str(caught.value) and "adapter: lora" in str(caught.value)


def test_a_device_without_4bit_kernels_is_refused_with_the_options(tiny_model_dir, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="train.device: cpu.*adapter: lora"):
        load_quantized(tiny_model_dir, torch.float32, torch.device("mps"))

    def no_kernel(*args):
        raise NotImplementedError("no kernel for this device")

    monkeypatch.setattr("honed.models.quantize._probe", no_kernel)  # as bitsandbytes raises on such hardware
    with pytest.raises(ModelError, match="no kernel for this device.*adapter: lora"):
        load_quantized(tiny_model_dir, torch.float32, CPU)
