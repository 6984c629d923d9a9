"""PII masking (shared/security/pii.py, issue 5): the policy's cases, and every artifact of a job over a
table full of personal data — profile, top-k values, ydata-profiling and Evidently reports,
KPIs, charts, summary — searched for each raw value."""
from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest

from shared.core import events
from shared.security import pii
from shared.serving.embedded import Dispatcher
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id
from tests.conftest import REPO

pytestmark = pytest.mark.security
ROWS = 120


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card(i: int, prefix: str = "453914") -> str:
    body = f"{prefix}{i:09d}"
    return body + luhn_digit(body)


def not_a_card(i: int) -> str:
    """A 16-digit number one off its Luhn digit: an order number, not a card."""
    valid = card(i, "700123")
    return valid[:-1] + str((int(valid[-1]) + 1) % 10)


def iban(i: int) -> str:
    """A valid GB IBAN (ISO 13616 mod-97 check digits)."""
    bban = f"WEST{12345600 + i:08d}{765432 % 1_000_000:06d}"
    rearranged = bban + "GB00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    return f"GB{98 - number % 97:02d}{bban}"


def test_the_generated_fixtures_are_valid():
    assert card(0)[-1] == luhn_digit(card(0)[:-1])
    value = iban(7)
    moved = value[4:] + value[:4]
    assert int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# ---------------------------------------------------------------- the policy's cases

@pytest.mark.parametrize("text,hidden,kept", [
    ("mail ada.lovelace@example.com now", "ada.lovelace@example.com", "a***@example.com"),
    ("call +44 20 7946 0958 today", "7946 0958", "call *** today"),
    ("ring (415) 555-0132", "555-0132", "ring ***"),
    ("order 2024-01-15 of 3 items", None, "2024-01-15"),      # a date is not a phone
    ("invoice 1234567", None, "1234567"),                     # a bare id is not a phone
])
def test_emails_and_phones_in_any_text_are_masked(text, hidden, kept):
    masked = pii.mask_text(text)
    if hidden:
        assert hidden not in masked
    assert kept in masked


@pytest.mark.parametrize("column,value,expected", [
    ("customer_name", "Ada Lovelace", "A***"),
    ("First Name", "Grace", "G***"),
    ("ssn", "078-05-1120", "0***"),
    ("iban", "GB82WEST12345698765432", "G***"),
    ("card_number", "4539148803436467", "4***"),
    ("date_of_birth", "1815-12-10", "1***"),
    ("email", "ada@example.com", "a***@example.com"),
])
def test_columns_named_as_personal_data_are_masked_whole(column, value, expected):
    assert pii.mask_value(value, pii.pii_kind_of_name(column)) == expected


def test_luhn_valid_card_numbers_in_text_are_masked_and_invalid_ones_kept():
    valid, invalid = card(42), card(42)[:-1] + str((int(card(42)[-1]) + 1) % 10)
    spaced = " ".join(valid[i:i + 4] for i in range(0, 16, 4))
    for shown in (valid, spaced, spaced.replace(" ", "-")):
        assert shown not in pii.mask_text(f"paid with {shown} yesterday")
    assert invalid in pii.mask_text(f"order number {invalid}")  # not a card: the check digit is wrong


def test_ibans_with_a_valid_checksum_are_masked_and_others_kept():
    valid = iban(3)
    broken = valid[:2] + f"{(int(valid[2:4]) + 1) % 100:02d}" + valid[4:]
    grouped = " ".join(valid[i:i + 4] for i in range(0, len(valid), 4))
    for shown in (valid, grouped):
        assert shown not in pii.mask_text(f"transfer to {shown} please")
    assert broken in pii.mask_text(f"reference {broken}")


