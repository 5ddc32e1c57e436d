"""Hyperparameter search: the space is checked up front, trials stay inside it, pruning stops the trials
that trail, failures and Ctrl-C are recorded, a re-run resumes, and best.yaml is a recipe that trains.

Most searches run a fake `finetune` (a run directory and a validation loss computed from the trial's
values, in milliseconds); one runs the real loop on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from honed.config.load import load_recipe
from honed.errors import ConfigError, TrainingError
from honed.tuning import search as hpo

FAST = (
    "train.max_steps=4",
    "train.eval_every_steps=null",  # the demo recipe validates every 25 steps; tune-hp picks a cadence
    "eval.max_rows=2",
    "eval.base=false",
    "eval.max_new_tokens=4",
    "train.threads=1",
)


def _space(tiny_recipe, space: str, *overrides: str):
    return tiny_recipe(*FAST, f"tune.space={space}", *overrides)


def _trials(output: Path) -> list[dict]:
    return json.loads((output / "tune.json").read_text())["trials"]


@pytest.fixture
def fake_finetune(monkeypatch):
    """Replace the real run: validation losses fall with log10(lr) (higher lr, lower loss); lr above 0.5
    stops with a non-finite loss, as the real loop does. Returns the list of recipes it was given."""
    seen = []

    def finetune(recipe, progress=True, task_files=(), on_validation=None, **_):
        seen.append(recipe)
        run_dir = Path(recipe.output.runs_dir) / recipe.output.run_name
        run_dir.mkdir(parents=True)
        if recipe.train.lr > 0.5:
            raise TrainingError(f"loss became nan at step 1; lower train.lr (now {recipe.train.lr})")
        final = 2.0 - 0.1 * math.log10(recipe.train.lr) + 0.01 * recipe.lora.r
        losses = [final + 1.0 / step for step in range(1, 5)]
        for step, loss in enumerate(losses, start=1):
            if on_validation is not None:
                on_validation(step, loss)
        (run_dir / "train.json").write_text(json.dumps({"final_val_loss": losses[-1], "steps": 4}))
        return run_dir

    monkeypatch.setattr("honed.tuning.search.finetune", finetune)
    return seen


# --- the space -----------------------------------------------------------------------------------------


def test_unknown_keys_are_named_with_did_you_mean(tiny_recipe) -> None:
    recipe = _space(
        tiny_recipe, "{train.learning_rate: {low: 1e-5, high: 1e-3}, lora.rank: {choices: [4, 8]}}"
    )
    with pytest.raises(ConfigError) as found:
        hpo.validate_space(recipe)
    message = str(found.value)
    assert message.startswith("tune.space: 2 problems: ")
    assert "unknown key 'train.learning_rate' (did you mean 'train.lr'?)" in message
    assert "unknown key 'lora.rank' (did you mean 'lora.r'?)" in message


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            "{train.lr: {low: 1e-3, high: 1e-5}}",
            "tune.space.train.lr: low (0.001) must be below high (1e-05)",
        ),
        ("{train.lr: {low: 0, high: 1e-3, log: true}}", "log: true needs low above 0"),
        ("{lora.r: {choices: []}}", "tune.space.lora.r: choices must be a non-empty list"),
        ("{lora.r: {low: 4}}", "tune.space.lora.r: needs low and high"),
        ("{lora.r: {low: 4, high: 8, steps: 2}}", "unknown field(s) steps"),
        (
            "{lora.r: {low: 0, high: 8}}",
            "lora.r: Input should be greater than 0 (got 0)",
        ),
        ("{tune.seed: {choices: [1, 2]}}", "tune.space.tune.seed: tune.* cannot be searched"),
        ("{lora.r: 8}", "tune.space.lora.r: Input should be a valid dictionary (got 8)"),
    ],
)
def test_bad_ranges_are_refused(tiny_recipe, spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as found:
        hpo.validate_space(_space(tiny_recipe, spec))
    assert fragment in str(found.value)


def test_every_problem_is_reported_at_once(tiny_recipe) -> None:
    spec = "{train.lr: {low: 1e-3, high: 1e-5}, lora.r: {choices: []}, train.lr_warmup: {low: 0, high: 4}}"
    with pytest.raises(ConfigError) as found:
        hpo.validate_space(_space(tiny_recipe, spec))
    assert str(found.value).startswith("tune.space: 3 problems: ")
    assert "did you mean 'train.lr_warmup_steps'?" in str(found.value)


def test_empty_space_gives_a_copy_paste_example(tiny_recipe) -> None:
    with pytest.raises(ConfigError) as found:
        hpo.validate_space(tiny_recipe(*FAST))
    message = str(found.value)
    assert message.startswith("tune.space is empty")
    example = yaml.safe_load(message.split("e.g. ", 1)[1])
    pasted = _space(tiny_recipe, json.dumps(example["tune"]["space"]))
    assert list(hpo.validate_space(pasted)) == ["train.lr", "lora.r"]


def test_space_kinds(tiny_recipe) -> None:
    recipe = _space(
        tiny_recipe,
        "{train.lr: {low: 1e-5, high: 1e-3, log: true}, lora.r: {low: 4, high: 16, step: 4}, "
        "lora.dropout: {low: 0.0, high: 0.2}, train.lr_schedule: {choices: [cosine, constant]}}",
    )
    space = hpo.validate_space(recipe)
    assert space["train.lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert space["lora.r"] == optuna.distributions.IntDistribution(4, 16, step=4)
    assert space["lora.dropout"] == optuna.distributions.FloatDistribution(0.0, 0.2)
    assert space["train.lr_schedule"] == optuna.distributions.CategoricalDistribution(["cosine", "constant"])


def test_nested_space_from_an_override(tiny_recipe) -> None:
    """`tune.space.train.lr={...}` on the command line nests the key; it means the same dotted key."""
    recipe = tiny_recipe(*FAST, "tune.space.train.lr={low: 1e-5, high: 1e-3}")
    assert list(hpo.validate_space(recipe)) == ["train.lr"]


def test_recipe_without_validation_data_is_refused(tiny_recipe, tmp_path) -> None:
    recipe = _space(
        tiny_recipe, "{train.lr: {low: 1e-5, high: 1e-3}}", "data.validation=null", "eval.split=train"
    )
    with pytest.raises(ConfigError, match="held-out data but the recipe has none: set data.validation"):
        hpo.tune_hp(recipe, output=tmp_path / "tune")


def test_objective_direction(tiny_recipe) -> None:
    assert hpo.objective_metric(tiny_recipe()) == ("val_loss", "minimize")
    assert hpo.objective_metric(tiny_recipe("tune.objective=task")) == ("slot_f1", "maximize")
    perplexity = tiny_recipe("tune.objective=task", "eval.task=perplexity")
    assert hpo.objective_metric(perplexity) == ("perplexity", "minimize")


# --- pruning -------------------------------------------------------------------------------------------


class _FakeTrial:
    def __init__(self, prune_at: int | None) -> None:
        self.reported: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return self.reported[-1][1] == self.prune_at


def test_pruning_callback_reports_and_stops() -> None:
    trial = _FakeTrial(prune_at=2)
    callback = hpo.pruning_callback(trial)
    callback(1, 3.0)
    with pytest.raises(optuna.TrialPruned, match="validation loss 2.5000 at step 2"):
        callback(2, 2.5)
    assert trial.reported == [(3.0, 1), (2.5, 2)]


def test_pruning_callback_negates_when_maximising() -> None:
    trial = _FakeTrial(prune_at=None)
    hpo.pruning_callback(trial, "maximize")(1, 3.0)
    assert trial.reported == [(-3.0, 1)]


def test_worse_trials_are_pruned(tiny_recipe, tmp_path, fake_finetune) -> None:
    recipe = _space(tiny_recipe, "{train.lr: {choices: [1e-7, 1e-2]}}", "tune.seed=3")
    result = hpo.tune_hp(recipe, trials=8, output=tmp_path / "tune", progress=False)
    by_state = {s: [r for r in result.trials if r.state == s] for s in ("complete", "pruned")}
    assert by_state["pruned"], [(r.params, r.state) for r in result.trials]
    assert all(r.params["train.lr"] == 1e-7 for r in by_state["pruned"])
    assert result.best is not None and result.best.params["train.lr"] == 1e-2
    assert all(r.pruned_at_step == 1 for r in by_state["pruned"])
    # train.eval_every_steps was unset: each trial validated 4 times (every 4 // 4 steps)
    assert {r.train.eval_every_steps for r in fake_finetune} == {1}
    pruned_dir = Path(by_state["pruned"][0].run_dir)
    assert json.loads((pruned_dir / "trial.json").read_text())["state"] == "pruned"
    assert "pruned at step 1" in (tmp_path / "tune" / "tune.md").read_text()


def test_no_pruning_when_off(tiny_recipe, tmp_path, fake_finetune) -> None:
    recipe = _space(tiny_recipe, "{train.lr: {choices: [1e-7, 1e-2]}}", "tune.seed=3", "tune.prune=false")
    result = hpo.tune_hp(recipe, trials=6, output=tmp_path / "tune", progress=False)
    assert {r.state for r in result.trials} == {"complete"}
    assert {r.train.eval_every_steps for r in fake_finetune} == {None}


# --- failures, Ctrl-C, resume --------------------------------------------------------------------------


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny_recipe, tmp_path, fake_finetune) -> None:
    recipe = _space(tiny_recipe, "{train.lr: {choices: [0.9, 1e-3]}}", "tune.prune=false", "tune.seed=1")
    result = hpo.tune_hp(recipe, trials=5, output=tmp_path / "tune", progress=False)
    failed = [r for r in result.trials if r.state == "failed"]
    assert len(result.trials) == 5 and failed
    assert all(r.params["train.lr"] == 0.9 and "loss became nan" in r.error for r in failed)
    assert result.best is not None and result.best.params["train.lr"] == 1e-3
    assert "Failed trials:" in (tmp_path / "tune" / "tune.md").read_text()


def test_ctrl_c_stops_and_still_writes_the_table(tiny_recipe, tmp_path, fake_finetune, monkeypatch) -> None:
    import honed.tuning.search as search

    fake = search.finetune

    def interrupted_third(recipe, **kwargs):
        if len(fake_finetune) == 2:
            raise KeyboardInterrupt
        return fake(recipe, **kwargs)

    monkeypatch.setattr("honed.tuning.search.finetune", interrupted_third)
    recipe = _space(tiny_recipe, "{lora.r: {low: 2, high: 8}}", "tune.prune=false")
    output = tmp_path / "tune"
    result = hpo.tune_hp(recipe, trials=4, output=output, progress=False)
    assert result.interrupted
    assert [r["state"] for r in _trials(output)] == ["complete", "complete", "failed"]
    assert "interrupted" in _trials(output)[2]["error"]
    assert (output / "best.yaml").is_file()
    # resuming: the interrupted trial does not count towards the budget of 4
    monkeypatch.setattr("honed.tuning.search.finetune", fake)
    resumed = hpo.tune_hp(recipe, trials=4, output=output, progress=False)
    assert not resumed.interrupted
    assert [r.state for r in resumed.trials] == ["complete", "complete", "failed", "complete", "complete"]


def test_rerun_with_the_same_output_resumes(tiny_recipe, tmp_path, fake_finetune) -> None:
    recipe = _space(tiny_recipe, "{train.lr: {low: 1e-5, high: 1e-2, log: true}}", "tune.prune=false")
    output = tmp_path / "tune"
    first = hpo.tune_hp(recipe, trials=2, output=output, progress=False)
    again = hpo.tune_hp(recipe, trials=2, output=output, progress=False)  # budget met: nothing new
    grown = hpo.tune_hp(recipe, trials=4, output=output, progress=False)
    assert [len(r.trials) for r in (first, again, grown)] == [2, 2, 4]
    assert len(fake_finetune) == 4
    assert [r.params for r in grown.trials[:2]] == [r.params for r in first.trials]
    values = [r.params["train.lr"] for r in grown.trials]
    assert len(set(values)) == 4  # the resumed sampler does not replay the first proposals
    assert sorted(p.name for p in output.glob("trial-*")) == [f"trial-00{i}" for i in range(4)]


def test_resume_refuses_another_objective(tiny_recipe, tmp_path, fake_finetune) -> None:
    recipe = _space(tiny_recipe, "{lora.r: {low: 2, high: 8}}")
    hpo.tune_hp(recipe, trials=1, output=tmp_path / "tune", progress=False)
    other = _space(tiny_recipe, "{lora.r: {low: 2, high: 8}}", "tune.objective=task")
    with pytest.raises(ConfigError, match="holds a study optimising val_loss, not slot_f1"):
        hpo.tune_hp(other, trials=2, output=tmp_path / "tune", progress=False)


def test_same_seed_same_proposals(tiny_recipe, tmp_path, fake_finetune) -> None:
    recipe = _space(tiny_recipe, "{train.lr: {low: 1e-5, high: 1e-2, log: true}, lora.r: {low: 2, high: 8}}")
    runs = [hpo.tune_hp(recipe, trials=3, output=tmp_path / name, progress=False) for name in ("a", "b")]
    assert [r.params for r in runs[0].trials] == [r.params for r in runs[1].trials]


# --- the real loop -------------------------------------------------------------------------------------


def test_three_trials_on_the_tiny_model(tiny_recipe, tmp_path) -> None:
    recipe = _space(
        tiny_recipe, "{train.lr: {low: 1e-4, high: 1e-2, log: true}, lora.alpha: {choices: [8, 32]}}"
    )
    output = tmp_path / "tune"
    result = hpo.tune_hp(recipe, trials=3, output=output, progress=False)
    assert {p.name for p in output.iterdir()} >= {"tune.json", "tune.md", "best.yaml", "study.db"}
    trials = _trials(output)
    assert len(trials) == 3
    for trial in trials:
        assert 1e-4 <= trial["params"]["train.lr"] <= 1e-2
        assert trial["params"]["lora.alpha"] in (8, 32)
        run_dir = Path(trial["run_dir"])
        assert run_dir.parent == output and (run_dir / "recipe.yaml").is_file()
        if trial["state"] == "complete":
            expected = json.loads((run_dir / "train.json").read_text())["final_val_loss"]
            assert trial["value"] == pytest.approx(expected)
    assert result.best is not None and result.best.state == "complete"
    best = load_recipe(output / "best.yaml")
    assert best.train.lr == pytest.approx(result.best.params["train.lr"])
    assert best.lora.alpha == result.best.params["lora.alpha"]
    assert best.output == recipe.output  # the trials' folders are not baked into the recipe
    table = (output / "tune.md").read_text()
    assert "| trial | train.lr | lora.alpha | val_loss | state | wall_s |" in table


def test_shipped_tune_recipe_space_validates() -> None:
    recipe = load_recipe(Path(__file__).resolve().parents[3] / "recipes" / "viggo-tune.yaml")
    space = hpo.validate_space(recipe)
    assert list(space) == ["train.lr", "lora.r", "lora.alpha", "train.lr_warmup_steps"]
    assert recipe.tune.prune and recipe.train.eval_every_steps  # pruning has losses to compare
