"""Personal data in a profile: which columns hold it (by name, by the full-table pattern counts,
or by validators over a reproducible sample) and what of them the profile shows.

Displayed values (min, max, top values) are masked by shared.security.pii: emails, IBANs, card
numbers, national ids and phone numbers inside text, and whole values of personal-data columns.
A personal-data column is one whose name announces it, or whose content is mostly such values:
emails or phones by the full-table pattern counts, card numbers, IBANs or national ids by
shared.security.pii's validators over a reproducible sample (PII_SAMPLE_ROWS). Of such a column
the profile keeps counts only: every statistic that is, or is computed close to, a value of the
column (mean, std, skewness, quantiles, histogram edges and buckets) is withheld (null or
empty), and it takes no part in correlations (docs/security.md, docs/profile-schema.md).
"""
from __future__ import annotations

import duckdb

from shared.security import pii as pii_policy
from shared.security.pii import mask_value, pii_kind_of_name

from .columns import QUANTILES, key_of
from .sql import is_integer_type, share

PII_SAMPLE_ROWS = pii_policy.CONTENT_SAMPLE
PII_SAMPLE_SEED = 42
# Integer columns at least this large somewhere may hold card numbers (13+ digits).
CARD_MIN_MAGNITUDE = 10 ** 12
# What is withheld of a personal-data column, by kind.
PII_WITHHELD = {"numeric": ("mean", "std", "skewness", "quantiles", "histogram"),
                "temporal": ("histogram", "histogram_unit")}


def classify_pii(con: duckdb.DuckDBPyConnection, source: str, cols: list[dict], first: dict, rows: int,
                 policy: pii_policy.Policy = pii_policy.DEFAULT_POLICY) -> None:
    """Mark personal-data columns: col["pii"] = {kind, found_by: name | content, share}.
    By name (shared.security.pii.pii_kind_of_name); else by content: emails and phones from the exact
    pattern counts of the first pass, card numbers, IBANs and national ids by shared.security.pii's
    validators over one reproducible reservoir sample of the candidate columns (strings, and
    integers reaching 13 digits)."""
    candidates = [col for col in cols if _classify_without_sample(col, first)]
    if candidates and rows:
        _classify_by_sample(con, source, candidates, rows, policy)


def _classify_without_sample(col: dict, first: dict) -> bool:
    """Mark the column by its name or pattern counts; True when its values are to be sampled."""
    named = pii_kind_of_name(col["name"])
    if named:
        col["pii"] = {"kind": named, "found_by": "name", "share": None}
        return False
    key = key_of(col)
    count = first.get(key + "count") or 0
    if not count:
        return False
    if col["is_varchar"]:
        for kind in ("email", "phone"):  # the sample's verdict, if any, replaces this
            found = share(first.get(key + "pat_" + kind), count)
            if found and found > pii_policy.CONTENT_SHARE:
                col["pii"] = {"kind": kind, "found_by": "content", "share": found}
                break
        return True
    if is_integer_type(col["type"]) or col["type"].upper().startswith("DECIMAL"):
        values = [v for v in (first.get(key + "min"), first.get(key + "max")) if v is not None]
        return bool(values) and max(abs(v) for v in values) >= CARD_MIN_MAGNITUDE
    return False


def _classify_by_sample(con: duckdb.DuckDBPyConnection, source: str, candidates: list[dict], rows: int,
                        policy: pii_policy.Policy) -> None:
    select = ", ".join(c["ident"] for c in candidates)
    sample = f" USING SAMPLE reservoir({PII_SAMPLE_ROWS} ROWS) REPEATABLE ({PII_SAMPLE_SEED})" \
        if rows > PII_SAMPLE_ROWS else ""
    found = con.execute(f"SELECT {select} FROM {source}{sample}").fetchall()
    for index, col in enumerate(candidates):
        values = [row[index] for row in found]
        if col["type"].upper().startswith("DECIMAL"):
            values = [int(v) if v is not None and v == int(v) else None for v in values]
        result = pii_policy.classify_values(values, policy=policy)
        if result:
            col["pii"] = {"kind": result[0], "found_by": "content", "share": result[1]}


def mask_shown_values(col: dict, policy: pii_policy.Policy = pii_policy.DEFAULT_POLICY) -> None:
    """Mask min, max and top values: wholly for a personal-data column (by name or content),
    else the emails, IBANs, card numbers, national ids and phone numbers inside text values."""
    kind = (col.get("pii") or {}).get("kind")
    if not kind and col["kind"] not in ("categorical", "text"):
        return
    for key in ("min", "max"):
        if col.get(key) is not None:
            col[key] = mask_value(col[key], kind, policy)
    for item in col.get("top_k") or []:
        item["value"] = mask_value(item["value"], kind, policy)
    if kind:
        col["masked"] = kind


def withhold_pii_statistics(col: dict) -> None:
    """Of a personal-data column keep counts only: the statistics PII_WITHHELD names become
    null (quantiles: each null; histograms: empty)."""
    if not col.get("pii"):
        return
    withheld = [key for key in PII_WITHHELD.get(col["kind"], ()) if key in col]
    for key in withheld:
        if key == "histogram":
            col[key] = []
        elif key == "quantiles":
            col[key] = dict.fromkeys(QUANTILES)
        else:
            col[key] = None
    col["pii"]["withheld"] = withheld
