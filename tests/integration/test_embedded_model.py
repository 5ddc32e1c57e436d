"""The demo path on the real embedded SmolLM2-135M-Instruct, shortened to a few steps (slow, runs in CI)."""

from __future__ import annotations

import json

import pytest

from honed.demo.run import run_demo


@pytest.mark.slow
def test_demo_path_trains_the_embedded_model(tmp_path):
    run_dir = run_demo(
        tmp_path,
        ["train.max_steps=6", "eval.max_rows=4", "eval.max_new_tokens=24", "train.threads=2"],
        progress=False,
    )
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < losses[0]  # a real pretrained model learns the format within a few steps
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval"]["rows"] == 4
    assert set(summary["eval"]["base"]) >= {"act_accuracy", "slot_f1"}
    assert (run_dir / "final" / "adapter" / "adapter_model.safetensors").is_file()
    assert "<svg" in (run_dir / "report.html").read_text()
