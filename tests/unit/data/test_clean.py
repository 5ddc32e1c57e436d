"""Cleaning: unicode forms, invisible characters and whitespace each apply and switch off; length rules."""

from __future__ import annotations

import pytest

from honed.config.prepare import CleanConfig
from honed.data.clean import clean_text, clean_value, length_problem

ALL_OFF = {"unicode_form": "none", "strip_control_chars": False, "normalize_whitespace": False}


def only(**on) -> CleanConfig:
    """A config with every rule off except those given."""
    return CleanConfig(**{**ALL_OFF, **on})


# --- unicode normalisation -------------------------------------------------------------------------------


def test_nfkc_folds_full_width_letters_and_ligatures():
    cfg = only(unicode_form="NFKC")
    assert clean_text("ＡＢＣ", cfg) == "ABC"
    assert clean_text("ﬁnd", cfg) == "find"


def test_nfc_composes_accents_but_keeps_look_alikes():
    cfg = only(unicode_form="NFC")
    assert clean_text("caf\u0065\u0301", cfg) == "caf\u00e9"
    assert clean_text("ＡＢＣ ﬁ", cfg) == "ＡＢＣ ﬁ"


def test_unicode_form_none_leaves_text_as_is():
    text = "e\u0301 ＡＢＣ ﬁ"
    assert clean_text(text, only()) == text


def test_accent_split_by_a_format_char_is_composed_after_removal():
    cfg = only(unicode_form="NFC", strip_control_chars=True)
    assert clean_text("e\u200b\u0301", cfg) == "\u00e9"


# --- control and format characters ----------------------------------------------------------------------


def test_control_and_format_chars_are_removed_but_newline_and_tab_kept():
    cfg = only(strip_control_chars=True)
    assert clean_text("\ufeffa\x00b\x1b[0mc\u200bd\x7fe\u00adf", cfg) == "ab[0mcdef"
    assert clean_text("a\tb\nc", cfg) == "a\tb\nc"


def test_every_line_break_becomes_newline():
    cfg = only(strip_control_chars=True)
    assert clean_text("a\r\nb\rc\x0cd\u2028e", cfg) == "a\nb\nc\nd\ne"


def test_joiners_that_spell_words_and_emoji_are_kept():
    cfg = only(strip_control_chars=True)
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert clean_text(family, cfg) == family
    assert clean_text(persian, cfg) == persian


def test_lone_surrogates_are_removed():
    assert clean_text("a\ud800b", only(strip_control_chars=True)) == "ab"


def test_control_chars_stay_when_switched_off():
    text = "\ufeffa\x00b\u200bc\r\n"
    assert clean_text(text, only()) == text


# --- whitespace ------------------------------------------------------------------------------------------


def test_whitespace_trims_collapses_and_limits_blank_lines():
    cfg = only(normalize_whitespace=True)
    assert clean_text("  hello    big \t world  ", cfg) == "hello big world"
    assert clean_text("\n\npara one   \n\n\n\n\npara two\n\n", cfg) == "para one\n\npara two"
    assert clean_text("a\n   \t \nb", cfg) == "a\n\nb"


def test_whitespace_keeps_python_indentation():
    code = "def f(x):\n    if x:\n\treturn  x   \n\n\n\n    return None\n"
    cleaned = clean_text(code, only(normalize_whitespace=True))
    assert cleaned == "def f(x):\n    if x:\n\treturn x\n\n    return None"
    compile(cleaned.replace("\t", "        "), "<snippet>", "exec")


def test_whitespace_keeps_first_line_indentation_of_an_indented_block():
    cfg = only(normalize_whitespace=True)
    method = "\n    def f(self):\n        return 1\n"
    assert clean_text(method, cfg) == "    def f(self):\n        return 1"
    assert clean_text("   Intro line\nsecond line", cfg) == "Intro line\nsecond line"


def test_whitespace_keeps_markdown_structure():
    markdown = "# Title\n\n- item  one\n  - nested   item\n    1. deep\n\n```python\nx = 1\n```"
    expected = "# Title\n\n- item one\n  - nested item\n    1. deep\n\n```python\nx = 1\n```"
    assert clean_text(markdown, only(normalize_whitespace=True)) == expected


def test_whitespace_stays_when_switched_off():
    text = "  a    b  \n\n\n\nc  "
    assert clean_text(text, only()) == text


def test_defaults_clean_a_messy_string_and_are_idempotent():
    cfg = CleanConfig()
    messy = "\ufeff  Cafe\u0301\x00  au   lait\r\n\r\n\r\n\r\nfin  "
    once = clean_text(messy, cfg)
    assert once == "Caf\u00e9 au lait\n\nfin"
    assert clean_text(once, cfg) == once


# --- clean_value -----------------------------------------------------------------------------------------


def test_clean_value_walks_nested_rows_without_mutating():
    row = {
        "messages": [{"role": "user", "content": "  hi\x00  "}, {"role": "assistant", "content": "ok"}],
        "score": 3,
        "tags": ("a  b", None),
    }
    original = repr(row)
    cleaned, changed = clean_value(row, CleanConfig())
    assert changed
    assert cleaned == {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
        "score": 3,
        "tags": ("a b", None),
    }
    assert repr(row) == original
    assert cleaned["messages"] is not row["messages"]


def test_clean_value_reports_no_change_and_leaves_keys_alone():
    row = {"  Key  ": "clean text", "n": 1.5}
    cleaned, changed = clean_value(row, CleanConfig())
    assert not changed
    assert cleaned == row


@pytest.mark.parametrize("value", [7, 2.5, None, True])
def test_clean_value_leaves_non_strings(value):
    assert clean_value(value, CleanConfig()) == (value, False)


# --- length rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "min_chars", "max_chars", "problem"),
    [
        ("", 1, None, "empty"),
        ("  \n\t", 1, None, "empty"),
        ("", 0, None, None),
        ("  ", 0, None, None),
        ("abc", 4, None, "too_short"),
        ("abcd", 4, None, None),
        ("abcd", 1, 4, None),
        ("abcde", 1, 4, "too_long"),
        ("é" * 4, 1, 4, None),
    ],
)
def test_length_problem(text, min_chars, max_chars, problem):
    cfg = CleanConfig(min_chars=min_chars, max_chars=max_chars)
    assert length_problem(text, cfg) == problem
