"""Shared fixtures: a tiny random model folder, demo data, and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim random Llama with a byte-level tokenizer and ChatML template (safetensors)."""
    from honed.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from honed.models.load import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo dataset, small."""
    from honed.demo.data import write_demo_data

    folder = tmp_path_factory.mktemp("demo-data")
    write_demo_data(folder, n_train=48, n_validation=8)
    return folder


@pytest.fixture
def tiny_recipe(tiny_model_dir, demo_dir, tmp_path):
    """A recipe factory: the demo task on the tiny model, writing runs under tmp_path."""
    from honed.config.load import load_recipe
    from honed.demo.data import demo_recipe_dict

    def make(*overrides: str):
        base = [
            f"model.base={tiny_model_dir}",
            f"output.runs_dir={tmp_path / 'runs'}",
            "data.max_seq_len=1024",
            "train.max_steps=4",
            "eval.max_rows=4",
            "eval.max_new_tokens=4",
            "train.threads=2",
        ]
        return load_recipe(base=demo_recipe_dict(demo_dir), overrides=[*base, *overrides])

    return make


@pytest.fixture(scope="session")
def make_tiny_run(tiny_model_dir, demo_dir, tmp_path_factory):
    """A factory of finished tiny demo runs, for tests that only read a run (serve, export, feedback):
    `make_tiny_run("old", "train.lr=1e-2")` trains, scores and returns runs/<name> in its own folder."""
    from honed.config.load import load_recipe
    from honed.demo.data import demo_recipe_dict
    from honed.pipeline.finetune import finetune

    def make(name: str, *overrides: str) -> Path:
        base = [
            f"model.base={tiny_model_dir}",
            f"output.runs_dir={tmp_path_factory.mktemp('runs')}",
            f"output.run_name={name}",
            "data.max_seq_len=1024",
            "train.threads=2",
            "eval.base=false",
            "eval.max_rows=4",
            "eval.max_new_tokens=4",
        ]
        recipe = load_recipe(base=demo_recipe_dict(demo_dir), overrides=[*base, *overrides])
        return finetune(recipe, progress=False)

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"{SHARED_DATA} is absent: the real datasets live in ../shared/data beside the repository"
        )
    return SHARED_DATA
