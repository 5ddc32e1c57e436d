"""Find and redact personal data and secrets in text: emails, phone numbers, payment cards, IBANs, IP
addresses, national ids (US SSN, UK NI number) and secrets (API keys, tokens, private keys, passwords).

Detection is offline and deterministic: hand-written regular expressions, then a checksum or range check
where the format has one (Luhn for cards, ISO 13616 mod-97 for IBANs, octet ranges and the stdlib
`ipaddress` parser for IPs, the issuing rules for SSNs and NI numbers). Model-based detectors such as
presidio need downloaded NLP models, so they are not used; names and street addresses are therefore not
found. Patterns favour precision over recall, since they run on every string of every training row and a
false positive damages ordinary data (ids, dates, versions, SQL). This module knows nothing about recipes
or rows on disk: `honed.data.prepare` decides what to do with a row that has matches.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from honed.config.prepare import PII_TYPES

# When two matches overlap, the earlier kind in this order wins; within a kind the longer wins.
_PRECEDENCE = ("secret", "card", "iban", "national_id", "email", "ip", "phone")
_RANK = {kind: rank for rank, kind in enumerate(_PRECEDENCE)}
_TAGS: dict[str, str] = {kind: f"<{kind.upper()}>" for kind in PII_TYPES}


@dataclass(frozen=True)
class PiiMatch:
    """One detected item: its kind (one of PII_TYPES), its [start, end) character offsets and its text."""

    type: str
    start: int
    end: int
    text: str


# A detector turns a regex match into the (start, end) span to report, or None when a check rejects it.
Accept = Callable[[re.Match], tuple[int, int] | None]


@dataclass(frozen=True)
class _Detector:
    """One pattern for one kind, with a cheap pre-check: most texts skip most regexes."""

    type: str
    pattern: re.Pattern
    accept: Accept
    needs: Callable[[str], bool]


def _when(check: Callable[[str], bool], group: int | str = 0) -> Accept:
    """An accept function reporting `group`'s span when `check` passes on its text."""

    def accept(match: re.Match) -> tuple[int, int] | None:
        return match.span(group) if check(match.group(group)) else None

    return accept


def _always(match: re.Match) -> tuple[int, int] | None:
    return match.span()


def _contains(*needles: str) -> Callable[[str], bool]:
    """A pre-check passing when the text holds one of `needles` (a C-speed substring scan)."""
    return lambda text: any(needle in text for needle in needles)


_has_digit = _contains(*"0123456789")


# ---------------------------------------------------------------------------------------------- email

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63})(?![\w-])"
)
# Retina image names such as icon@2x.png have an email's shape; these are file types, not domains.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js"})


def _email_ok(match: re.Match) -> tuple[int, int] | None:
    return None if match.group(1).lower() in _FILE_SUFFIXES else match.span()


# ---------------------------------------------------------------------------------------------- phone

# "+", digit runs joined by one separator each, at most one "(area)" group after the country code; every
# run is maximal, so a long digit string cannot be split in exponentially many ways while backtracking.
_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d+(?:[ .-]?\(\d{1,4}\)[ .-]?\d+)?(?:[ .-]\d+)*(?!\w|[ .-]\d)")
# North American numbers only in the written shapes people use, with area and exchange codes 2-9xx; no
# bare 10-digit runs (ids) and no space-separated triples (tables of numbers).
_NANP = re.compile(
    r"(?<![\w.+(-])(?:(?:1[.-])?[2-9]\d{2}([.-])[2-9]\d{2}\1|\([2-9]\d{2}\) ?[2-9]\d{2}[ .-])\d{4}"
    r"(?!\w)(?![.-]\d)"
)


def _international_ok(text: str) -> bool:
    """9-15 digits; when grouped, a 1-4 digit country code and at most one other single-digit group."""
    runs = re.findall(r"\d+", text)
    if not 9 <= sum(map(len, runs)) <= 15:
        return False
    return len(runs) == 1 or (len(runs[0]) <= 4 and sum(len(run) == 1 for run in runs[1:]) <= 1)


# ----------------------------------------------------------------------------------------------- card

_CARD = re.compile(
    r"(?<![\w.,-])(?<!\d[ -])"
    r"(?:\d{13,19}"
    r"|\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)\d{4}(?:(?P=s)\d{1,3})?"  # 16-19 digits in fours
    r"|\d{4}(?P<t>[ -])\d{6}(?P=t)\d{4,5})"  # Amex 4-6-5, Diners 4-6-4
    r"(?!\w)(?![.,]\d)(?![ -]\d)"
)


def _card_ok(text: str) -> bool:
    """Luhn-valid, and issued by a network: the first digit is 2-6 (Mastercard, Amex, Visa, Discover...)."""
    digits = [int(char) for char in text if char.isdigit()]
    if not 2 <= digits[0] <= 6:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


# ----------------------------------------------------------------------------------------------- iban

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_IBAN_MIN, _IBAN_MAX = 15, 34  # Norway's is the shortest, 34 is the standard's maximum


