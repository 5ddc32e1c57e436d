"""Tests for honed.selection.rank: score choice, constraints with their reasons, ordering, the pick."""

import pytest

from honed.errors import ConfigError
from honed.selection.rank import GIB, Constraints, rank, recommend, score

OFFLINE = "weights not on this machine (offline); registry facts only"


def candidate(name, zero=None, few=None, trial=None, **overrides):
    """Return a measured candidate dict in the shape selection/run.py produces."""
    row = {
        "name": name,
        "source": "registry",
        "params": 134_515_008,
        "context_length": 8192,
        "license": "Apache-2.0",
        "commercial_use": True,
        "chat_template": "chatml",
        "evaluated": True,
        "not_evaluated_reason": None,
        "primary_metric": "slot_f1",
        "zero_shot": None if zero is None else {"slot_f1": zero, "act_accuracy": 0.9},
        "few_shot": None if few is None else {"slot_f1": few, "act_accuracy": 0.9},
        "few_shot_k": 3,
        "trial": None if trial is None else {"slot_f1": trial},
        "trial_steps": None if trial is None else 20,
        "latency_s": 0.5,
        "tokens_per_s": 25.0,
        "train_memory_bytes": 2 * GIB,
        "train_epoch_s": 3600.0,
        "examples": [],
    }
    row.update(overrides)
    return row


def offline(name):
    """Return a hub candidate whose weights are not on this machine."""
    return candidate(name, evaluated=False, not_evaluated_reason=OFFLINE, latency_s=None, tokens_per_s=None)


def names(ranked):
    return [r["name"] for r in ranked]


def test_score_prefers_trial_then_best_of_zero_and_few_shot():
    assert score(candidate("a", zero=0.2, few=0.4)) == pytest.approx(0.4)
    assert score(candidate("a", zero=0.5, few=0.4)) == pytest.approx(0.5)
    assert score(candidate("a", zero=0.2, few=0.4, trial=0.3)) == pytest.approx(0.3)  # trial counts when run
    assert score(offline("hub/x")) is None


def test_score_from_names_the_stage_and_reason_quotes_it():
    ranked = rank(
        [
            candidate("z", zero=0.5, few=0.1),
            candidate("f", zero=0.1, few=0.41),
            candidate("t", zero=0.1, trial=0.6),
        ],
        Constraints(),
    )
    by_name = {r["name"]: r for r in ranked}
    assert by_name["z"]["score_from"] == "zero_shot"
    assert by_name["f"]["score_from"] == "few_shot"
    assert by_name["t"]["score_from"] == "trial"
    assert names(ranked) == ["t", "z", "f"]
    assert by_name["t"]["reasons"][0] == "trial (20 steps) slot_f1 0.600 (best of the eligible)"
    assert by_name["f"]["reasons"][0].startswith("few-shot slot_f1 0.410")


def test_better_score_ranks_first_and_input_is_not_mutated():
    inputs = [candidate("worse", zero=0.2), candidate("better", zero=0.7)]
    ranked = rank(inputs, Constraints())
    assert names(ranked) == ["better", "worse"]
    assert [r["rank"] for r in ranked] == [1, 2]
    assert all(r["eligible"] for r in ranked)
    assert "rank" not in inputs[0] and "reasons" not in inputs[1]


def test_memory_limit_excludes_with_the_numbers():
    big = candidate("big", zero=0.9, train_memory_bytes=int(9.1 * GIB))
    ranked = rank([big, candidate("small", zero=0.3)], Constraints(max_memory_gb=8.0))
    assert names(ranked) == ["small", "big"]
    assert ranked[1]["eligible"] is False
    assert "needs 9.1 GiB to train; limit 8.0 GiB" in ranked[1]["reasons"]
    assert rank([big], Constraints(max_memory_gb=9.5))[0]["eligible"]  # compared in GiB, not GB


def test_commercial_excludes_non_commercial_and_unknown_licenses():
    rows = [
        candidate("qwen", zero=0.9, license="Qwen Research License", commercial_use=False),
        candidate("folder", zero=0.8, source="folder", license=None, commercial_use=None),
        candidate("apache", zero=0.1),
    ]
    ranked = rank(rows, Constraints(commercial=True))
    by_name = {r["name"]: r for r in ranked}
    assert names(ranked)[0] == "apache"
    assert "license Qwen Research License does not allow commercial use" in by_name["qwen"]["reasons"]
    assert any("license unknown: check it yourself" in r for r in by_name["folder"]["reasons"])
    assert not by_name["qwen"]["eligible"] and not by_name["folder"]["eligible"]
    assert all(r["eligible"] for r in rank(rows, Constraints(commercial=False)))


