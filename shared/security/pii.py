"""PII masking for everything that leaves the warehouse (profiles, sampled reports, charts,
KPI results).

The rules, all deterministic so the same input always masks the same way (a drift check
compares masked reference data with masked current data):

- inside any text: an email address keeps its first character and its domain
  ("john.doe@example.com" -> "j***@example.com"); an IBAN (ISO 13616: a known country, that
  country's length, mod-97 check digits), a payment card number (13-19 digits, contiguous or
  in the printed groups 4-4-4-4(-3), 4-6-5, 4-6-4, separated by spaces or dashes, with a valid
  Luhn check digit), a national id (a configurable list of named patterns,
  `UDB_PII_NATIONAL_IDS`; defaults in DEFAULT_NATIONAL_IDS) and a phone number each become
  "***"; phone numbers written in international form ("+44 7700 900123", "+33 6 12 34 56 78",
  "+49 30 1234567": any grouping libphonenumber accepts as a possible number of the country
  code) are found by the `phonenumbers` library. Numbers that fail the checksum (a 16-digit order number whose last digit is not its
  Luhn digit, a reference shaped like an IBAN with wrong check digits) are kept;
- a column whose *name* says it holds personal data (a person's name, an address, a national
  id, a card number, a date of birth, ...) or whose *content* is mostly personal data (most
  sampled values are, whole, emails, phones, card numbers, IBANs or national ids: `classify_values`,
  by the same validators) has every value replaced by its first character and "***"
  ("Ada Lovelace" -> "A***"); in an email or phone column a value the text rules recognise
  keeps that shape instead ("a***@example.com", "***").

Counts computed in the warehouse are never masked; only the values shown are. What a profile
keeps of a personal-data column is decided in functions/analyze/profile/masking.py (docs/security.md).
A pandas frame is masked by functions/reports/engines.py::mask_frame with these rules: this
module, which every function imports, never imports pandas (the writer and analyze images have none).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable

from shared.core.settings import DEFAULT_NATIONAL_IDS, parse_national_ids  # noqa: F401  (re-exported)

MASK = "***"

# local@domain.tld -> first character of the local part + "***@domain.tld".
EMAIL_RE = re.compile(r"([A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
# "(area) 123-4567" with an optional +country code, "+cc 20 7946 0958", three or more digit
# groups ("555-123-4567"), E.164 "+15551234567"; 7 to 15 digits in all, and at least 9 for the
# plain grouped form without "+" or brackets ("078-05-112" is a reference, not a phone; checked
# in _mask_phone). Bare digit runs are left alone: they are far more often ids or amounts.
PHONE_RE = re.compile(
    r"(?<![\w.+-])(?:"
    r"(?:\+\d{1,3}[ .-]?)?\(\d{1,4}\)[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,3}"
    r"|\+\d{1,3}[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\d{2,4}(?:[ .-]\d{2,4}){2,4}"
    r"|\+\d{7,15}"
    r")(?![\w-]|\.\d)"
)
PLAIN_PHONE_MIN_DIGITS = 9
# Dates look like digit groups too (2024-01-15, 15.01.2024): never masked as phones.
DATE_LIKE_RE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")

# Payment cards: 13-19 digits, contiguous or printed in groups (one separator, space or dash,
# used throughout): 4-4-4-4 with an optional 1-3 digit tail (16-19 digits), 4-4-4-1..3
# (13-15), 4-6-5 (American Express), 4-6-4 (Diners). The Luhn check decides (card_number_ok).
CARD_RE = re.compile(
    r"(?<![\w+])(?:"
    r"\d{13,19}"
    r"|\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)(?:\d{4}(?:(?P=s)\d{1,3})?|\d{1,3})"
    r"|\d{4}(?P<t>[ -])\d{6}(?P=t)\d{4,5}"
    r")(?![\w]|[.,]\d)"
)
# ISO 13616 IBAN lengths by country (the SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# Where an IBAN may start: two letters and two check digits at the start of a word. The rest is
# read by _iban_end: electronic form (no spaces) or print form (groups of four, one space).
IBAN_START_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")

# National ids: the default of UDB_PII_NATIONAL_IDS (DEFAULT_NATIONAL_IDS) and the parser of its
# value live in shared/core/settings.py, which validates the setting at start.
NATIONAL_IDS_SETTING = "UDB_PII_NATIONAL_IDS"

# Column names that say the values are personal data, by kind. Matched on the name's
# lower-cased, separator-normalised form ("First Name" -> "first_name"), whole words only.
NAME_KINDS = {
    # Most specific first: "ip_address" is an IP address, not a postal one.
    "ip_address": r"ip|ip_?address|ipv4|ipv6",
    "person_name": r"(first|last|full|given|family|middle|maiden|customer|contact|user|person|account_holder|holder)"
                   r"_?name|surname|forename",
    "email": r"e_?mail(_?address)?|mail_?address",
    "phone": r"phone(_?number)?|mobile(_?number)?|telephone|tel|fax|msisdn|cell_?phone",
    "address": r"(street|home|postal|mailing|billing|shipping)_?address|street|address(_?line_?\d)?|addr",
    "national_id": r"ssn|social_security(_?number)?|national_?id|passport(_?number)?|tax_?id|tin|nin|"
                   r"driver_?licen[cs]e(_?number)?|id_?card(_?number)?",
    "financial": r"iban|credit_?card(_?number)?|card_?number|cc_?number|account_?number|bank_?account",
    "birth_date": r"date_?of_?birth|birth_?date|birthdate|dob|birthday",
}
_NAME_RES = {kind: re.compile(rf"(^|_)({pattern})$") for kind, pattern in NAME_KINDS.items()}
# Kinds found by content (classify_values).
CONTENT_KINDS = ("email", "phone", "card_number", "iban", "national_id")
# In a column of one of these kinds a value the text rules recognise keeps that shape
# ("a***@example.com", "***") instead of "<first character>***".
SHAPED_KINDS = ("email", "phone")
# A column is personal data by content when at least this share of its sampled non-null
# values is, whole, one kind (the profile's `pii` alert uses the same share).
CONTENT_SHARE = 0.5
# How many values of a column the content check looks at (profile, frames, KPI results).
CONTENT_SAMPLE = 1000


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def pii_kind_of_name(column: str) -> str | None:
    """The kind of personal data a column's name announces ('person_name', 'email', ...), or None."""
    normal = _normalise(column)
    for kind, pattern in _NAME_RES.items():
        if pattern.search(normal):
            return kind
    return None