def _iban_valid(compact: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters become 10-35, the number mod 97 is 1."""
    if not _IBAN_MIN <= len(compact) <= _IBAN_MAX or not 2 <= int(compact[2:4]) <= 98:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban_ok(match: re.Match) -> tuple[int, int] | None:
    """The span of the longest valid IBAN, dropping trailing space-separated groups (a following word)."""
    text = match.group()
    while True:
        if _iban_valid(text.replace(" ", "")):
            return match.start(), match.start() + len(text)
        if " " not in text:
            return None
        text = text.rsplit(" ", 1)[0]


# ------------------------------------------------------------------------------------------------- ip

# Four dotted parts only (1.2.3 and 1.2.3.4.5 are versions); a four-part version such as 4.7.0.208 has the
# same shape as an address and is reported.
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w)(?!\.\d)")
# The embedded-IPv4 tail is tried first, or "::ffff:192.0.2.1" would stop at "::ffff:192".
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])(?!\.\w)"
)


def _ipv6_possible(text: str) -> bool:
    """An IPv6 address either abbreviates with "::" or spells all eight groups (seven colons)."""
    return "::" in text or text.count(":") >= 7


def _ipv4_ok(text: str) -> bool:
    """Every octet 0-255 without leading zeros (the stdlib parser enforces both)."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ipv6_ok(text: str) -> bool:
    """A parseable address with two or more groups and a digit, so times and `a::b` in code do not count."""
    groups = [group for group in text.split(":") if group]
    if len(groups) < 2 or not any(char.isdigit() for char in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------- national_id

_SSN = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])(?!\.\d)")
# UK NI number: the first letter is never D, F, I, Q, U or V, the second never D, F, I, O, Q, U or V.
_NINO = re.compile(r"(?<!\w)([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)")
_NINO_UNUSED_PREFIXES = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})


def _ssn_ok(match: re.Match) -> tuple[int, int] | None:
    """Issued SSNs: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    area, group, serial = match.groups()
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return match.span()


def _nino_ok(match: re.Match) -> tuple[int, int] | None:
    return None if match.group(1) in _NINO_UNUSED_PREFIXES else match.span()


# --------------------------------------------------------------------------------------------- secret

# (pattern, substrings one of which it needs); the pre-check matters because a leading look-behind stops
# the regex engine from searching for the literal prefix itself.
_TOKENS = [
    (r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", ("AKIA", "ASIA")),  # AWS access key id
    (
        r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),  # GitHub classic
    (r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}", ("github_pat_",)),  # GitHub fine-grained
    (r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])", ("AIza",)),  # Google API key
    (r"(?<![\w-])[sr]k_live_[0-9A-Za-z]{16,}", ("k_live_",)),  # Stripe secret and restricted keys
    (r"(?<![\w-])hf_[A-Za-z]{34}(?![\w-])", ("hf_",)),  # Hugging Face access token
    (r"(?<![\w-])eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", ("eyJ",)),  # JWT
    # A whole PEM private key block; a truncated one (no END line) up to the end of its base64 body.
    (
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"|(?:\s+(?:[A-Za-z0-9+/]{16,}=*|[A-Za-z-]+: [^\n]*))*)",
        ("PRIVATE KEY",),
    ),
]
# Random key bodies hold a digit; requiring one keeps kebab-case prose such as "sk-learn-..." out.
_SLACK = re.compile(r"(?<![\w-])xox[abprs]-[A-Za-z0-9-]{10,}")
_OPENAI = re.compile(r"(?<![\w-])sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}")  # OpenAI and Anthropic

# `api_key = "..."`, `password: ...`, `"token": "..."`: a key name ending in one of these words, then the
# value. Only the value is reported, so the name stays readable and its start (db_password,
# AWS_SECRET_ACCESS_KEY) need not be matched.
_SECRET_NAMES = ("key", "secret", "token", "passw", "passphrase")
_ASSIGNMENT = re.compile(
    r"(?i)(?:(?:api|access|secret|private)[_-]?key|secret|token|passw(?:or)?d|passphrase)"
    r"""["']?[ \t]*(?:=>|:=|[:=])[ \t]*"""
    r"""(?:"(?P<dq>[^\s"]{8,})"|'(?P<sq>[^\s']{8,})'|(?P<bare>[^\s"'`,;&()\[\]{}<>]{8,})(?=[\s,;&)\]}]|$))"""
)
# Unquoted values that name a variable (self.token, DEFAULT_PASSWORD) are code, not secrets.
_CODE_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[A-Za-z]*_[A-Za-z_]*")


def _names_a_secret(text: str) -> bool:
    lowered = text.lower()
    return any(name in lowered for name in _SECRET_NAMES)


def _placeholder(value: str) -> bool:
    """Template slots and masks such as <your-key>, ${TOKEN}, {{ token }} or ******** hide nothing."""
    return value.startswith(("<", "${", "{{", "%(")) or len(set(value)) == 1


