"""The method contract: every method module in the table has the `Method` protocol's hooks (mypy checks
their types; this checks at run time that each exists and takes the protocol's arguments), and the
too-long rule is the same for every method (one function)."""

from __future__ import annotations

import inspect

import pytest

from honed.config.schema import DataConfig
from honed.data.dataset import SplitReport, fit_length
from honed.data.tokenize import IGNORE, Encoded
from honed.errors import DataError
from honed.methods.base import Method
from honed.methods.registry import METHODS

HOOKS = ("data", "batching", "before_training", "after_training", "sequences", "check_split")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_the_protocol_s_hooks_taking_its_arguments(name: str) -> None:
    method = METHODS[name]  # the run calls hooks positionally; mypy checks the types
    for hook in HOOKS:
        expected = len(inspect.signature(getattr(Method, hook)).parameters) - 1  # without self
        assert len(inspect.signature(getattr(method, hook)).parameters) == expected, (name, hook)


def _cfg(action: str) -> DataConfig:
    return DataConfig(train="x.jsonl", max_seq_len=10, on_too_long=action)


def _seq(length: int, labelled_from: int) -> Encoded:
    return Encoded(list(range(length)), [IGNORE] * labelled_from + list(range(labelled_from, length)))


def test_fit_length_keeps_what_fits_and_counts_nothing() -> None:
    report = SplitReport()
    pair = (_seq(8, 4), _seq(10, 4))
    assert fit_length(_cfg("skip"), report, "f:1", pair) is pair and report.too_long == 0


def test_fit_length_judges_a_pair_by_its_longest_sequence() -> None:
    report = SplitReport()
    assert fit_length(_cfg("skip"), report, "f:2", (_seq(8, 4), _seq(12, 4))) is None
    assert report.too_long == 1 and report.problems[0].endswith("12 tokens > data.max_seq_len 10 (skipped)")


def test_fit_length_truncates_and_drops_a_cut_that_leaves_no_label() -> None:
    report = SplitReport()
    cut = fit_length(_cfg("truncate"), report, "f:3", (_seq(14, 4),))
    assert cut is not None and len(cut[0].input_ids) == 10 and cut[0].num_labels == 6
    assert fit_length(_cfg("truncate"), report, "f:4", (_seq(14, 12),)) is None
    assert report.too_long == 2 and report.problems[0].endswith("(truncated)")


def test_fit_length_error_names_the_setting_that_shortens_the_sequence() -> None:
    with pytest.raises(
        DataError, match="raise max_seq_len, lower dpo.max_prompt_len or set data.on_too_long"
    ):
        fit_length(_cfg("error"), SplitReport(), "f:5", (_seq(12, 4), _seq(6, 4)), lower="dpo.max_prompt_len")
