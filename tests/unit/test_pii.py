"""PII masking: known inputs, known masked outputs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from functions.reports.engines import mask_frame
from shared.security.pii import luhn_ok, mask_text, mask_value, pii_columns, pii_kind_of_name

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
    from shared.security.pii import mask_rows

    rows, changed = mask_rows(["customer_name", "contact", "total"],
                              [["Ada Lovelace", "ada@example.org", 10], [None, "call 555-123-4567", 2.5]])
    assert rows == [["A***", "a***@example.org", 10], [None, "call ***", 2.5]] and changed is True
    assert mask_rows(["region", "n"], [["north", 1]]) == ([["north", 1]], False)


# ---------------------------------------------------------------- cards, IBANs, national ids

def _luhn_complete(body: str) -> str:
    for digit in "0123456789":
        if luhn_ok(body + digit):
            return body + digit
    raise AssertionError(body)


VISA = _luhn_complete("453914880343646")      # 16 digits
AMEX = _luhn_complete("37828224631000")       # 15 digits, printed 4-6-5
ORDER = VISA[:-1] + str((int(VISA[-1]) + 3) % 10)  # one off the Luhn digit: an order number


@pytest.mark.parametrize("text,masked", [
    (f"card {VISA} ok", "card *** ok"),
    (f"card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} ok", "card *** ok"),
    (f"card {VISA[:4]}-{VISA[4:8]}-{VISA[8:12]}-{VISA[12:]}.", "card ***."),
    (f"amex {AMEX[:4]} {AMEX[4:10]} {AMEX[10:]}", "amex ***"),
    (f"order {ORDER}", f"order {ORDER}"),                       # fails Luhn: kept
    (f"order {VISA}7", f"order {VISA}7"),                       # 17 digits, fails Luhn: kept, no part masked
    (f"id{VISA}", f"id{VISA}"),                                 # glued to a word: an identifier
    ("0000 0000 0000 0000", "0000 0000 0000 0000"),             # one digit repeated: not a card
    (f"{VISA[:4]} {VISA[4:8]}-{VISA[8:12]} {VISA[12:]}", f"{VISA[:4]} {VISA[4:8]}-{VISA[8:12]} {VISA[12:]}"),
    ("amount 1234567890123.45", "amount 1234567890123.45"),     # a decimal, not a card
    ("IBAN GB82 WEST 1234 5698 7654 32 end", "IBAN *** end"),
    ("iban GB82WEST12345698765432.", "iban ***."),
    ("DE89370400440532013000", "***"),
    ("ref GB83WEST12345698765432", "ref GB83WEST12345698765432"),  # wrong check digits: kept
    ("ref XX82WEST12345698765432", "ref XX82WEST12345698765432"),  # no such country: kept
    ("ref GB82WEST1234569876543", "ref GB82WEST1234569876543"),    # one character short: kept
    ("ssn 078-05-1120.", "ssn ***."),
    ("NI number QQ 12 34 56 C", "NI number QQ 12 34 56 C"),    # QQ is never issued
    ("NI number AB 12 34 56 C", "NI number ***"),
    ("cf RSSMRA85T10A562S", "cf ***"),
    ("ref 078-05-112", "ref 078-05-112"),                      # 8 digits in groups: not a phone, not an SSN
])
def test_mask_text_cards_ibans_national_ids(text, masked):
    assert mask_text(text) == masked
    assert mask_text(masked) == masked


def test_ibans_of_many_countries_are_recognised():
    from faker import Faker

    from shared.security.pii import iban_ok

    for locale in ("en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_PT", "fi_FI", "de_AT",
                   "de_CH", "en_IE", "cs_CZ", "sk_SK", "tr_TR", "az_AZ"):
        fake = Faker(locale)
        fake.seed_instance(7)
        for _ in range(20):
            value = fake.iban()
            assert iban_ok(value), value
            assert mask_text(f"pay {value} now") == "pay *** now", value
            broken = value[:2] + f"{(int(value[2:4]) + 1) % 100:02d}" + value[4:]
            assert not iban_ok(broken)


def test_value_kinds_and_column_content():
    from shared.security.pii import classify_values, value_kind

    assert value_kind(VISA) == value_kind(int(VISA)) == "card_number"
    assert value_kind(ORDER) is None and value_kind(int(ORDER)) is None
    assert value_kind("GB82 WEST 1234 5698 7654 32") == "iban"
    assert value_kind("078-05-1120") == "national_id"
    assert value_kind("a@b.io") == "email" and value_kind("+44 20 7946 0958") == "phone"
    assert value_kind("north") is None and value_kind(True) is None and value_kind(3.5) is None
    cards = [int(_luhn_complete(f"4539{i:011d}")) for i in range(40)]
    assert classify_values(cards) == ("card_number", 1.0)
    assert classify_values(cards[:20] + [None] * 50 + list(range(19))) == ("card_number", 20 / 39)
    assert classify_values(cards[:10] + list(range(30))) is None      # a quarter: not a card column
    orders = [int(_luhn_complete(f"7001{i:011d}")) + 1 if i % 10 != 9 else 0 for i in range(100)]
    assert classify_values(orders) is None


def test_mask_frame_and_rows_find_personal_columns_by_content():
    cards = [int(_luhn_complete(f"4539{i:011d}")) for i in range(6)]
    df = pd.DataFrame({"ref": cards, "payee": ["DE89370400440532013000"] * 6, "qty": list(range(6)),
                       "order_no": [int(ORDER)] * 6, "memo": [f"card {VISA}"] * 6})
    masked = mask_frame(df)
    assert masked["ref"].tolist() == ["4***"] * 6                  # BIGINT card numbers: masked whole
    assert masked["payee"].tolist() == ["D***"] * 6                # IBANs: masked whole
    assert masked["qty"].tolist() == list(range(6)) and masked["order_no"].tolist() == [int(ORDER)] * 6
    assert masked["memo"].tolist() == ["card ***"] * 6
    from shared.security.pii import mask_rows

    rows, changed = mask_rows(["ref", "n"], [[c, 1] for c in cards])
    assert changed and [r[0] for r in rows] == ["4***"] * 6 and [r[1] for r in rows] == [1] * 6
    assert mask_rows(["order_no"], [[int(ORDER)]]) == ([[int(ORDER)]], False)
