"""PII detection and redaction: each kind's positives and near misses, overlap precedence, redact() output,
scrub() on nested rows, and ordinary data (WikiSQL rows, numbers) that must come through untouched."""

from __future__ import annotations

import copy
import time
from collections import Counter

import pytest

from honed.config.prepare import PII_TYPES
from honed.data.pii import PiiMatch, find_pii, redact, scrub

GITHUB_CLASSIC = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"
GITHUB_FINE = (
    "github_pat_11ABCDEFG0123456789_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVw"
)
HUGGING_FACE = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAv1QzK3Zp0nq8kFQ2Yt\nc2VjcmV0IGJvZHkgb2Yga2V5\n"
    "-----END RSA PRIVATE KEY-----"
)
PEM_TRUNCATED = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKB"
)

# (kind, text, the matched text); each positive is also checked inside a sentence.
POSITIVES = [
    ("email", "john.doe@example.com", "john.doe@example.com"),
    ("email", "a.b+tag@mail.example.co.uk", "a.b+tag@mail.example.co.uk"),
    ("email", "x_y-z@sub-domain.io", "x_y-z@sub-domain.io"),
    ("email", "USER@EXAMPLE.ORG", "USER@EXAMPLE.ORG"),
    ("phone", "+44 20 7946 0958", "+44 20 7946 0958"),
    ("phone", "+1-202-555-0143", "+1-202-555-0143"),
    ("phone", "+49 30 901820", "+49 30 901820"),
    ("phone", "+33 1 42 68 53 00", "+33 1 42 68 53 00"),
    ("phone", "+12025550143", "+12025550143"),
    ("phone", "+1 (202) 555-0143", "+1 (202) 555-0143"),
    ("phone", "+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
    ("phone", "(202) 555-0143", "(202) 555-0143"),
    ("phone", "(202)555-0143", "(202)555-0143"),
    ("phone", "202-555-0143", "202-555-0143"),
    ("phone", "202.555.0143", "202.555.0143"),
    ("phone", "1-800-555-0199", "1-800-555-0199"),
    ("card", "4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("card", "4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("card", "4111111111111111", "4111111111111111"),
    ("card", "5500-0000-0000-0004", "5500-0000-0000-0004"),
    ("card", "378282246310005", "378282246310005"),
    ("card", "3782 822463 10005", "3782 822463 10005"),
    ("card", "6011111111111117", "6011111111111117"),
    ("card", "2223000048400011", "2223000048400011"),
    ("iban", "GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("iban", "DE89370400440532013000", "DE89370400440532013000"),
    ("iban", "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
    ("iban", "NO9386011117947", "NO9386011117947"),
    ("iban", "FR1420041010050500013M02606", "FR1420041010050500013M02606"),
    ("iban", "BE68 5390 0754 7034 AND more", "BE68 5390 0754 7034"),  # a following word is not eaten
    ("ip", "192.168.0.1", "192.168.0.1"),
    ("ip", "8.8.8.8", "8.8.8.8"),
    ("ip", "255.255.255.255", "255.255.255.255"),
    ("ip", "10.0.0.1:8080", "10.0.0.1"),
    ("ip", "2001:db8::8a2e:370:7334", "2001:db8::8a2e:370:7334"),
    ("ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("ip", "fe80::1", "fe80::1"),
    ("ip", "::ffff:192.0.2.128", "::ffff:192.0.2.128"),  # one match, not a second one for the IPv4 tail
    ("national_id", "123-45-6789", "123-45-6789"),
    ("national_id", "078-05-1120", "078-05-1120"),
    ("national_id", "AB 12 34 56 C", "AB 12 34 56 C"),
    ("national_id", "AB123456C", "AB123456C"),
    ("national_id", "ZY987654D", "ZY987654D"),
    ("secret", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ("secret", GITHUB_CLASSIC, GITHUB_CLASSIC),
    ("secret", GITHUB_FINE, GITHUB_FINE),
    (
        "secret",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
    ),
    ("secret", "sk-proj-AbCdEf0123456789GhIjKl", "sk-proj-AbCdEf0123456789GhIjKl"),
    ("secret", "sk-AbCdEf0123456789GhIjKlMnOp", "sk-AbCdEf0123456789GhIjKlMnOp"),
    ("secret", "sk-ant-api03-AbCdEf0123456789GhIjKl_x", "sk-ant-api03-AbCdEf0123456789GhIjKl_x"),
    ("secret", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
    ("secret", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("secret", "rk_live_4eC39HqLyjWDarjtT1zdp7dc", "rk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("secret", HUGGING_FACE, HUGGING_FACE),
    ("secret", JWT, JWT),
    ("secret", PEM, PEM),
    ("secret", PEM_TRUNCATED, PEM_TRUNCATED),
    ("secret", 'api_key = "abcd1234efgh"', "abcd1234efgh"),  # only the value, not the key name
    ("secret", "password: hunter2hunter2", "hunter2hunter2"),
    ("secret", "token=abcdefgh12345", "abcdefgh12345"),
    ("secret", "secret = 'xyzxyz12'", "xyzxyz12"),
    ("secret", '{"client_secret": "s3cr3t-value-99"}', "s3cr3t-value-99"),
    (
        "secret",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("secret", "https://x.io/cb?token=abc123def456&next=1", "abc123def456"),
    ("secret", "DB_PASSWORD: Sup3r-Secret!", "Sup3r-Secret!"),
    ("secret", "my password: hunter2hunter2.", "hunter2hunter2"),  # the sentence's full stop stays
]

# (why it is not PII, text); none of these may produce a match of any kind.
NEAR_MISSES = [
    ("email: spaces around @", "a @ b"),
    ("email: a handle", "@handle"),
    ("email: no dot in the domain", "user@localhost"),
    ("email: no top-level domain", "user@domain"),
    ("email: one-letter top-level domain", "name@domain.c"),
    ("email: a retina image name", "icon@2x.png"),
    ("email: an npm version pin", "lodash@4.17.21"),
    ("phone: ISO date", "2024-01-15"),
    ("phone: European date", "15.01.2024"),
    ("phone: time", "12:30:45"),
    ("phone: date and time", "2024-01-15 12:30:45"),
    ("phone: version", "1.2.3"),
    ("phone: round integer", "20000"),
    ("phone: integer id", "10015132"),
    ("phone: decimal", "3.14159"),
    ("phone: year range", "1990-2005"),
    ("phone: identifier with underscores", "table_1_10015132_11"),
    ("phone: ISBN-13", "978-3-16-148410-0"),
    ("phone: ISBN-10", "0-306-40615-2"),
    ("phone: area code starting with 1", "123-456-7890"),
    ("phone: bare ten digits", "2025550143"),
    ("phone: space-separated numbers", "202 555 0143"),
    ("phone: mixed separators", "202-555.0143"),
    ("phone: part of a longer dashed number", "202-555-0143-9999"),
    ("phone: single digits after a plus", "+1 2 3 4 5 6 7 8 9"),
    ("phone: too many digits after a plus", "+1234567890123456"),
    ("phone: too few digits after a plus", "+44 20 79"),
    ("phone: letters glued on", "+44 20 7946 0958abc"),
    ("card: fails Luhn, grouped", "4111 1111 1111 1112"),
    ("card: fails Luhn, compact", "4111111111111112"),
    ("card: Luhn-valid but no card network starts with 1", "1234567812345670"),
    ("card: Luhn-valid millisecond timestamp", "1700000000004"),
    ("card: a fifth group", "4111 1111 1111 1111 1"),
    ("card: odd grouping", "4111 11111 1111 111"),
    ("card: decimal digits", "0.4111111111111111"),
    ("card: inside an identifier", "id_4111111111111111"),
    ("iban: wrong check digits", "GB83 WEST 1234 5698 7654 32"),
    ("iban: wrong last digit", "DE89370400440532013001"),
    ("iban: too short", "GB82 WEST 1234"),
    ("iban: lowercase", "gb82 west 1234 5698 7654 32"),
    ("ip: octet over 255", "256.1.1.1"),
    ("ip: three parts", "1.2.3"),
    ("ip: five parts", "1.2.3.4.5"),
    ("ip: leading zero", "192.168.01.1"),
    ("ip: version with a v", "v1.2.3.4"),
    ("ip: time", "12:30:45"),
    ("ip: C++ scope", "std::vector"),
    ("ip: hex-only words around ::", "dead::beef"),
    ("ip: MAC address", "00:1A:2B:3C:4D:5E"),
    ("national_id: SSN short serial", "123-45-678"),
    ("national_id: SSN area 000", "000-12-3456"),
    ("national_id: SSN area 666", "666-12-3456"),
    ("national_id: SSN area 9xx", "900-12-3456"),
    ("national_id: SSN group 00", "123-00-4567"),
    ("national_id: SSN serial 0000", "123-45-0000"),
    ("national_id: NI first letter Q", "QQ123456C"),
    ("national_id: NI prefix GB", "GB123456A"),
    ("national_id: NI prefix TN", "TN123456A"),
    ("national_id: NI suffix E", "AB123456E"),
    ("national_id: NI second letter O", "AO123456A"),
    ("national_id: NI first letter D", "DA123456A"),
    ("national_id: NI five digits", "AB12345C"),
    ("secret: sk- and a short word", "sk-learn"),
    ("secret: sk- and kebab-case words", "sk-learn-contrib-imbalanced-project"),
    ("secret: the word password", "password"),
    ("secret: an empty password field", "Password: "),
    ("secret: a short password", "password: short"),
    ("secret: AKIA alone", "AKIA"),
    ("secret: AWS id one short", "AKIAIOSFODNN7EXAMP"),
    ("secret: GitHub prefix alone", "ghp_short"),
    ("secret: Slack prefix without digits", "xoxb-abcdefghijkl"),
    ("secret: one JWT part", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"),
    (
        "secret: a public key",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEF\n-----END PUBLIC KEY-----",
    ),
    ("secret: attribute access", "token = tokenizer.eos_token"),
    ("secret: function call", "password = get_password()"),
    ("secret: environment lookup", "api_key = os.environ['API_KEY']"),
    ("secret: constant name", "password = DEFAULT_PASSWORD"),
    ("secret: shell variable", "token = ${GITHUB_TOKEN}"),
    ("secret: special token", "pad_token: '[PAD]'"),
    ("secret: special token in JSON", '"eos_token": "<|endoftext|>"'),
    ("secret: masked", "password: ********"),
    ("secret: a count of tokens", "max_tokens: 12345678"),
    ("secret: password in prose", "Enter your password and press the key to continue."),
]


def _found(text: str, types=PII_TYPES) -> list[tuple[str, str]]:
    return [(match.type, match.text) for match in find_pii(text, types)]


@pytest.mark.parametrize(("kind", "text", "expected"), POSITIVES, ids=[p[1][:40] for p in POSITIVES])
def test_each_kind_is_found_alone_and_in_a_sentence(kind: str, text: str, expected: str) -> None:
    assert _found(text) == [(kind, expected)]
    sentence = f"Note: {text} \n(see above)"
    matches = find_pii(sentence)
    assert [(m.type, m.text) for m in matches] == [(kind, expected)]
    assert sentence[matches[0].start : matches[0].end] == expected


@pytest.mark.parametrize(("why", "text"), NEAR_MISSES, ids=[why for why, _ in NEAR_MISSES])
def test_near_misses_are_not_flagged_as_anything(why: str, text: str) -> None:
    assert find_pii(text) == [], why
    assert find_pii(f"Note: {text} (see above)") == [], why


def test_match_offsets_and_fields() -> None:
    text = "Write to ann@example.org today."
    assert find_pii(text) == [PiiMatch(type="email", start=9, end=24, text="ann@example.org")]


def test_matches_are_sorted_by_start_and_do_not_overlap() -> None:
    text = "call +1-202-555-0143, mail a@b.com, card 4111 1111 1111 1111, from 10.0.0.1"
    matches = find_pii(text)
    assert [m.type for m in matches] == ["phone", "email", "card", "ip"]
    assert all(a.end <= b.start for a, b in zip(matches, matches[1:], strict=False))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: john.doe@example.com", [("secret", "john.doe@example.com")]),  # secret beats email
        ('token = "4111111111111111"', [("secret", "4111111111111111")]),  # secret beats card
        ("+1 123-45-6789", [("national_id", "123-45-6789")]),  # national_id beats phone
        ("::ffff:192.0.2.128", [("ip", "::ffff:192.0.2.128")]),  # the longer of two ips
        ("HF_TOKEN=" + HUGGING_FACE, [("secret", HUGGING_FACE)]),  # two secret patterns, one match
    ],
)
def test_overlaps_keep_the_more_specific_or_longer_match(text: str, expected: list) -> None:
    assert _found(text) == expected


def test_types_restricts_detection() -> None:
    text = "mail a@b.com or call 202-555-0143 from 10.0.0.1"
    assert _found(text, ["email"]) == [("email", "a@b.com")]
    assert _found(text, ("phone", "ip")) == [("phone", "202-555-0143"), ("ip", "10.0.0.1")]
    assert _found(text, "email") == [("email", "a@b.com")]  # a single name, not its letters
    assert find_pii(text, []) == []


def test_a_lower_kind_is_found_when_the_higher_one_is_not_requested() -> None:
    assert _found("password: john.doe@example.com", ["email"]) == [("email", "john.doe@example.com")]


def test_unknown_type_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown PII type\(s\) \['emails'\].*email, phone"):
        find_pii("a@b.com", ["emails"])


def test_redact_replaces_each_match_with_its_tag() -> None:
    text = (
        "Mail a@b.com, call +44 20 7946 0958, card 4111 1111 1111 1111, IBAN GB82WEST12345698765432, "
        "host 10.0.0.1, SSN 123-45-6789, api_key = 'abcd1234efgh'."
    )
    assert redact(text, find_pii(text)) == (
        "Mail <EMAIL>, call <PHONE>, card <CARD>, IBAN <IBAN>, host <IP>, SSN <NATIONAL_ID>, "
        "api_key = '<SECRET>'."
    )


def test_redact_ignores_the_order_of_matches_and_keeps_text_without_matches() -> None:
    text = "a@b.com and c@d.org"
    assert redact(text, list(reversed(find_pii(text)))) == "<EMAIL> and <EMAIL>"
    assert redact("nothing here", []) == "nothing here"


def test_redact_keeps_the_key_name_of_an_assignment() -> None:
    text = 'config = {"api_key": "abcd1234efgh", "model": "gpt"}'
    assert redact(text, find_pii(text)) == 'config = {"api_key": "<SECRET>", "model": "gpt"}'


ROW = {
    "messages": [
        {"role": "user", "content": "mail me at a@b.com"},
        {"role": "assistant", "content": "Sure, and call 202-555-0143 or +44 20 7946 0958."},
    ],
    "n": 3,
    "score": 0.5,
    "extra": None,
}


def test_scrub_counts_and_redacts_a_nested_row_without_mutating_it() -> None:
    original = copy.deepcopy(ROW)
    redacted, counts = scrub(ROW, PII_TYPES, action_redact=True)
    assert counts == Counter({"email": 1, "phone": 2})
    assert redacted == {
        "messages": [
            {"role": "user", "content": "mail me at <EMAIL>"},
            {"role": "assistant", "content": "Sure, and call <PHONE> or <PHONE>."},
        ],
        "n": 3,
        "score": 0.5,
        "extra": None,
    }
    assert ROW == original


def test_scrub_without_redaction_returns_the_same_value_and_counts() -> None:
    value, counts = scrub(ROW, ["email"], action_redact=False)
    assert value is ROW
    assert counts == Counter({"email": 1})


def test_scrub_a_plain_string_and_other_types() -> None:
    assert scrub("ssn 123-45-6789", PII_TYPES, True) == ("ssn <NATIONAL_ID>", Counter({"national_id": 1}))
    assert scrub(42, PII_TYPES, True) == (42, Counter())
    assert scrub(["a@b.com", ["c@d.org"]], ["email"], True) == (["<EMAIL>", ["<EMAIL>"]], Counter(email=2))


def test_ordinary_rows_have_no_matches() -> None:
    row = {
        "question": "What school did player number 21 play for?",
        "context": "CREATE TABLE table_1_10015132_11 (school_club_team VARCHAR, no VARCHAR)",
        "answer": "SELECT school_club_team FROM table_1_10015132_11 WHERE no = 21",
    }
    assert scrub(row, PII_TYPES, True) == (row, Counter())
    numbers = (
        "Population 1,234,567 in 2010; score 98.6; ids 20000 30000; v2.0.1 released 2024-01-15 at 12:30."
    )
    assert find_pii(numbers) == []


def test_pathological_inputs_finish_quickly() -> None:
    # Guards against catastrophic backtracking: sound regexes take milliseconds on each of these.
    texts = [
        "+1" + "2" * 500 + "x",
        "+1 " + "23 " * 300 + "x",
        "9" * 5000,
        "AB12" + " XXXX" * 1000,
        "1." * 3000,
        "1:" * 3000,
        "a@" + "aaaa." * 1000 + "1",
        "password = " + "x" * 5000 + "(",
        "eyJ" + "a" * 3000 + "." + "b" * 3000,
        "-----BEGIN PRIVATE KEY-----" + "\nAAAAAAAAAAAAAAAAAAAA" * 500,
    ]
    start = time.perf_counter()
    for text in texts:
        find_pii(text)
    assert time.perf_counter() - start < 2.0
