"""Base zero-shot, base k-shot and tuned on the same rows; the forgetting probe; `honed compare`."""

from __future__ import annotations

import json

from honed.cli.main import main
from honed.data.dataset import EvalRow
from honed.evaluation.evaluate import draw_shots, with_shots
from honed.pipeline.finetune import finetune


def test_run_scores_base_few_shot_and_tuned_with_intervals(tiny_recipe):
    run_dir = finetune(tiny_recipe("eval.few_shot_k=2", "eval.forgetting_probe=true"), progress=False)
    for label in ("base", "few_shot", "tuned"):
        assert (run_dir / "eval" / label / "predictions.jsonl").is_file()
    base = [json.loads(x) for x in (run_dir / "eval/base/predictions.jsonl").read_text().splitlines()]
    tuned = [json.loads(x) for x in (run_dir / "eval/tuned/predictions.jsonl").read_text().splitlines()]
    assert [b["reference"] for b in base] == [t["reference"] for t in tuned]  # same rows
    summary = json.loads((run_dir / "summary.json").read_text())
    diff = summary["comparison"]["differences"]["tuned"]["slot_f1"]
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"]
    probe = summary["eval"]["probe"]
    assert set(probe["base"]) == {"general_text_perplexity", "chat_answer_perplexity"}
    assert probe["tuned"]["general_text_perplexity"] > 0
    assert {"comparison.json", "comparison.md", "comparison.html"} <= {p.name for p in run_dir.iterdir()}
    assert "Forgetting probe" in (run_dir / "comparison.md").read_text()
    assert "confidence intervals" in (run_dir / "report.html").read_text()


def test_shots_come_before_the_question_and_after_the_system_message(tiny_recipe):
    recipe = tiny_recipe("eval.few_shot_k=3", "eval.few_shot_seed=1")
    shots = draw_shots(recipe)
    assert len(shots) == 3 and draw_shots(recipe) == shots
    row = EvalRow("f:1", [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "A", None)
    prompt = with_shots([row], shots)[0].prompt
    assert prompt[0] == {"role": "system", "content": "S"} and prompt[-1] == {"role": "user", "content": "Q"}
    assert [m["role"] for m in prompt[1:-1]] == ["user", "assistant"] * 3
    assert prompt[2]["content"] == shots[0][-1]["content"]


def test_compare_cli_runs_and_models(tiny_recipe, tiny_model_dir, tmp_path, capsys):
    run_dir = finetune(tiny_recipe(), progress=False)
    out = tmp_path / "cmp"
    assert (
        main(["-q", "compare", f"{run_dir}:base", str(run_dir), "--out", str(out), "--resamples", "200"]) == 0
    )
    printed = capsys.readouterr().out
    assert "slot_f1" in printed and "tuned" in printed
    result = json.loads((out / "comparison.json").read_text())
    assert result["systems"] == [f"{run_dir.name}:base", f"{run_dir.name}:tuned"]

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text((run_dir / "recipe.yaml").read_text())
    out2 = tmp_path / "cmp2"
    code = main(
        ["-q", "compare", str(tiny_model_dir), str(run_dir), "--recipe", str(recipe_file), "--out", str(out2)]
    )
    assert code == 0
    assert (out2 / "comparison.html").read_text().count("<svg") >= 1  # charts are inline SVG
    # a model system scored zero-shot on the recipe's rows gives the same answers as the run's base
    model_rows = json.loads((out2 / "comparison.json").read_text())["metrics"][str(tiny_model_dir)]
    base_rows = json.loads((run_dir / "eval/base/metrics.json").read_text())
    assert model_rows["slot_f1"] == base_rows["slot_f1"]


def test_compare_needs_two_systems(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "at least two systems" in capsys.readouterr().err


def test_eval_overrides_rescore_and_are_recorded(tiny_recipe, capsys):
    run_dir = finetune(tiny_recipe("eval.max_rows=3"), progress=False)
    assert main(["-q", "eval", str(run_dir), "eval.few_shot_k=1", "eval.max_rows=2"]) == 0
    assert "few_shot" in capsys.readouterr().out
    recorded = (run_dir / "recipe.yaml").read_text()
    assert "few_shot_k: 1" in recorded and "max_rows: 2" in recorded
    assert len((run_dir / "eval/few_shot/predictions.jsonl").read_text().splitlines()) == 2
    assert main(["eval", str(run_dir), "train.lr=1"]) == 2
    assert "only changes eval.* settings" in capsys.readouterr().err
