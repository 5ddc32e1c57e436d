"""Tests for honed.evaluation.compare: paired bootstrap, alignment, slices, regressions, renderings."""

import json
import random

import numpy as np
import pytest

from honed.errors import ConfigError, DataError
from honed.evaluation import compare
from honed.evaluation.compare import System, compare_systems, paired_bootstrap
from honed.evaluation.compare_render import render_html, render_markdown, write_comparison
from honed.evaluation.tasks import ExactMatchTask, StructuredTask

EXACT = ExactMatchTask()
STRUCTURED = StructuredTask()


def exact_scores(right: int, rows: int = 100) -> list[dict]:
    """Per-row exact-match scores, right on the first `right` rows."""
    return [EXACT.score("yes" if i < right else "no", "yes") for i in range(rows)]


def structured_scores(rows: int, seed: int) -> list[dict]:
    """Structured scores of noisy predictions, so micro slot-F1 differs from the mean of per-row F1."""
    rng = random.Random(seed)
    scores = []
    for _ in range(rows):
        reference = f"inform(name[g{rng.randint(0, 3)}], rating[good], genres[a, b], player_perspective[x])"
        prediction = rng.choice(
            [reference, "inform(name[g0])", "request(name[g1], rating[poor])", "nonsense", reference[:30]]
        )
        scores.append(STRUCTURED.score(prediction, reference))
    return scores


def system(label: str, answers: list[str], slices=None, order=None) -> System:
    """A System over references "r0".."rN", answering `answers[i]` on row i, rows listed in `order`."""
    rows = []
    for i in order if order is not None else range(len(answers)):
        rows.append(
            {
                "index": i,
                "location": f"eval.jsonl:{i + 1}",
                "prompt": f"question {i}",
                "reference": f"r{i}",
                "prediction": answers[i],
                "slice": slices[i] if slices else None,
                "score": EXACT.score(answers[i], f"r{i}"),
            }
        )
    return System(label, rows)


def test_identical_systems_have_zero_delta_and_are_not_significant():
    scores = exact_scores(60)
    diff = paired_bootstrap(EXACT, scores, list(scores), resamples=500)["exact_match"]
    assert diff["delta"] == 0.0
    assert diff["ci_low"] <= 0.0 <= diff["ci_high"]
    assert diff["p_value"] == 1.0
    assert diff["significant"] is False


def test_large_difference_is_significant_with_ci_far_from_zero():
    diff = paired_bootstrap(EXACT, exact_scores(10), exact_scores(90))["exact_match"]
    assert diff["a"] == pytest.approx(0.1) and diff["b"] == pytest.approx(0.9)
    assert diff["delta"] == pytest.approx(0.8)
    assert diff["ci_low"] > 0.6 and diff["ci_high"] < 1.0
    assert diff["significant"] is True and diff["p_value"] < 0.01


def test_one_row_difference_is_not_significant():
    diff = paired_bootstrap(EXACT, exact_scores(50), exact_scores(51))["exact_match"]
    assert diff["delta"] == pytest.approx(0.01)
    assert diff["ci_low"] <= 0.0 <= diff["ci_high"]
    assert diff["significant"] is False and diff["p_value"] > 0.05


def test_bootstrap_is_deterministic_for_a_seed():
    a, b = structured_scores(80, seed=1), structured_scores(80, seed=2)
    first = paired_bootstrap(STRUCTURED, a, b, resamples=200, seed=7)
    assert paired_bootstrap(STRUCTURED, a, b, resamples=200, seed=7) == first
    assert paired_bootstrap(STRUCTURED, a, b, resamples=200, seed=8) != first


def test_lengths_must_match():
    with pytest.raises(ConfigError, match="same rows"):
        paired_bootstrap(EXACT, exact_scores(1, rows=3), exact_scores(1, rows=4))


def slow_reference(task, a, b, resamples, seed, confidence=0.95):
    """The textbook paired bootstrap: one aggregate call per resample and system, plain Python."""
    names = [k for k in task.aggregate(a) if k != "rows"]
    deltas = {name: [] for name in names}
    for chunk in compare._index_chunks(len(a), resamples, seed):
        for indices in chunk:
            agg_a = task.aggregate([a[i] for i in indices])
            agg_b = task.aggregate([b[i] for i in indices])
            for name in names:
                deltas[name].append(agg_b[name] - agg_a[name])
    tail = (1 - confidence) / 2 * 100
    return {name: np.percentile(values, [tail, 100 - tail]) for name, values in deltas.items()}


