"""functions/analyze/profile/masking.py: which columns hold personal data (by name, by pattern
counts, by validators over a sample) and what of them a profile shows."""
from __future__ import annotations

import duckdb
import pytest

from functions.analyze.profile import masking, profile_table

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def profiles():
    con = duckdb.connect()
    con.execute("""CREATE TABLE people AS SELECT i AS n, 'user' || i || '@example.com' AS contact,
                   4111111111111111::BIGINT AS card, (1000 + i)::DOUBLE AS amount,
                   'note with bob@example.com' AS note, 'Ada ' || i AS full_name,
                   DATE '2000-01-01' + INTERVAL (i) DAY AS birth_date, 123456789012345::BIGINT AS big_number
                   FROM range(50) r(i)""")
    profile = profile_table(con, "people")
    con.close()
    return {c["name"]: c for c in profile["column_profiles"]}


def test_found_by_content(profiles):
    assert profiles["contact"]["pii"] == {"kind": "email", "found_by": "content", "share": 1.0, "withheld": []}
    assert profiles["card"]["pii"] == {"kind": "card_number", "found_by": "content", "share": 1.0,
                                       "withheld": ["mean", "std", "skewness", "quantiles", "histogram"]}
    # 15 digits that fail the Luhn check: sampled, and not a card number.
    assert profiles["big_number"].get("pii") is None


def test_found_by_name(profiles):
    assert profiles["full_name"]["pii"] == {"kind": "person_name", "found_by": "name", "share": None, "withheld": []}
    assert profiles["birth_date"]["pii"] == {"kind": "birth_date", "found_by": "name", "share": None,
                                             "withheld": ["histogram", "histogram_unit"]}


def test_personal_columns_show_counts_only(profiles):
    card = profiles["card"]
    assert (card["masked"], card["min"], card["max"]) == ("card_number", "4***", "4***")
    assert card["mean"] is None and card["std"] is None and card["skewness"] is None and card["histogram"] == []
    assert set(card["quantiles"].values()) == {None}
    assert card["count"] == 50
    assert [t["value"] for t in profiles["contact"]["top_k"]][:2] == ["u***@example.com", "u***@example.com"]
    assert (profiles["full_name"]["min"], profiles["birth_date"]["max"]) == ("A***", "2***")
    assert profiles["birth_date"]["histogram"] == []


def test_other_columns_keep_their_values_and_text_is_masked_inside(profiles):
    amount = profiles["amount"]
    assert amount.get("pii") is None and "masked" not in amount
    assert (amount["min"], amount["max"], amount["mean"]) == (1000.0, 1049.0, 1024.5)
    note = profiles["note"]
    assert note.get("pii") is None and "masked" not in note
    assert note["min"] == note["max"] == "note with b***@example.com"


def test_mask_shown_values_and_withhold_on_plain_dicts():
    numeric = {"kind": "numeric", "min": 5, "max": 9, "top_k": [{"value": 5, "count": 2}]}
    masking.mask_shown_values(numeric)
    assert numeric == {"kind": "numeric", "min": 5, "max": 9, "top_k": [{"value": 5, "count": 2}]}
    masking.withhold_pii_statistics(numeric)
    assert "pii" not in numeric
    salary = {"kind": "numeric", "min": 1200, "max": 9000, "mean": 4000.0, "quantiles": {"p50": 3900.0},
              "histogram": [{"lo": 1200, "hi": 9000, "count": 3}], "pii": {"kind": "salary"}}
    masking.mask_shown_values(salary)
    masking.withhold_pii_statistics(salary)
    assert (salary["min"], salary["max"], salary["masked"]) == ("1***", "9***", "salary")
    assert salary["mean"] is None and salary["histogram"] == []
    assert salary["quantiles"] == {"p05": None, "p25": None, "p50": None, "p75": None, "p95": None}
    assert salary["pii"]["withheld"] == ["mean", "quantiles", "histogram"]
