"""The speed options change how training is computed, never what: each is checked against the plain path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from honed.data.tokenize import IGNORE, Encoded, encode_example
from honed.models.load import load_model
from honed.models.lora import apply_lora, fuse_lora_dropout, keep_mask
from honed.models.nll import batch_tokens, collate, completion_loss, linear_cross_entropy
from honed.training.packing import collate_packed, packed_attention, packed_attention_forward
from honed.training.speed import accelerated, resolve

CPU = torch.device("cpu")
CONVERSATIONS = [
    ("two lattes", "order(quantity[2])"),
    ("cancel 1234 please, thanks", "cancel(order_id[1234])"),
    ("hi", "greet()"),
    ("a large flat white with oat milk to take away", "order(drink[flat white], size[large], milk[oat])"),
]


def _examples(tokenizer) -> list[Encoded]:
    return [
        encode_example(tokenizer, [{"role": "user", "content": u}, {"role": "assistant", "content": a}])
        for u, a in CONVERSATIONS
    ]


def _loss_and_grads(model, batch, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss_sum, count = completion_loss(model, batch, **kwargs)
    (loss_sum / count).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return (loss_sum / count).detach(), grads


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_packed_equals_padded_loss_and_gradients(tiny_model_dir, tiny_tokenizer, tiny_recipe, adapter):
    model = load_model(tiny_model_dir, torch.float32, CPU)
    if adapter == "lora":
        # dropout 0: the comparison needs the same function twice, not two random masks
        model = apply_lora(model, tiny_recipe("lora.dropout=0").lora, seed=0)
    else:
        model.requires_grad_(True)
    examples = _examples(tiny_tokenizer)
    padded = collate(examples, tiny_tokenizer.pad_token_id, CPU)
    packed = collate_packed(examples, CPU)
    assert packed["input_ids"].shape == (1, sum(len(e.input_ids) for e in examples))
    assert batch_tokens(packed) == batch_tokens(padded) < padded["input_ids"].numel()

    loss_padded, grads_padded = _loss_and_grads(model, padded)
    with packed_attention(model, CPU):
        loss_packed, grads_packed = _loss_and_grads(model, packed)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    assert grads_packed.keys() == grads_padded.keys() and grads_padded
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packing_keeps_examples_apart(tiny_model_dir, tiny_tokenizer):
    """The second example's loss is the same whatever comes before it in the row."""
    model = load_model(tiny_model_dir, torch.float32, CPU)
    first, second, other = _examples(tiny_tokenizer)[:3]
    with torch.no_grad(), packed_attention(model, CPU):
        alone = completion_loss(model, collate_packed([second], CPU))[0]
        after_first = completion_loss(model, collate_packed([first, second], CPU))[0]
        after_other = completion_loss(model, collate_packed([other, second], CPU))[0]
        first_alone = completion_loss(model, collate_packed([first], CPU))[0]
        other_alone = completion_loss(model, collate_packed([other], CPU))[0]
    torch.testing.assert_close(after_first - first_alone, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after_other - other_alone, alone, rtol=1e-5, atol=1e-5)


def test_packed_attention_is_block_diagonal_causal_attention():
    """honed's per-example SDPA equals one SDPA call under an explicit block-diagonal causal mask."""
    torch.manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    q, k, v = torch.randn(1, 4, 9, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8)
    cu = torch.tensor([0, 4, 5, 9], dtype=torch.int32)
    out, _ = packed_attention_forward(module, q, k, v, None, scaling=0.5, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    segment = torch.repeat_interleave(torch.arange(3), torch.diff(cu))
    mask = (segment[:, None] == segment[None, :]) & torch.ones(9, 9, dtype=torch.bool).tril()
    reference = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), attn_mask=mask, scale=0.5
    )
    torch.testing.assert_close(out, reference.transpose(1, 2))