def pii_columns(columns: Iterable[str]) -> dict[str, str]:
    """{column: kind} for the columns whose names announce personal data."""
    found = {}
    for column in columns:
        kind = pii_kind_of_name(column)
        if kind:
            found[column] = kind
    return found


# ---------------------------------------------------------------- validators

def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_number_ok(text: str) -> bool:
    """True when `text` (digits with optional spaces or dashes) is a plausible payment card
    number: 13-19 digits, not starting with 0, not one digit repeated, Luhn-valid."""
    digits = text.replace(" ", "").replace("-", "")
    return (13 <= len(digits) <= 19 and digits.isdigit() and digits[0] != "0"
            and digits.count(digits[0]) != len(digits) and luhn_ok(digits))


def iban_ok(text: str) -> bool:
    """True when `text` (spaces allowed) is an IBAN: a known country, its length, and the
    ISO 13616 / ISO 7064 mod-97 check (the rearranged number mod 97 is 1)."""
    compact = text.replace(" ", "").upper()
    if len(compact) < 5 or not compact.isascii() or not compact.isalnum():
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for ch in rearranged:
        remainder = (remainder * (100 if ch.isalpha() else 10) + int(ch, 36)) % 97
    return remainder == 1


def _iban_end(text: str, start: int) -> int | None:
    """Where an IBAN starting at `start` ends (electronic or print form), or None."""
    length = IBAN_LENGTHS.get(text[start:start + 2].upper())
    if not length:
        return None
    n = len(text)
    end = start + length  # electronic form: contiguous
    if end <= n and text[start:end].isalnum() and (end == n or not text[end].isalnum()):
        return end if iban_ok(text[start:end]) else None
    pos, collected = start + 4, 4  # print form: " XXXX" groups, the last one shorter
    while collected < length:
        need = min(4, length - collected)
        group = text[pos + 1:pos + 1 + need]
        if pos >= n or text[pos] != " " or len(group) != need or not group.isalnum():
            return None
        pos, collected = pos + 1 + need, collected + need
    if pos < n and text[pos].isalnum():
        return None
    return pos if iban_ok(text[start:pos]) else None