def test_national_ids_follow_a_configurable_pattern():
    setting = next((f for f in fields(Settings) if "NATIONAL" in f.metadata["env"]), None)
    assert setting is not None, "no UDB_*NATIONAL* setting for the national-id pattern"

    def policy(value: str) -> pii.Policy:  # the caller's Settings decide, never the environment
        return pii.Policy.of(Settings.from_env(env={setting.metadata["env"]: value}))

    ssn = policy(r"\b\d{3}-\d{2}-\d{4}\b")
    assert "078-05-1120" not in pii.mask_text("ssn 078-05-1120 on file", ssn)
    assert "078-05-112" in pii.mask_text("ref 078-05-112 only", ssn)
    # Named patterns (a JSON object) replace the defaults; `{}` turns national ids off.
    bsn = policy(json.dumps({"nl_bsn_dotted": r"\b\d{4}\.\d{2}\.\d{3}\b"}))
    assert pii.mask_text("bsn 1234.56.782 ok", bsn) == "bsn *** ok"
    assert pii.mask_text("nino AB123456C", bsn) == "nino AB123456C"  # a default pattern, replaced
    assert pii.mask_text("nino AB123456C", policy("")) == "nino ***"  # the defaults: us_ssn, uk_nino, ...
    assert pii.mask_text("nino AB123456C") == "nino ***"  # no policy given: the defaults
    assert pii.mask_text("bsn 1234.56.782", policy("{}")) == "bsn 1234.56.782"
    # A pattern that does not compile, or matches nothing at all, stops the process at start.
    for bad in ("([", json.dumps({"x": "a*"}), json.dumps({"x": 5}), "{not json"):
        with pytest.raises(Exception, match="UDB_PII_NATIONAL_IDS"):
            Settings.from_env(env={setting.metadata["env"]: bad})


# ---------------------------------------------------------------- what leaves the warehouse

def write_people(path: Path, rows: int = ROWS) -> dict[str, list[str]]:
    """A table of personal data; returns the raw values by kind (what no artifact may show).
    Some columns say what they hold by name (card_number, iban, ssn, date_of_birth); others
    only by content (pay_ref: card numbers read as BIGINT, payee: IBANs, tax_ref: SSNs, memo:
    cards and IBANs inside free text). order_no holds 16-digit numbers that fail Luhn: not
    personal data, so they stay as they are."""
    raw = {"name": [], "email": [], "phone": [], "card": [], "iban": [], "ssn": [], "dob": [],
           "pay_ref": [], "payee": [], "tax_ref": [], "memo_card": [], "memo_iban": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "customer_name", "email", "phone", "card_number", "iban", "ssn", "date_of_birth",
                      "pay_ref", "payee", "tax_ref", "memo", "order_no", "note", "amount", "region"])
        for i in range(rows):
            values = {"name": f"Zelda Quixotewhistle{i:03d}", "email": f"zelda.q{i:03d}@example-corp.com",
                      "phone": f"+44 20 7946 {i:04d}", "card": card(i), "iban": iban(i), "ssn": f"078-05-{1000 + i}",
                      "dob": f"19{31 + i % 60}-0{1 + i % 9}-{13 + i % 15}", "pay_ref": card(i, "545454"),
                      "payee": iban(500 + i), "tax_ref": f"219-09-{2000 + i}", "memo_card": card(i, "601100"),
                      "memo_iban": iban(900 + i)}
            for kind, value in values.items():
                raw[kind].append(value)
            grouped = " ".join(values["memo_card"][k:k + 4] for k in range(0, 16, 4))
            memo = f"paid by card {grouped}, refund to {values['memo_iban']}"
            note = f"call {values['phone']} or write to {values['email']}"
            out.writerow([i, values["name"], values["email"], values["phone"], values["card"], values["iban"],
                          values["ssn"], values["dob"], values["pay_ref"], values["payee"], values["tax_ref"], memo,
                          not_a_card(i), note, (i % 50) * 1.5, ["north", "south", "east"][i % 3]])
    return raw


def run_analysis(settings, hint: str) -> tuple[dict, object]:
    dispatcher = Dispatcher(settings)
    job_id = new_job_id()
    dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant="acme", job_id=job_id,
                                         function="test"))
    ctx = dispatcher.context("cli")
    return ctx.jobs("acme").get(job_id), ctx


@pytest.fixture(scope="module")
def analysed_people(tmp_path_factory):
    """Two analyses of the same table of personal data (the second has a drift reference, so
    Evidently runs too): (raw values by kind, [(artifact name, bytes)])."""
    tmp = tmp_path_factory.mktemp("pii")
    settings = Settings.from_env(env={}, home=tmp / "udb", eventing_dir=REPO / "eventing",
                                 profile_sample_rows=5_000, log_level="WARNING")
    path = tmp / "crm" / "people.csv"
    raw = write_people(path)
    first, ctx = run_analysis(settings, str(path))
    second, _ = run_analysis(settings, str(path))
    assert first["state"] == "completed" and second["state"] == "completed", (first["error"], second["error"])
    store = ctx.tenant_store("acme")
    artifacts = [(info.key.rsplit("/", 1)[-1], store.get(info.key).data)
                 for doc in (first, second) for info in store.list(f"artifacts/{doc['job_id']}/")]
    return raw, artifacts