def test_packed_row_never_targets_the_next_example(tiny_tokenizer):
    examples = [Encoded([1, 2, 3], [1, 2, 3]), Encoded([4, 5], [4, 5])]
    packed = collate_packed(examples, CPU)
    assert packed["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["cu_seq_lens_q"].tolist() == [0, 3, 5]


def test_packed_attention_is_undone_after_training(tiny_model_dir, tiny_recipe):
    model = load_model(tiny_model_dir, torch.float32, CPU)
    before = model.config._attn_implementation
    cfg = tiny_recipe("train.gradient_checkpointing=true").train
    with accelerated(model, cfg, CPU):
        assert model.config._attn_implementation != before
        assert model.model.gradient_checkpointing
    assert model.config._attn_implementation == before
    assert not model.model.gradient_checkpointing


@pytest.mark.parametrize("weight_grad", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_loss_equals_full_cross_entropy(weight_grad, chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    head.weight.requires_grad_(weight_grad)
    hidden = torch.randn(13, 16, requires_grad=True)
    targets = torch.randint(0, 50, (13,))
    upstream = torch.rand(13)  # a non-uniform upstream gradient checks the per-token scaling

    full = F.cross_entropy(head(hidden), targets, reduction="none")
    (full * upstream).sum().backward()
    grads_full = hidden.grad.clone(), head.weight.grad.clone() if weight_grad else None
    hidden.grad, head.weight.grad = None, None

    chunked = linear_cross_entropy(hidden, head, targets, chunk)
    (chunked * upstream).sum().backward()
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(hidden.grad, grads_full[0])
    if weight_grad:
        torch.testing.assert_close(head.weight.grad, grads_full[1])


def test_chunked_completion_loss_equals_unchunked(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, torch.float32, CPU)
    model.requires_grad_(True)
    batch = collate(_examples(tiny_tokenizer), tiny_tokenizer.pad_token_id, CPU)
    loss_one, grads_one = _loss_and_grads(model, batch, chunk=10_000)
    loss_chunked, grads_chunked = _loss_and_grads(model, batch, chunk=5)
    torch.testing.assert_close(loss_chunked, loss_one)
    for name, grad in grads_one.items():
        torch.testing.assert_close(grads_chunked[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fused_lora_dropout_equals_dropout_then_linear():
    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 4, bias=False)
    lora_module = torch.nn.Module()
    lora_module.lora_A = torch.nn.ModuleDict({"default": linear})
    lora_module.lora_dropout = torch.nn.ModuleDict({"default": torch.nn.Dropout(0.25)})
    assert fuse_lora_dropout(lora_module) == 1
    x = torch.randn(3, 5, 24, requires_grad=True)

    torch.manual_seed(1)
    out = lora_module.lora_A["default"](lora_module.lora_dropout["default"](x))
    out.pow(2).sum().backward()
    grads = x.grad.clone(), linear.weight.grad.clone()
    x.grad, linear.weight.grad = None, None

    torch.manual_seed(1)
    keep = keep_mask(x.shape, 0.25)
    reference = torch.nn.functional.linear(x * keep / 0.75, linear.weight)
    reference.pow(2).sum().backward()
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(grads[0], x.grad)
    torch.testing.assert_close(grads[1], linear.weight.grad)
    assert abs(keep_mask(torch.Size([200_000]), 0.25).float().mean().item() - 0.75) < 0.005

    linear.eval()  # evaluation: no dropout at all
    torch.testing.assert_close(lora_module.lora_A["default"](x), torch.nn.functional.linear(x, linear.weight))


def test_auto_packing_and_grouping_resolve_per_device(tiny_recipe):
    cpu = resolve(tiny_recipe().train, CPU)
    assert cpu.packing is True and cpu.group_by_length is False  # packed rows have no padding to cut
    padded = resolve(tiny_recipe("train.packing=false").train, CPU)
    assert padded.packing is False and padded.group_by_length is True
    kept = resolve(tiny_recipe("train.packing=false", "train.group_by_length=false").train, CPU)
    assert kept.group_by_length is False