def _assignment_ok(match: re.Match) -> tuple[int, int] | None:
    """The value's span when it is a literal, not a placeholder or (unquoted) a variable name."""
    if match.group("bare") is None:
        group = "dq" if match.group("dq") is not None else "sq"
        return None if _placeholder(match.group(group)) else match.span(group)
    value = match.group("bare").rstrip(".")  # a full stop ending the sentence is not part of it
    if len(value) < 8 or _placeholder(value) or _CODE_NAME.fullmatch(value):
        return None
    start = match.start("bare")
    return start, start + len(value)


_DETECTORS = [
    _Detector("email", _EMAIL, _email_ok, _contains("@")),
    _Detector("phone", _INTERNATIONAL, _when(_international_ok), _contains("+")),
    _Detector("phone", _NANP, _always, _has_digit),
    _Detector("card", _CARD, _when(_card_ok), _has_digit),
    _Detector("iban", _IBAN, _iban_ok, _has_digit),
    _Detector("ip", _IPV4, _when(_ipv4_ok), _contains(".")),
    _Detector("ip", _IPV6, _when(_ipv6_ok), _ipv6_possible),
    _Detector("national_id", _SSN, _ssn_ok, _contains("-")),
    _Detector("national_id", _NINO, _nino_ok, _has_digit),
    *(_Detector("secret", re.compile(p, re.DOTALL), _always, _contains(*n)) for p, n in _TOKENS),
    _Detector("secret", _SLACK, _when(_has_digit), _contains("xox")),
    _Detector("secret", _OPENAI, _when(_has_digit), _contains("sk-")),
    _Detector("secret", _ASSIGNMENT, _assignment_ok, _names_a_secret),
]


# ---------------------------------------------------------------------------------------------- public


def _wanted(types: Iterable[str]) -> frozenset[str]:
    """The requested kinds as a set, rejecting names that are not in PII_TYPES."""
    wanted = frozenset([types] if isinstance(types, str) else types)
    unknown = sorted(wanted - set(PII_TYPES))
    if unknown:
        raise ValueError(f"unknown PII type(s) {unknown}; choose from {', '.join(PII_TYPES)}")
    return wanted


def _candidates(text: str, wanted: frozenset[str]) -> list[PiiMatch]:
    """Every accepted match of every wanted detector, overlaps included."""
    found = []
    for detector in _DETECTORS:
        if detector.type not in wanted or not detector.needs(text):
            continue
        for match in detector.pattern.finditer(text):
            span = detector.accept(match)
            if span is not None and span[1] > span[0]:
                found.append(PiiMatch(detector.type, span[0], span[1], text[span[0] : span[1]]))
    return found


def _resolve_overlaps(found: list[PiiMatch]) -> list[PiiMatch]:
    """Keep the more specific kind, then the longer match, wherever two overlap; sorted by start."""
    kept: list[PiiMatch] = []  # non-overlapping and sorted by start, hence by end too
    starts: list[int] = []
    for match in sorted(found, key=lambda m: (_RANK[m.type], m.start - m.end, m.start)):
        index = bisect.bisect_right(starts, match.start)
        if index and kept[index - 1].end > match.start:
            continue
        if index < len(kept) and kept[index].start < match.end:
            continue
        kept.insert(index, match)
        starts.insert(index, match.start)
    return kept


def _find(text: str, wanted: frozenset[str]) -> list[PiiMatch]:
    return _resolve_overlaps(_candidates(text, wanted)) if text else []


def find_pii(text: str, types: Iterable[str] = PII_TYPES) -> list[PiiMatch]:
    """Non-overlapping matches sorted by start; where two overlap keep the more specific (secret > card >
    iban > national_id > email > ip > phone) or the longer."""
    return _find(text, _wanted(types))


def redact(text: str, matches: list[PiiMatch]) -> str:
    """Replace each match with its tag: <EMAIL>, <PHONE>, <CARD>, <IBAN>, <IP>, <NATIONAL_ID>, <SECRET>.

    `matches` must come from `find_pii(text)` (non-overlapping); their order does not matter.
    """
    pieces, cursor = [], 0
    for match in sorted(matches, key=lambda m: m.start):
        pieces += [text[cursor : match.start], _TAGS[match.type]]
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _walk(value: Any, wanted: frozenset[str], action_redact: bool, counts: Counter) -> Any:
    """Count matches in every string inside `value`; return the redacted copy when `action_redact`."""
    if isinstance(value, str):
        matches = _find(value, wanted)
        counts.update(match.type for match in matches)
        return redact(value, matches) if action_redact and matches else value
    if isinstance(value, dict):
        return {key: _walk(item, wanted, action_redact, counts) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, wanted, action_redact, counts) for item in value]
    return value


def scrub(value: Any, types: Iterable[str], action_redact: bool) -> tuple[Any, Counter]:
    """Walk a row value (str, or nested dict/list of them; other types untouched), count matches per type,
    and when action_redact is True return a copy with every string redacted; otherwise return the value
    unchanged. The Counter maps type -> number of matches."""
    counts: Counter = Counter()
    walked = _walk(value, _wanted(types), action_redact, counts)
    return (walked if action_redact else value), counts
