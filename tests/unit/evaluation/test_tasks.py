"""Tests for honed.evaluation.tasks: normalization, ViGGO parsing and the metrics of each task."""

import pytest

from honed.errors import ConfigError, HonedError
from honed.evaluation.registry import build_task
from honed.evaluation.tasks import (
    ExactMatchTask,
    StructuredTask,
    Task,
    normalize_text,
    parse_functional,
)

DIRT = (
    "inform(name[Dirt: Showdown], release_year[2012], esrb[E 10+ (for Everyone 10 and Older)], "
    "genres[driving/racing, sport], platforms[PlayStation, Xbox, PC], available_on_steam[no], "
    "has_linux_release[no], has_mac_release[no])"
)


def test_normalize_text_collapses_case_space_unicode_and_trailing_period():
    assert normalize_text("  Hello,\n\t  WORLD. ") == "hello, world"
    assert normalize_text("ﬁne\u00a0day") == "fine day"  # NFKC folds the ligature and the no-break space
    assert normalize_text("e.g. this...") == "e.g. this.."
    assert normalize_text("") == ""


def test_parse_real_viggo_inform_keeps_commas_colons_and_parentheses_in_values():
    act, slots = parse_functional(DIRT)
    assert act == "inform"
    assert slots == {
        "name": "dirt: showdown",
        "release_year": "2012",
        "esrb": "e 10+ (for everyone 10 and older)",
        "genres": "driving/racing, sport",
        "platforms": "playstation, xbox, pc",
        "available_on_steam": "no",
        "has_linux_release": "no",
        "has_mac_release": "no",
    }


@pytest.mark.parametrize(
    ("text", "act", "slots"),
    [
        ("request(specifier[exciting])", "request", {"specifier": "exciting"}),
        (
            "give_opinion(name[SpellForce 3], rating[poor], genres[real-time strategy, role-playing])",
            "give_opinion",
            {"name": "spellforce 3", "rating": "poor", "genres": "real-time strategy, role-playing"},
        ),
        ("request_attribute(player_perspective[])", "request_attribute", {"player_perspective": ""}),
        (
            "confirm(name[Tom Clancy's The Division], has_multiplayer)",
            "confirm",
            {"name": "tom clancy's the division"},
        ),
        ("inform()", "inform", {}),
    ],
)
def test_parse_other_acts_and_bare_slots(text, act, slots):
    assert parse_functional(text) == (act, slots)


def test_parse_skips_junk_before_and_after_the_representation():
    text = "Sure! Here is the meaning representation:\n" + DIRT + "\nHope this helps (really)."
    assert parse_functional(text) == parse_functional(DIRT)


def test_parse_truncated_generation_keeps_completed_slots():
    assert parse_functional("inform(name[Halo], rating[goo") == ("inform", {"name": "halo"})


@pytest.mark.parametrize("text", ["", "no representation here", "inform name[Halo]", "(name[Halo])"])
def test_parse_unparseable_text_returns_none_and_no_slots(text):
    assert parse_functional(text) == (None, {})


def test_structured_score_is_order_and_case_insensitive():
    reordered = (
        "INFORM(has_mac_release[no], genres[Driving/Racing, Sport], name[Dirt: Showdown], "
        "platforms[PlayStation, Xbox, PC], release_year[2012], has_linux_release[no], "
        "available_on_steam[no], esrb[E 10+ (for Everyone 10 and Older)])"
    )
    score = StructuredTask().score(reordered, DIRT)
    assert score["exact_match"] == 1.0
    assert score["act_correct"] == 1.0
    assert (score["slot_tp"], score["slot_fp"], score["slot_fn"]) == (8, 0, 0)
    assert score["slot_f1"] == 1.0


def test_structured_hand_computed_precision_recall_f1():
    task = StructuredTask()
    gold_1 = "inform(name[Halo], rating[good], genres[shooter])"
    pred_1 = "inform(name[Halo], rating[poor], genres[shooter], platforms[Xbox])"  # tp 2, fp 2, fn 1
    gold_2 = "request(specifier[exciting])"
    pred_2 = "give_opinion(specifier[exciting])"  # wrong act, tp 1
    gold_3 = "inform(name[Doom])"
    pred_3 = "I cannot answer that."  # unparseable: fn 1
    scores = [task.score(pred_1, gold_1), task.score(pred_2, gold_2), task.score(pred_3, gold_3)]

    assert scores[0]["slot_precision"] == pytest.approx(0.5)
    assert scores[0]["slot_recall"] == pytest.approx(2 / 3)
    assert scores[1]["act_correct"] == 0.0 and scores[1]["exact_match"] == 0.0
    assert scores[2]["parsed"] == 0.0 and scores[2]["slot_f1"] == 0.0

    agg = task.aggregate(scores)
    # Micro totals: tp = 2 + 1 + 0 = 3, fp = 2 + 0 + 0 = 2, fn = 1 + 0 + 1 = 2.
    assert agg["slot_precision"] == pytest.approx(3 / 5)
    assert agg["slot_recall"] == pytest.approx(3 / 5)
    assert agg["slot_f1"] == pytest.approx(3 / 5)
    assert agg["act_accuracy"] == pytest.approx(1 / 3)
    assert agg["exact_match"] == 0.0
    assert agg["parse_rate"] == pytest.approx(2 / 3)
    assert agg["rows"] == 3


def test_structured_aggregate_with_no_slots_anywhere_is_perfect():
    task = StructuredTask()
    agg = task.aggregate([task.score("inform()", "inform()")])
    assert agg["slot_precision"] == agg["slot_recall"] == agg["slot_f1"] == 1.0
    assert agg["exact_match"] == 1.0


def test_structured_aggregate_with_no_predicted_slots_has_zero_precision():
    task = StructuredTask()
    agg = task.aggregate([task.score("inform()", "inform(name[Halo])")])
    assert (agg["slot_precision"], agg["slot_recall"], agg["slot_f1"]) == (0.0, 0.0, 0.0)


def test_aggregates_stay_in_unit_interval_and_handle_empty_corpus():
    for task in (ExactMatchTask(), StructuredTask()):
        agg = task.aggregate([])
        assert agg["rows"] == 0
        assert all(0.0 <= v <= 1.0 for k, v in agg.items() if k != "rows")


def test_exact_match_normalizes_before_comparing():
    task = ExactMatchTask()
    assert task.score("  The  ANSWER is 42. ", "the answer is 42")["exact_match"] == 1.0
    assert task.score("43", "42")["exact_match"] == 0.0
    agg = task.aggregate([task.score("a", "A."), task.score("b", "c")])
    assert agg == {"exact_match": 0.5, "rows": 2}


def test_registry_builds_tasks_that_satisfy_the_protocol():
    assert build_task("structured").primary_metric == "slot_f1"
    assert build_task("exact_match").name == "exact_match"
    assert all(isinstance(build_task(name), Task) for name in ("exact_match", "structured"))


def test_registry_unknown_task_raises_config_error_naming_known_tasks():
    with pytest.raises(ConfigError, match="exact_match") as info:
        build_task("structure")
    assert isinstance(info.value, HonedError)
    assert "did you mean 'structured'" in str(info.value)
