"""What a server serves: specs to one base, its adapters and one tokenizer with the trained template."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from honed.config.load import dump_recipe
from honed.data.tokenize import chat_template_digest
from honed.errors import ConfigError
from honed.models.load import load_model, load_tokenizer
from honed.models.tiny import build_tiny_model
from honed.serve.engine import BASE_ADAPTER
from honed.serve.models import load_served, parse_sources


def _fake_run(tiny_recipe, tiny_model_dir, folder, name: str, base=None, **lora) -> str:
    """A finished run directory made by hand: recipe.yaml, final/adapter (+ tokenizer), train.json."""
    run_dir = folder / name
    adapter = run_dir / "final" / "adapter"
    base = base or tiny_model_dir
    recipe = tiny_recipe(f"model.base={base}")
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
    model = load_model(base, torch.float32, torch.device("cpu"))
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, **lora)
    get_peft_model(model, config).save_pretrained(adapter)
    tokenizer = load_tokenizer(base)
    tokenizer.save_pretrained(adapter)
    (run_dir / "train.json").write_text(json.dumps({"chat_template_sha256": chat_template_digest(tokenizer)}))
    return str(run_dir)


def test_runs_on_one_base_share_it_and_the_base_is_served_too(tiny_recipe, tiny_model_dir, tmp_path):
    first = _fake_run(tiny_recipe, tiny_model_dir, tmp_path, "first")
    second = _fake_run(tiny_recipe, tiny_model_dir, tmp_path, "second")
    sources = parse_sources([first, f"named={second}"])
    assert [(s.name, s.kind) for s in sources] == [
        ("first", "adapter"),
        ("named", "adapter"),
        (tiny_model_dir.name, "base"),
    ]
    served = load_served(sources, torch.device("cpu"), torch.float32)
    assert served.adapter_ids == {"first": "adapter0", "named": "adapter1", tiny_model_dir.name: BASE_ADAPTER}


def test_a_changed_chat_template_is_refused(tiny_recipe, tiny_model_dir, tmp_path):
    run = _fake_run(tiny_recipe, tiny_model_dir, tmp_path, "run")
    train = tmp_path / "run" / "train.json"
    train.write_text(json.dumps({"chat_template_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="not the one the run trained with"):
        load_served(parse_sources([run]), torch.device("cpu"), torch.float32)


def test_what_cannot_share_a_server_is_refused(tiny_recipe, tiny_model_dir, tmp_path):
    other_base = build_tiny_model(tmp_path / "other-base", seed=1)
    run = _fake_run(tiny_recipe, tiny_model_dir, tmp_path, "run")
    elsewhere = _fake_run(tiny_recipe, tiny_model_dir, tmp_path, "elsewhere", base=other_base)
    with pytest.raises(ConfigError, match="different bases"):
        parse_sources([run, elsewhere])
    with pytest.raises(ConfigError, match="named 'x'"):
        parse_sources([f"x={run}", f"x={tiny_model_dir}"])
    dora = _fake_run(tiny_recipe, tiny_model_dir, tmp_path, "dora", use_dora=True)
    with pytest.raises(ConfigError, match="DoRA"):
        parse_sources([dora])
    with pytest.raises(ConfigError, match="at least one"):
        parse_sources([])