@functools.lru_cache(maxsize=8)
def _compiled_national_ids(raw: str) -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((name, re.compile(pattern)) for name, pattern in parse_national_ids(raw).items())


def national_id_patterns(raw: str = "") -> tuple[tuple[str, re.Pattern], ...]:
    """The (name, compiled pattern) pairs a UDB_PII_NATIONAL_IDS value names (empty: the
    defaults); compiled once per value."""
    return _compiled_national_ids(raw)


@dataclass(frozen=True)
class Policy:
    """What masking looks for beyond its fixed rules: the national-id patterns in force. Built
    from the caller's Settings (`Policy.of(settings)`), so two Settings in one process mask by
    their own patterns; nothing here reads the environment."""
    national_ids: tuple[tuple[str, re.Pattern], ...]

    @classmethod
    def of(cls, settings) -> "Policy":
        """The policy of these settings (shared.core.settings.Settings), built once per value."""
        return _policy(settings.pii_national_ids)


@functools.lru_cache(maxsize=8)
def _policy(raw: str) -> Policy:
    return Policy(national_id_patterns(raw))


# The policy of the declared defaults (Settings() with UDB_PII_NATIONAL_IDS empty): what a
# caller without Settings gets.
DEFAULT_POLICY = _policy("")


# ---------------------------------------------------------------- masking text

def _phone_ok(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15 or DATE_LIKE_RE.match(text):
        return False
    if "+" not in text and "(" not in text and digits < PLAIN_PHONE_MIN_DIGITS:
        return False
    return True


# International numbers ("+" and a country code, any national grouping): libphonenumber's
# matcher at POSSIBLE leniency (the length fits the country's plan). VALID would also check
# the number ranges in force and miss reserved ones such as the UK's 07700 900xxx, which are
# still somebody's number in a test data set; a false "***" costs less than a leaked number.
def _intl_phone_spans(value: str) -> list[tuple[int, int]]:
    import phonenumbers

    return [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
        value, None, leniency=phonenumbers.Leniency.POSSIBLE)]


def _mask_intl_phones(value: str) -> str:
    for start, end in reversed(_intl_phone_spans(value)):
        value = value[:start] + MASK + value[end:]
    return value


def is_intl_phone(text: str) -> bool:
    """True when the whole of `text` is one phone number in international form ("+33 6 12 34 56 78")."""
    return text.startswith("+") and _intl_phone_spans(text) == [(0, len(text))]


def _mask_phone(match: re.Match) -> str:
    return MASK if _phone_ok(match.group(0)) else match.group(0)


def _mask_card(match: re.Match) -> str:
    return MASK if card_number_ok(match.group(0)) else match.group(0)


def _mask_ibans(value: str) -> str:
    spans, last = [], -1
    for match in IBAN_START_RE.finditer(value):
        if match.start() < last:
            continue
        end = _iban_end(value, match.start())
        if end is not None:
            spans.append((match.start(), end))
            last = end
    for start, end in reversed(spans):
        value = value[:start] + MASK + value[end:]
    return value


def mask_text(value: str, policy: Policy = DEFAULT_POLICY) -> str:
    """Mask the emails, IBANs, card numbers, national ids and phone numbers inside one string;
    the rest is kept. Idempotent."""
    if "@" in value:
        value = EMAIL_RE.sub(r"\1***@\2", value)
    digits = sum(ch.isdigit() for ch in value)
    if digits >= 2 and len(value) >= 15:
        value = _mask_ibans(value)
    if digits >= 13:
        value = CARD_RE.sub(_mask_card, value)
    if digits:  # every national id holds digits
        for _, pattern in policy.national_ids:
            value = pattern.sub(MASK, value)
    if digits >= 7:
        if "+" in value:
            value = _mask_intl_phones(value)
        value = PHONE_RE.sub(_mask_phone, value)
    return value


# ---------------------------------------------------------------- what one value is