def test_micro_slot_f1_ci_matches_a_slow_reference():
    a, b = structured_scores(40, seed=3), structured_scores(40, seed=4)
    mean_f1 = np.mean([s["slot_f1"] for s in a])
    assert STRUCTURED.aggregate(a)["slot_f1"] != pytest.approx(mean_f1)  # micro != mean of rows
    fast = paired_bootstrap(STRUCTURED, a, b, resamples=300, seed=5)
    expected = slow_reference(STRUCTURED, a, b, resamples=300, seed=5)
    for name, (low, high) in expected.items():
        assert fast[name]["ci_low"] == pytest.approx(low, abs=1e-9), name
        assert fast[name]["ci_high"] == pytest.approx(high, abs=1e-9), name


def test_fast_path_equals_generic_loop():
    scores = structured_scores(50, seed=6)
    names = compare._metric_names(STRUCTURED.aggregate(scores))
    fast = compare._bootstrap(STRUCTURED, scores, names, 100, 0)
    generic = compare._resample_generic(STRUCTURED, scores, names, 100, 0)
    for name in names:
        np.testing.assert_allclose(fast[name], generic[name], atol=1e-12)


def test_a_task_without_a_fast_path_uses_the_generic_loop():
    class MedianTask:  # not a function of column sums, and not in the table
        name, primary_metric = "median", "median"

        def score(self, prediction, reference, fields=None):
            return {"value": float(prediction)}

        def aggregate(self, scores):
            return {"median": float(np.median([s["value"] for s in scores])), "rows": len(scores)}

    a = [{"value": float(v)} for v in range(20)]
    b = [{"value": float(v) + 5} for v in range(20)]
    diff = paired_bootstrap(MedianTask(), a, b, resamples=200)["median"]
    assert diff["delta"] == 5.0 and diff["ci_low"] == diff["ci_high"] == 5.0


def test_a_wrong_aggregate_sums_hook_falls_back_to_aggregate(caplog):
    class WrongHook(ExactMatchTask):
        def aggregate_sums(self, sums, rows):
            return {"exact_match": sums["exact_match"] * 0.0}

    a, b = exact_scores(10, rows=40), exact_scores(30, rows=40)
    diff = paired_bootstrap(WrongHook(), a, b, resamples=200)["exact_match"]
    assert diff == paired_bootstrap(EXACT, a, b, resamples=200)["exact_match"]
    assert "disagrees with aggregate" in caplog.text


def test_systems_are_aligned_by_index_whatever_their_order():
    answers_a = [f"r{i}" if i % 2 else "x" for i in range(12)]
    answers_b = [f"r{i}" for i in range(12)]
    shuffled = list(range(12))
    random.Random(0).shuffle(shuffled)
    in_order = compare_systems(EXACT, [system("A", answers_a), system("B", answers_b)], resamples=200)
    mixed = compare_systems(
        EXACT, [system("A", answers_a), system("B", answers_b, order=shuffled)], resamples=200
    )
    assert mixed["differences"] == in_order["differences"]
    assert mixed["improvements_count"] == {"B": 6} and mixed["regressions_count"] == {"B": 0}


def test_only_shared_rows_are_compared_and_disjoint_systems_fail():
    answers = [f"r{i}" for i in range(10)]
    result = compare_systems(EXACT, [system("A", answers), system("B", answers, order=range(4, 10))])
    assert result["rows"] == 6
    with pytest.raises(DataError, match="share no row index"):
        compare_systems(
            EXACT, [system("A", answers, order=range(5)), system("B", answers, order=range(5, 10))]
        )
    with pytest.raises(ConfigError, match="distinct labels"):
        compare_systems(EXACT, [system("A", answers), system("A", answers)])