def test_latency_limit_excludes_slow_candidates():
    ranked = rank(
        [candidate("slow", zero=0.9, latency_s=1.8), candidate("fast", zero=0.2)],
        Constraints(max_latency_s=1.0),
    )
    assert names(ranked) == ["fast", "slow"]
    assert "1.8 s per answer; limit 1.0 s" in ranked[1]["reasons"]


def test_tie_within_tolerance_goes_to_lower_latency_then_memory():
    rows = [
        candidate("slow", zero=0.503, latency_s=2.0),
        candidate("fast", zero=0.500, latency_s=1.0),
        candidate("clearly-better", zero=0.52, latency_s=9.0),
    ]
    assert names(rank(rows, Constraints())) == ["clearly-better", "fast", "slow"]
    same_speed = [
        candidate("heavy", zero=0.5, train_memory_bytes=4 * GIB),
        candidate("light", zero=0.5, train_memory_bytes=2 * GIB),
    ]
    assert names(rank(same_speed, Constraints())) == ["light", "heavy"]


def test_not_evaluated_ranks_after_evaluated_eligible_and_is_never_recommended():
    rows = [offline("hub/big"), candidate("local", zero=0.1)]
    ranked = rank(rows, Constraints())
    assert names(ranked) == ["local", "hub/big"]
    assert ranked[1]["eligible"] is True and ranked[1]["score"] is None
    assert ranked[1]["reasons"][0].startswith("not evaluated: weights not on this machine")
    assert recommend(ranked, Constraints())["name"] == "local"
    only_offline = rank([offline("hub/big")], Constraints())
    rec = recommend(only_offline, Constraints())
    assert rec["name"] is None and "not evaluated" in rec["why"]


def test_ineligible_rank_after_not_evaluated_sorted_by_score():
    rows = [
        candidate("excluded-low", zero=0.2, latency_s=5.0),
        candidate("excluded-high", zero=0.8, latency_s=5.0),
        offline("hub/x"),
        candidate("ok", zero=0.1),
    ]
    assert names(rank(rows, Constraints(max_latency_s=1.0))) == [
        "ok",
        "hub/x",
        "excluded-high",
        "excluded-low",
    ]


def test_recommendation_names_the_top_and_what_it_beat():
    constraints = Constraints(max_memory_gb=8.0)
    rows = [
        candidate("a", zero=0.3, few=0.412),
        candidate("b", zero=0.25),
        candidate("huge", zero=0.9, train_memory_bytes=20 * GIB),
    ]
    rec = recommend(rank(rows, constraints), constraints)
    assert rec["name"] == "a"
    assert "few-shot slot_f1 0.412" in rec["why"] and "b at 0.250" in rec["why"]
    assert "2.0 GiB" in rec["why"] and "0.50 s" in rec["why"]
    assert "huge scored higher" in rec["why"] and "needs 20.0 GiB to train; limit 8.0 GiB" in rec["why"]


def test_recommendation_is_none_with_each_reason_when_all_are_excluded():
    constraints = Constraints(max_memory_gb=4.0, commercial=True)
    rows = [
        candidate("big", zero=0.9, train_memory_bytes=6 * GIB),
        candidate("research", zero=0.8, license="Research Only", commercial_use=False),
    ]
    rec = recommend(rank(rows, constraints), constraints)
    assert rec["name"] is None
    assert "No candidate qualifies" in rec["why"]
    assert "big (needs 6.0 GiB to train; limit 4.0 GiB)" in rec["why"]
    assert "research (license Research Only does not allow commercial use)" in rec["why"]
    assert recommend([], constraints) == {"name": None, "why": "No candidates were given."}


@pytest.mark.parametrize("field", ["max_memory_gb", "max_latency_s"])
def test_non_positive_limits_are_config_errors(field):
    with pytest.raises(ConfigError, match=field):
        Constraints(**{field: 0})
