"""LoRA fine-tuning speed and memory: honed vs TRL SFTTrainer + PEFT, same model, data and settings, one run.

Both train the embedded SmolLM2-135M-Instruct on the same ViGGO training rows from ../shared/data, tokenized
once by honed (TRL receives the token ids and the completion mask, so both see exactly the same tokens and
train on exactly the same ones). Same LoRA (r, alpha, dropout, all linear layers), same effective batch (8
examples per optimizer step), same learning rate and cosine schedule (no warmup), same number of steps, and so
the same examples seen (each row exactly once). Each tool runs in a fresh process so peak RSS is its own;
TRL runs with its own defaults for everything the comparison does not fix (gradient checkpointing on,
no packing), as a user would run it. honed runs with its defaults (packing on), with micro-batches of
`--honed-micro-batch` examples accumulated to the same 8 per step.

After training, each process computes the validation loss (mean NLL of the answer tokens of the same
validation rows, model in eval mode) with the same function, so the numbers compare like for like.

    pip install -r bench/requirements.txt      # TRL, pinned; not part of honed's install
    python bench/train_vs_trl.py --quick       # 48 rows (6 steps): a few minutes on 2 CPU cores
    python bench/train_vs_trl.py               # 320 rows (40 steps): the full comparison

Reported for each: real (non-padding) tokens per second, training wall time, peak resident memory,
validation loss, and model FLOPs utilisation (MFU) against this machine's measured fp32 matmul peak. The
last line is `speedup=<honed/trl real tokens/s> memory_ratio=<honed/trl peak RSS> val_loss_delta=<honed-trl>`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "viggo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="48 training rows: a run of a few minutes.")
    parser.add_argument(
        "--rows", type=int, help="Training rows (a multiple of 8); default 48 quick, 320 full."
    )
    parser.add_argument(
        "--val-rows", type=int, help="Validation rows for the loss; default 32 quick, 100 full."
    )
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--honed-micro-batch", type=int, default=2, help="honed examples per packed row.")
    parser.add_argument("--only", choices=["honed", "trl"], help="Run one side only (no summary line).")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    parser.add_argument("--worker", choices=["honed", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 there).")
    parser.add_argument(
        "--data", type=Path, help="Folder with ViGGO train/validation.jsonl (default ../shared)."
    )
    parser.add_argument("--model", help="Base model folder (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="Seeded random weights from --model's config (for a machine that lacks the weights).",
    )
    args = parser.parse_args()
    args.rows = args.rows or (48 if args.quick else 320)
    args.val_rows = args.val_rows or (32 if args.quick else 100)
    if args.rows % 8:
        parser.error("--rows must be a multiple of 8 (the effective batch)")
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return

    peak = matmul_peak_gflops(args.device)
    print(
        f"fp32 matmul peak on this machine: {peak:.1f} GFLOP/s"
        if args.device == "cpu"
        else f"peak {peak:.0f}"
    )
    results = {}
    for tool in [args.only] if args.only else ["trl", "honed"]:
        results[tool] = spawn(tool, args)
        results[tool]["mfu"] = results[tool]["model_gflop"] / results[tool]["train_s"] / peak
        print(describe(tool, results[tool]), flush=True)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "peak_gflops": peak,
                    "args": {
                        k: v if isinstance(v, (int, float, bool)) or v is None else str(v)
                        for k, v in vars(args).items()
                    },
                    **results,
                },
                indent=2,
            )
        )
    if not args.only:
        print(summary_line(results["honed"], results["trl"]))


def summary_line(honed: dict, trl: dict) -> str:
    """The bench's last line: honed relative to TRL."""
    return (
        f"speedup={honed['tokens_per_s'] / trl['tokens_per_s']:.2f} "
        f"memory_ratio={honed['peak_rss_mb'] / trl['peak_rss_mb']:.2f} "
        f"val_loss_delta={honed['val_loss'] - trl['val_loss']:+.4f}"
    )


def spawn(tool: str, args) -> dict:
    """Run one tool in a fresh Python process (so its peak RSS is its own) and read its result line."""
    command = [sys.executable, __file__, "--worker", tool, "--device", args.device, "--lr", str(args.lr)]
    command += ["--rows", str(args.rows), "--val-rows", str(args.val_rows)]
    command += ["--honed-micro-batch", str(args.honed_micro_batch)]
    command += ["--data", str(args.data)] if args.data else []
    command += ["--model", args.model] if args.model else []
    command += ["--random-weights"] if args.random_weights else []
    print(f"--- {tool}: training on {args.rows} rows ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{tool} worker failed (exit {done.returncode})")
    return json.loads(lines[-1].removeprefix("RESULT "))


def describe(tool: str, r: dict) -> str:
    return (
        f"{tool:>5}: {r['tokens_per_s']:7.1f} real tokens/s  train {r['train_s']:7.1f} s  "
        f"peak RSS {r['peak_rss_mb']:7.0f} MB  val loss {r['val_loss']:.4f}  MFU {100 * r['mfu']:.1f}%  "
        f"({r['real_tokens']} real tokens, {r['steps']} steps)"
    )


def matmul_peak_gflops(device: str) -> float:
    """Best fp32 (bf16 on CUDA) matmul throughput over a few shapes, this model's among them."""
    from honed.sizing.calibrate import matmul_peak_flops

    return matmul_peak_flops(device) / 1e9