def test_metrics_by_slice_and_regressions():
    slices = ["easy"] * 4 + ["hard"] * 6
    a = [f"r{i}" for i in range(10)]  # right everywhere
    b = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "wrong", "bad", "r9"]  # wrong on hard rows 7 and 8
    c = ["no"] * 10
    systems = [system("base", a, slices), system("tuned", b, slices), system("other", c, slices)]
    result = compare_systems(EXACT, systems, resamples=200)
    assert result["systems"] == ["base", "tuned", "other"]
    assert result["metrics"]["tuned"]["exact_match"] == pytest.approx(0.8)
    assert set(result["differences"]) == {"tuned", "other"}
    assert result["by_slice"] == {
        "easy": {
            label: {"exact_match": v, "rows": 4}
            for label, v in (("base", 1.0), ("tuned", 1.0), ("other", 0.0))
        },
        "hard": {
            label: {"exact_match": pytest.approx(v), "rows": 6}
            for label, v in (("base", 1.0), ("tuned", 4 / 6), ("other", 0.0))
        },
    }
    regressions = result["regressions"]["tuned"]
    assert [r["index"] for r in regressions] == [7, 8]
    assert regressions[0] == {
        "index": 7,
        "prompt": "question 7",
        "reference": "r7",
        "a_prediction": "r7",
        "b_prediction": "wrong",
        "a_score": 1.0,
        "b_score": 0.0,
    }
    assert result["regressions_count"] == {"tuned": 2, "other": 10}
    assert len(result["regressions"]["other"]) == 10
    assert "by_slice" not in compare_systems(EXACT, systems, slice_field=False, resamples=50)


def pipe_result():
    """A two-system comparison whose prompts and predictions hold `|`, newlines and HTML."""
    answers_a = [f"r{i}" for i in range(30)]
    answers_b = [f"r{i}" if i >= 3 else "a | b\n<script>alert(1)</script>" for i in range(30)]
    slices = ["s<1>" if i % 2 else "s|2" for i in range(30)]
    return compare_systems(
        EXACT, [system("base", answers_a, slices), system("tuned <b>", answers_b, slices)], resamples=200
    )


def test_markdown_has_the_metric_table_and_escapes_cells():
    markdown = render_markdown(pipe_result())
    assert "| exact_match (primary) | 1.0000 | 0.9000 | -0.1000 [" in markdown
    assert "## By slice" in markdown and "| s\\|2 | 15 |" in markdown
    assert "a \\| b<br>&lt;script&gt;" in markdown and "<script" not in markdown
    assert "| metric | base | tuned &lt;b&gt; |" in markdown
    for line in markdown.splitlines():
        if line.startswith("| 0 |"):  # the regression row: 7 cells, so 8 unescaped pipes
            assert line.replace("\\|", "").count("|") == 8


def test_html_is_self_contained_and_escaped():
    page = render_html(pipe_result())
    assert page.count("<svg") == 2  # primary metric and by slice, drawn as inline SVG
    assert 'aria-label="primary metric"' in page and "<img" not in page and "data:" not in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "tuned &lt;b&gt;" in page and "tuned <b>" not in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert "<link" not in page


def test_write_comparison_writes_three_files(tmp_path):
    result = compare_systems(EXACT, [system("A", ["r0", "x"]), system("B", ["r0", "r1"])], resamples=50)
    paths = write_comparison(result, tmp_path / "cmp")
    assert {p.name for p in paths.values()} == {"comparison.json", "comparison.md", "comparison.html"}
    assert json.loads(paths["json"].read_text()) == result
    assert paths["md"].read_text().startswith("# Comparison: exact_match")
    assert "<svg" in paths["html"].read_text()


def test_lower_is_better_rows_count_a_drop_as_an_improvement():
    """Perplexity: per row the score is nll_per_token, and a tuned model that lowers it everywhere has
    no regressions (it once listed every row as one, the per-row key being read as higher-is-better)."""
    from honed.evaluation.likelihood import PerplexityTask

    task = PerplexityTask()

    def rows(per_token: list[float]) -> list[dict]:
        return [
            {
                "index": i,
                "prompt": f"doc {i}",
                "reference": "",
                "prediction": "",
                "slice": None,
                "score": {"nll": 10 * v, "tokens": 10.0, "nll_per_token": v},
            }
            for i, v in enumerate(per_token)
        ]

    base, tuned = System("base", rows([2.5, 2.4, 2.0])), System("tuned", rows([2.2, 2.1, 2.1]))
    result = compare_systems(task, [base, tuned], resamples=100)
    assert result["improvements_count"]["tuned"] == 2
    assert result["regressions_count"]["tuned"] == 1
    assert [r["index"] for r in result["regressions"]["tuned"]] == [2]
