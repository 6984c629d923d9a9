"""PII masking: known inputs, known masked outputs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from shared.pii import mask_frame, mask_text, mask_value, pii_columns, pii_kind_of_name

pytestmark = [pytest.mark.unit, pytest.mark.security]


@pytest.mark.parametrize("text,masked", [
    ("john.doe@example.com", "j***@example.com"),
    ("write to Ann.Lee+x@mail.example.co.uk today", "write to A***@mail.example.co.uk today"),
    ("call +1 555 123 4567 now", "call *** now"),
    ("(555) 123-4567", "***"),
    ("555-123-4567", "***"),
    ("+4915112345678", "***"),
    ("+44 20 7946 0958", "***"),
    ("2024-01-15", "2024-01-15"),          # dates are not phones
    ("15.01.2024 10:30", "15.01.2024 10:30"),
    ("1234.5678", "1234.5678"),            # decimals are not phones
    ("order 123456789", "order 123456789"),  # bare digit runs are ids, not phones
    ("SKU-0042", "SKU-0042"),
    ("no pii here", "no pii here"),
])
def test_mask_text(text, masked):
    assert mask_text(text) == masked
    assert mask_text(masked) == masked  # idempotent


@pytest.mark.parametrize("name,kind", [
    ("first_name", "person_name"), ("LastName", "person_name"), ("Customer Name", "person_name"),
    ("surname", "person_name"), ("email", "email"), ("E-Mail", "email"), ("contact_email", "email"),
    ("phone", "phone"), ("mobile_number", "phone"), ("ssn", "national_id"), ("passport_number", "national_id"),
    ("iban", "financial"), ("credit_card_number", "financial"), ("date_of_birth", "birth_date"),
    ("dob", "birth_date"), ("street_address", "address"), ("ip_address", "ip_address"),
    ("amount", None), ("region", None), ("product_name", None), ("name", None), ("phone_count", None),
    ("hotel", None), ("tinfoil", None), ("order_id", None),
])
def test_column_names_that_announce_personal_data(name, kind):
    assert pii_kind_of_name(name) == kind


def test_mask_value_rules():
    assert mask_value("Ada Lovelace", "person_name") == "A***"
    assert mask_value("A***", "person_name") == "A***"
    assert mask_value(5551234567, "phone") == "5***"          # numbers in a phone column too
    assert mask_value("ann@example.org", "email") == "a***@example.org"  # shape kept when recognised
    assert mask_value("not-an-address", "email") == "n***"
    assert mask_value(42, None) == 42
    assert mask_value(None, "person_name") is None


def test_mask_frame_known_answer():
    df = pd.DataFrame({
        "customer_name": ["Ada Lovelace", "Alan Turing", None, "Ada Lovelace"],
        "note": ["mail a@b.com", "call 555-123-4567", "plain", None],
        "region": ["north", "south", "north", "east"],
        "amount": [1.5, float("nan"), 3.0, 4.0],
        "phone": [5551234567, 5557654321, 1, 2],
    })
    masked = mask_frame(df)
    assert masked["customer_name"].tolist() == ["A***", "A***", None, "A***"]
    assert masked["note"].tolist() == ["mail a***@b.com", "call ***", "plain", None]
    assert masked["region"].tolist() == ["north", "south", "north", "east"]
    assert masked["amount"].tolist()[0] == 1.5 and math.isnan(masked["amount"].tolist()[1])
    assert masked["phone"].tolist() == ["5***", "5***", "1***", "2***"]
    assert df["customer_name"][0] == "Ada Lovelace"  # the input is untouched
    assert pii_columns(df.columns) == {"customer_name": "person_name", "phone": "phone"}
    assert mask_frame(masked)["note"].tolist() == masked["note"].tolist()  # idempotent


def test_mask_frame_keeps_unhashable_values_working():
    df = pd.DataFrame({"tags": [["a@b.com"], None], "email": ["x@y.io", "z@y.io"]})
    masked = mask_frame(df)
    assert masked["email"].tolist() == ["x***@y.io", "z***@y.io"]
    assert masked["tags"].tolist()[1] is None


def test_mask_rows_of_a_query_result():
    from shared.pii import mask_rows

    rows, changed = mask_rows(["customer_name", "contact", "total"],
                              [["Ada Lovelace", "ada@example.org", 10], [None, "call 555-123-4567", 2.5]])
    assert rows == [["A***", "a***@example.org", 10], [None, "call ***", 2.5]] and changed is True
    assert mask_rows(["region", "n"], [["north", 1]]) == ([["north", 1]], False)