# ----------------------------------------------------------------------------------------------- workers


def run_worker(args) -> dict:
    import torch

    from honed.config.load import load_recipe
    from honed.data.dataset import build_examples
    from honed.models.load import load_model, load_tokenizer, resolve_base

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    steps = args.rows // 8
    recipe = load_recipe(
        RECIPE,
        [
            f"data.max_train_rows={args.rows}",
            f"data.max_validation_rows={args.val_rows}",
            f"train.max_steps={steps}",
            f"train.batch_size={args.honed_micro_batch}",
            f"train.grad_accum_steps={8 // args.honed_micro_batch}",
            f"train.lr={args.lr}",
            # No warmup: transformers' warmup starts at lr 0 and honed's at lr/warmup, so with warmup the
            # two schedules would differ by a step; without it both are the same cosine from `lr`.
            "train.lr_warmup_steps=0",
            "train.log_every_steps=1000",
            f"train.device={args.device}",
            *_location_overrides(args),
        ],
    )
    folder = Path(args.model) if args.model else resolve_base(recipe.model.base).folder
    tokenizer = load_tokenizer(folder)
    train, _ = build_examples(recipe.data, tokenizer, "train")
    validation, _ = build_examples(recipe.data, tokenizer, "validation")
    if args.random_weights:
        from transformers import AutoConfig, AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype).to(device)
    else:
        model = load_model(folder, dtype, device)
    if args.worker == "honed":
        model, train_s = _train_honed(model, tokenizer, train, recipe)
    else:
        model, train_s = _train_trl(model, tokenizer, train, recipe, folder, steps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    real_tokens = sum(len(e.input_ids) for e in train)
    return {
        "tool": args.worker,
        "steps": steps,
        "real_tokens": real_tokens,
        "train_s": train_s,
        "tokens_per_s": real_tokens / train_s,
        "peak_rss_mb": peak_mb,
        "val_loss": _validation_loss(model, tokenizer, validation, device),
        "model_gflop": _model_flops(model, train) / 1e9,
        "versions": _versions(),
    }


def _location_overrides(args) -> list[str]:
    found = [f"model.base={Path(args.model).resolve()}"] if args.model else []
    if args.data:
        found += [f"data.{split}={args.data.resolve() / split}.jsonl" for split in ("train", "validation")]
    return found


def _train_honed(model, tokenizer, train, recipe):
    from honed.pipeline.finetune import train_model

    run_dir = Path(tempfile.mkdtemp(prefix="honed-bench-"))
    model, result = train_model(model, tokenizer, train, None, recipe, run_dir, progress=False)
    return model, result.wall_s


def _train_trl(model, tokenizer, train, recipe, folder, steps):
    """TRL SFTTrainer + PEFT LoRA with TRL's defaults, fed honed's token ids and completion masks."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from honed.data.tokenize import IGNORE

    dataset = Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in train],
            "completion_mask": [[int(label != IGNORE) for label in e.labels] for e in train],
        }
    )
    cfg = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=recipe.train.lr,
        lr_scheduler_type="cosine",
        warmup_steps=recipe.train.lr_warmup_steps,
        max_steps=steps,
        max_grad_norm=recipe.train.max_grad_norm,
        weight_decay=recipe.train.weight_decay,
        max_length=recipe.data.max_seq_len,
        completion_only_loss=True,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        use_cpu=recipe.train.device == "cpu",
        bf16=recipe.train.device != "cpu",
        seed=recipe.train.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=recipe.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )
    start = time.perf_counter()
    trainer.train()
    return trainer.model, time.perf_counter() - start


def _validation_loss(model, tokenizer, validation, device) -> float:
    """Mean NLL of the answer tokens of the validation rows: the same function for both tools."""
    import functools

    from honed.models.nll import collate, completion_loss
    from honed.training.loop import evaluate_loss

    batcher = functools.partial(collate, pad_id=tokenizer.pad_token_id, device=device)
    return evaluate_loss(model, validation, completion_loss, batcher, batch_size=8)


def _model_flops(model, train) -> float:
    """FLOPs the training math needs, counted once (no recomputation, no padding), the same for both tools.

    Per real token: forward 2 x frozen body weights, input gradients another 2 x, and 6 x the trainable
    LoRA weights; causal attention 12 x layers x hidden x (length / 2) (forward scores and values, twice that
    backward); the output projection only where a label is (4 x vocab x hidden per labelled token: forward
    and input gradient; the head is frozen under LoRA).
    """
    from honed.models.nll import causal_lm

    lm = causal_lm(model)
    cfg = lm.config
    head = lm.get_output_embeddings().weight.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen_body = sum(p.numel() for p in model.parameters() if not p.requires_grad) - head
    if not cfg.tie_word_embeddings:
        frozen_body -= lm.get_input_embeddings().weight.numel()
    per_token = 4 * frozen_body + 6 * trainable
    flops = 0.0
    for example in train:
        n = len(example.input_ids)
        labelled = sum(label != -100 for label in example.labels)
        flops += (
            n * per_token + 12 * cfg.num_hidden_layers * cfg.hidden_size * n * n / 2 + 4 * head * labelled
        )
    return flops


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "honed"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    main()
