"""Batched greedy generation for evaluation: KV cache, left padding, prompts sorted by length.

Prompts arrive as already-rendered text (see `honed.data.tokenize.render_prompt`), so evaluation sees
exactly what training and serving see. Sorting by length keeps each batch's padding small; results come
back in the caller's order.
"""

from __future__ import annotations

import torch


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy completions of `prompts`, decoded without special tokens, in input order."""
    from tqdm.auto import tqdm

    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with tqdm(total=len(prompts), desc=desc, unit="row", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            texts = _generate_batch(model, tokenizer, [encoded[i] for i in chosen], max_new_tokens, device)
            for i, text in zip(chosen, texts, strict=True):
                outputs[i] = text
            bar.update(len(chosen))
    model.train(was_training)
    return outputs


def _generate_batch(model, tokenizer, batch: list[list[int]], max_new_tokens: int, device) -> list[str]:
    """One left-padded batch through `model.generate` (greedy, cached), new tokens decoded."""
    pad_id = tokenizer.pad_token_id
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
