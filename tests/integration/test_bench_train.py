"""bench/train_vs_trl.py keeps working: its honed side runs on real ViGGO rows. (TRL is a bench-only
dependency, not installed by `make test`; its side is exercised by running the bench itself.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_vs_trl.py"


@pytest.mark.slow
def test_honed_side_of_the_training_bench(shared_data, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "8", "--val-rows", "8", "--out", str(out), "--only", "honed"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    honed = result["honed"]
    assert honed["steps"] == 1 and honed["real_tokens"] > 1000
    assert honed["tokens_per_s"] > 0 and 0 < honed["mfu"] < 1
    assert 0 < honed["val_loss"] < 5  # a pretrained model on ViGGO answers: not a random-init loss


def test_summary_line_has_the_agreed_form():
    spec = importlib.util.spec_from_file_location("train_vs_trl", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    honed = {"tokens_per_s": 130.0, "peak_rss_mb": 3000.0, "val_loss": 0.50}
    trl = {"tokens_per_s": 43.0, "peak_rss_mb": 6000.0, "val_loss": 0.52}
    assert bench.summary_line(honed, trl) == "speedup=3.02 memory_ratio=0.50 val_loss_delta=-0.0200"
