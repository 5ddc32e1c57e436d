"""Tests for honed.evaluation.numeric: final-answer extraction and numeric comparison of GSM8K answers."""

import pytest

from honed.evaluation.numeric import MathTask, answers_match, extract_answer
from honed.evaluation.tasks import Task

GSM8K_REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GSM8K_REFERENCE, "72"),
        ("The total is 5 + 7.\n#### 1,234", "1234"),
        ("first 3 then 4 #### 5 and later #### 6 dollars", "6"),
        ("She pays 3 + 15 = 18 dollars in total.", "18"),
        ("The answer is $18.00.", "18"),
        ("It is 1,234,567 grains.", "1234567"),
        ("The temperature drops to -5 degrees.", "-5"),
        ("He is down $-3", "-3"),
        ("She reads pages 10-12", "12"),
        ("It takes 3/4 of a cup", "0.75"),
        ("About 2.5 hours.", "2.5"),
        ("That is 50% of them", "50"),
        ("Counted 1,2,3", "3"),
        ("no number here", None),
        ("#### ", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answers_match_numerically_with_a_small_tolerance():
    assert answers_match("18", "18.0")
    assert answers_match(extract_answer("$18.00"), extract_answer("#### 18"))
    assert answers_match("0.3333333333", extract_answer("1/3"))
    assert not answers_match("18", "18.1")
    assert not answers_match(None, "18")
    assert not answers_match("18", None)


def test_math_task_scores_a_worked_solution_against_a_gsm8k_reference():
    task = MathTask()
    assert isinstance(task, Task)
    assert (task.name, task.primary_metric) == ("math", "accuracy")
    assert task.score("48 + 24 = 72, so she sold 72 clips.", GSM8K_REFERENCE) == {
        "accuracy": 1.0,
        "extracted": 1.0,
    }
    assert task.score("#### 1,234", "#### 1234") == {"accuracy": 1.0, "extracted": 1.0}
    assert task.score("She sold 70 clips.", GSM8K_REFERENCE) == {"accuracy": 0.0, "extracted": 1.0}
    assert task.score("I do not know.", GSM8K_REFERENCE) == {"accuracy": 0.0, "extracted": 0.0}
    assert task.score("The change is -4.", "#### -4") == {"accuracy": 1.0, "extracted": 1.0}


def test_math_task_aggregates_accuracy_and_answer_rate():
    task = MathTask()
    scores = [
        {"accuracy": 1.0, "extracted": 1.0},
        {"accuracy": 0.0, "extracted": 1.0},
        {"accuracy": 0.0, "extracted": 0.0},
        {"accuracy": 1.0, "extracted": 1.0},
    ]
    assert task.aggregate(scores) == {"accuracy": 0.5, "answer_rate": 0.75, "rows": 4}
    assert task.aggregate([]) == {"accuracy": 0.0, "answer_rate": 0.0, "rows": 0}
