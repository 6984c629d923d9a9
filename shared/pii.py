"""PII masking for everything that leaves the warehouse (profiles, sampled reports, charts).

Two rules, both deterministic so the same input always masks the same way (a drift check
compares masked reference data with masked current data):

- inside any text, an email address keeps its first character and its domain
  ("john.doe@example.com" -> "j***@example.com") and a phone number becomes "***";
- a column whose *name* says it holds personal data (a person's name, an address, a
  national id, a card number, a date of birth, ...) has every value replaced by its first
  character and "***" ("Ada Lovelace" -> "A***"), because such values have no shape a
  regular expression could find; in an email or phone column a value the text rules
  recognise keeps that shape ("a***@example.com").

Counts computed in the warehouse are never masked; only the values shown are.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import pandas as pd

MASK = "***"

# local@domain.tld -> first character of the local part + "***@domain.tld".
EMAIL_RE = re.compile(r"([A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
# "(area) 123-4567" with an optional +country code, "+cc 20 7946 0958", three or more digit
# groups ("555-123-4567"), E.164 "+15551234567"; 7 to 15 digits in all (checked in
# _mask_phone). Bare digit runs are left alone: they are far more often ids or amounts.
PHONE_RE = re.compile(
    r"(?<![\w.+-])(?:"
    r"(?:\+\d{1,3}[ .-]?)?\(\d{1,4}\)[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,3}"
    r"|\+\d{1,3}[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,4}"
    r"|\d{2,4}(?:[ .-]\d{2,4}){2,4}"
    r"|\+\d{7,15}"
    r")(?![\w-]|\.\d)"
)
# Dates look like digit groups too (2024-01-15, 15.01.2024): never masked as phones.
DATE_LIKE_RE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")

# Column names that say the values are personal data, by kind. Matched on the name's
# lower-cased, separator-normalised form ("First Name" -> "first_name"), whole words only.
NAME_KINDS = {
    # Most specific first: "ip_address" is an IP address, not a postal one.
    "ip_address": r"ip|ip_?address|ipv4|ipv6",
    "person_name": r"(first|last|full|given|family|middle|maiden|customer|contact|user|person|account_holder|holder)_?name|surname|forename",
    "email": r"e_?mail(_?address)?|mail_?address",
    "phone": r"phone(_?number)?|mobile(_?number)?|telephone|tel|fax|msisdn|cell_?phone",
    "address": r"(street|home|postal|mailing|billing|shipping)_?address|street|address(_?line_?\d)?|addr",
    "national_id": r"ssn|social_security(_?number)?|national_?id|passport(_?number)?|tax_?id|tin|nin|driver_?licen[cs]e(_?number)?|id_?card(_?number)?",
    "financial": r"iban|credit_?card(_?number)?|card_?number|cc_?number|account_?number|bank_?account",
    "birth_date": r"date_?of_?birth|birth_?date|birthdate|dob|birthday",
}
_NAME_RES = {kind: re.compile(rf"(^|_)({pattern})$") for kind, pattern in NAME_KINDS.items()}


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


def _mask_phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15 or DATE_LIKE_RE.match(text):
        return text
    return MASK


def mask_text(value: str) -> str:
    """Mask the emails and phone numbers inside one string; the rest is kept."""
    if "@" in value:
        value = EMAIL_RE.sub(r"\1***@\2", value)
    if sum(ch.isdigit() for ch in value) >= 7:
        value = PHONE_RE.sub(_mask_phone, value)
    return value


def mask_whole(value) -> str:
    """A value of a personal-data column: its first character and '***' (idempotent)."""
    text = str(value)
    if not text or text.endswith(MASK) and len(text) <= len(MASK) + 1:
        return text
    return text[0] + MASK


def mask_value(value, kind: str | None = None):
    """Mask one shown value: wholly for a personal-data column (`kind` set), else the
    emails and phone numbers inside it. Non-strings outside such columns pass through."""
    if value is None:
        return None
    if kind in ("email", "phone") and isinstance(value, str):
        # An address or number the text rules recognise keeps their shape (domain kept).
        masked = mask_text(value)
        if masked != value or masked.endswith(MASK) or "***@" in masked:
            return masked
    if kind:
        return mask_whole(value)
    return mask_text(value) if isinstance(value, str) else value


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):  # arrays and other values without a scalar comparison
        return False


def mask_frame(df: "pd.DataFrame") -> "pd.DataFrame":
    """A copy of df with PII masked: personal-data columns (by name) wholly, and emails and
    phone numbers inside every other text column. Numeric columns are left alone unless
    their name announces personal data. The input is not changed."""
    import pandas as pd

    out = df.copy()
    by_name = pii_columns(out.columns)
    for name in out.columns:
        column = out[name]
        kind = by_name.get(name)
        is_text = pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)
        if not kind and not is_text:
            continue
        try:
            # Mask each distinct value once: categories repeat a lot.
            uniques = column.dropna().unique()
            mapping = {v: mask_value(v, kind) for v in uniques}
        except TypeError:  # unhashable values (lists, dicts): one by one
            out[name] = pd.Series([v if _missing(v) else mask_value(v, kind) for v in column],
                                  index=column.index, dtype=object)
            continue
        if kind or any(mapping[v] != v for v in uniques):
            # Missing values (None, NaN, NaT) stay exactly as they were.
            out[name] = pd.Series([mapping.get(v, v) if not _missing(v) else v for v in column],
                                  index=column.index, dtype=object)
    return out


def mask_rows(columns: list[str], rows: list[list]) -> tuple[list[list], bool]:
    """Mask a query result (a KPI's): personal-data columns (by name) wholly, emails and
    phone numbers inside every other string. Returns (rows, whether anything changed)."""
    kinds = [pii_kind_of_name(c) for c in columns]
    changed = False
    out = []
    for row in rows:
        masked = [v if v is None else mask_value(v, kind) for v, kind in zip(row, kinds)]
        if not changed and masked != list(row):
            changed = True
        out.append(masked)
    return out, changed