def _profile(artifacts) -> dict:
    return json.loads(next(data for name, data in artifacts if name.startswith("profile-") and name.endswith(".json")))


def test_personal_data_columns_are_found_by_name_and_by_content(analysed_people):
    _, artifacts = analysed_people
    columns = {c["name"]: c for c in _profile(artifacts)["column_profiles"]}
    expected = {"customer_name": ("person_name", "name"), "email": ("email", "name"), "phone": ("phone", "name"),
                "card_number": ("financial", "name"), "iban": ("financial", "name"), "ssn": ("national_id", "name"),
                "date_of_birth": ("birth_date", "name"), "pay_ref": ("card_number", "content"),
                "payee": ("iban", "content"), "tax_ref": ("national_id", "content")}
    for name, (kind, found_by) in expected.items():
        info = columns[name].get("pii") or {}
        assert (info.get("kind"), info.get("found_by")) == (kind, found_by), (name, info)
        assert columns[name]["masked"] == kind
    assert columns["pay_ref"]["type"] == "BIGINT" and columns["pay_ref"]["pii"]["share"] == 1.0
    for name in ("id", "memo", "note", "order_no", "amount", "region"):
        assert "pii" not in columns[name] and "masked" not in columns[name], name


def test_numeric_statistics_of_personal_data_columns_show_no_real_values(analysed_people):
    raw, artifacts = analysed_people
    profile = _profile(artifacts)
    columns = {c["name"]: c for c in profile["column_profiles"]}
    for name in ("pay_ref", "card_number"):
        col = columns[name]
        if col["kind"] != "numeric":
            continue
        # Counts stay; every statistic that is (or sits close to) a value is withheld.
        assert col["count"] == ROWS and col["distinct"] == ROWS and col["nulls"] == 0
        assert col["mean"] is None and col["std"] is None and col["skewness"] is None
        assert set(col["quantiles"].values()) == {None} and col["histogram"] == []
        assert col["min"] == col["max"] == col["min"][0] + "***"
        assert col["pii"]["withheld"] == ["mean", "std", "skewness", "quantiles", "histogram"]
        assert name not in profile["correlations"]["columns"]
    dob = columns["date_of_birth"]
    assert dob["kind"] == "temporal" and dob["histogram"] == [] and dob["histogram_unit"] is None
    # The order numbers fail Luhn: not cards, their statistics stay (no false positive).
    order_no = columns["order_no"]
    assert order_no["min"] == int(min(not_a_card(i) for i in range(ROWS))) and order_no["histogram"]
    for name, data in artifacts:
        if name.startswith("profile-") and name.endswith(".json"):
            for kind in ("card", "pay_ref", "dob"):
                assert not [v for v in raw[kind] if v.encode() in data], (name, kind)


def test_default_kpis_never_group_add_up_or_date_by_personal_data(analysed_people):
    _, artifacts = analysed_people
    kpis = json.loads(next(data for name, data in artifacts if name.startswith("kpis-") and name.endswith(".json")))
    sql = " ".join(k["sql"] for k in kpis)
    assert "freshness" not in {k["name"] for k in kpis}  # date_of_birth is the only date: no freshness
    for column in ("date_of_birth", "pay_ref", "card_number", "customer_name"):
        assert f'"{column}"' not in sql.replace(f'"{column}" IS NULL', "")
    assert any(k["name"] == "sum_amount_by_region" for k in kpis)


def test_no_artifact_of_a_job_shows_a_raw_personal_value(analysed_people):
    raw, artifacts = analysed_people
    names = []
    for name, data in artifacts:
        names.append(name)
        for kind, values in raw.items():
            leaked = [v for v in values if v.encode() in data]
            assert leaked == [], f"{name} shows raw {kind} values, e.g. {leaked[:3]}"
            if kind in ("memo_card", "card", "pay_ref"):
                grouped = [" ".join(v[k:k + 4] for k in range(0, 16, 4)) for v in values]
                assert not [v for v in grouped if v.encode() in data], name
        assert b"zelda.q" not in data and b"Quixotewhistle" not in data  # not even a part
    kinds = " ".join(names)
    for kind in ("profile-", "ydata", "quality-", "drift", "kpis-", "chart-", "summary", "index.json"):
        assert kind in kinds, (kind, names)
