"""Batched generation (honed) vs one-row-at-a-time `model.generate` (the usual eval loop), in one run.

Same model (the embedded SmolLM2-135M-Instruct), same rendered prompts (honed's own demo task), greedy,
same max_new_tokens, same thread count. Both produce the same answers (the match rate is printed), so the
generated token counts are the same and tokens/s compare like for like.

    python bench/generation.py --quick      # 48 prompts, about a minute or two on 2 CPU cores
    python bench/generation.py              # 160 prompts

The last line is `speedup=<honed tokens/s / one-at-a-time tokens/s>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer prompts: a run of a minute or two.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from honed.config.load import load_recipe
    from honed.data.dataset import load_eval_rows
    from honed.data.tokenize import render_prompt
    from honed.demo.data import demo_recipe_dict, write_demo_data
    from honed.models.decoding import generate
    from honed.models.load import EMBEDDED, load_model, load_tokenizer, resolve_base

    hf_logging.disable_progress_bar()
    count = 48 if args.quick else 160
    folder = Path(tempfile.mkdtemp(prefix="honed-bench-"))
    write_demo_data(folder, n_train=10, n_validation=count)
    recipe = load_recipe(base=demo_recipe_dict(folder), overrides=[f"eval.max_rows={count}"])
    model_dir = resolve_base(EMBEDDED).folder
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, torch.float32, torch.device("cpu")).eval()
    # The base model answers in free text, so most rows run to max_new_tokens: a fair, busy workload.
    prompts = [render_prompt(tokenizer, row.prompt) for row in load_eval_rows(recipe)]

    start = time.perf_counter()
    baseline, tokens = [], 0
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
            out = model.generate(
                input_ids=ids,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[0, ids.shape[1] :]
            tokens += int((new != tokenizer.eos_token_id).sum())
            baseline.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    one_at_a_time_s = time.perf_counter() - start

    start = time.perf_counter()
    batched = generate(model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size)
    honed_s = time.perf_counter() - start

    match = sum(a == b for a, b in zip(baseline, batched, strict=True)) / len(prompts)
    base_tps, honed_tps = tokens / one_at_a_time_s, tokens / honed_s
    print(
        f"prompts={len(prompts)} generated_tokens={tokens} threads={torch.get_num_threads()} "
        f"batch_size={args.batch_size} max_new_tokens={args.max_new_tokens}"
    )
    print(f"one_at_a_time: {one_at_a_time_s:.1f} s, {base_tps:.1f} tokens/s")
    print(f"honed batched: {honed_s:.1f} s, {honed_tps:.1f} tokens/s")
    print(f"identical outputs: {match:.1%}")
    print(f"speedup={honed_tps / base_tps:.2f}")


if __name__ == "__main__":
    main()
