"""The completion-only loss equals transformers' own loss, computed only where labels are."""

from __future__ import annotations

import torch

from honed.data.tokenize import encode_example
from honed.models.load import load_model
from honed.models.nll import collate, completion_loss


def test_completion_loss_matches_transformers(tiny_model_dir, tiny_tokenizer):
    model = load_model(tiny_model_dir, torch.float32, torch.device("cpu"))
    examples = [
        encode_example(
            tiny_tokenizer,
            [
                {"role": "user", "content": "two lattes"},
                {"role": "assistant", "content": "order(quantity[2])"},
            ],
        ),
        encode_example(
            tiny_tokenizer,
            [
                {"role": "user", "content": "cancel 1234 please, thanks"},
                {"role": "assistant", "content": "cancel(order_id[1234])"},
            ],
        ),
    ]
    batch = collate(examples, tiny_tokenizer.pad_token_id, torch.device("cpu"))
    loss_sum, count = completion_loss(model, batch)
    reference = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss
    assert count == sum(e.num_labels for e in examples)
    torch.testing.assert_close(loss_sum / count, reference, rtol=1e-5, atol=1e-6)