def value_kind(value, policy: Policy = DEFAULT_POLICY) -> str | None:
    """The kind of personal data a whole value is ('email', 'phone', 'card_number', 'iban',
    'national_id'), by the validators mask_text uses, or None. Integers are read as their digits
    (a card number stored as BIGINT)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        text = str(value)
        return "card_number" if card_number_ok(text) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 100:
        return None
    if "@" in text and EMAIL_RE.fullmatch(text):
        return "email"
    if text[:2].isalpha() and iban_ok(text):
        return "iban"
    if CARD_RE.fullmatch(text) and card_number_ok(text):
        return "card_number"
    for _, pattern in policy.national_ids:
        if pattern.fullmatch(text):
            return "national_id"
    if PHONE_RE.fullmatch(text) and _phone_ok(text) or is_intl_phone(text):
        return "phone"
    return None


def classify_values(values: Iterable, min_share: float = CONTENT_SHARE,
                    policy: Policy = DEFAULT_POLICY) -> tuple[str, float] | None:
    """(kind, share) when at least `min_share` of the non-null values are, whole, personal data
    of one kind (value_kind); else None. Give it a sample (CONTENT_SAMPLE values)."""
    counts: dict[str, int] = {}
    total = 0
    for value in values:
        if is_missing(value):
            continue
        total += 1
        kind = value_kind(value, policy)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    if not total or not counts:
        return None
    kind, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    share = count / total
    return (kind, share) if share >= min_share else None


def mask_whole(value) -> str:
    """A value of a personal-data column: its first character and '***' (idempotent)."""
    text = str(value)
    if not text or text.endswith(MASK) and len(text) <= len(MASK) + 1:
        return text
    return text[0] + MASK


def mask_value(value, kind: str | None = None, policy: Policy = DEFAULT_POLICY):
    """Mask one shown value: wholly for a personal-data column (`kind` set), else the
    emails, IBANs, card numbers, national ids and phone numbers inside it. Non-strings outside
    such columns pass through."""
    if value is None:
        return None
    if kind in SHAPED_KINDS and isinstance(value, str):
        # An address or number the text rules recognise keeps their shape (domain kept).
        masked = mask_text(value, policy)
        if masked != value or masked.endswith(MASK) or "***@" in masked:
            return masked
    if kind:
        return mask_whole(value)
    return mask_text(value, policy) if isinstance(value, str) else value


def is_missing(value) -> bool:
    """None, NaN or NaT."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):  # arrays and other values without a scalar comparison
        return False


def content_candidate(values) -> bool:
    """Whether a sample may be classified by content: it holds strings or integers."""
    return any(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values)


def content_kinds(columns: dict[str, list], policy: Policy = DEFAULT_POLICY) -> dict[str, str]:
    """{column: kind} for the columns whose sampled values are mostly personal data of one kind
    (classify_values); `columns` maps a name to a sample of its values."""
    found = {}
    for name, values in columns.items():
        result = classify_values(values, policy=policy)
        if result:
            found[name] = result[0]
    return found


def mask_rows(columns: list[str], rows: list[list], personal: Iterable[str] = (),
              policy: Policy = DEFAULT_POLICY) -> tuple[list[list], bool]:
    """Mask a query result (a KPI's): personal-data columns (by name, or by content: mostly
    card numbers, IBANs, ... of their values, or named in `personal`: computed from a
    personal-data column, shared.security.pii_lineage) wholly, the same text rules inside every other
    string. Returns (rows, whether anything changed)."""
    personal = set(personal)
    kinds = [pii_kind_of_name(c) for c in columns]
    for index, kind in enumerate(kinds):
        if kind is None and rows:
            sample = [row[index] for row in rows[:CONTENT_SAMPLE] if index < len(row)]
            result = classify_values(sample, policy=policy) if content_candidate(sample) else None
            if result:
                kinds[index] = result[0]
        if kinds[index] is None and columns[index] in personal:
            kinds[index] = "derived"  # reshaped personal data: wholly, "<first character>***"
    changed = False
    out = []
    for row in rows:
        masked = [v if v is None else mask_value(v, kind, policy) for v, kind in zip(row, kinds, strict=True)]
        if not changed and masked != list(row):
            changed = True
        out.append(masked)
    return out, changed
