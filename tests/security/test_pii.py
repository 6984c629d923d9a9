"""PII masking (shared/pii.py, issue 5): the policy's cases, and every artifact of a job over a
table full of personal data — profile, top-k values, ydata-profiling and Evidently reports,
KPIs, charts, summary — searched for each raw value."""
from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest

from shared import events, pii
from shared.embedded import Dispatcher
from shared.settings import Settings
from shared.tenancy import new_job_id
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


def card(i: int) -> str:
    body = f"453914{i:09d}"
    return body + luhn_digit(body)


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


GAP = ("shared/pii.py (issue 5) does not yet recognise card numbers by Luhn, IBANs by their mod-97 "
       "checksum or national ids by a configurable pattern inside free text: reported to the lead")


@pytest.mark.xfail(strict=True, reason=GAP)
def test_luhn_valid_card_numbers_in_text_are_masked_and_invalid_ones_kept():
    valid, invalid = card(42), card(42)[:-1] + str((int(card(42)[-1]) + 1) % 10)
    spaced = " ".join(valid[i:i + 4] for i in range(0, 16, 4))
    for shown in (valid, spaced, spaced.replace(" ", "-")):
        assert shown not in pii.mask_text(f"paid with {shown} yesterday")
    assert invalid in pii.mask_text(f"order number {invalid}")  # not a card: the check digit is wrong


@pytest.mark.xfail(strict=True, reason=GAP)
def test_ibans_with_a_valid_checksum_are_masked_and_others_kept():
    valid = iban(3)
    broken = valid[:2] + f"{(int(valid[2:4]) + 1) % 100:02d}" + valid[4:]
    grouped = " ".join(valid[i:i + 4] for i in range(0, len(valid), 4))
    for shown in (valid, grouped):
        assert shown not in pii.mask_text(f"transfer to {shown} please")
    assert broken in pii.mask_text(f"reference {broken}")


@pytest.mark.xfail(strict=True, reason=GAP)
def test_national_ids_follow_a_configurable_pattern(monkeypatch):
    setting = next((f for f in fields(Settings) if "NATIONAL" in f.metadata["env"]), None)
    assert setting is not None, "no UDB_*NATIONAL* setting for the national-id pattern"
    monkeypatch.setenv(setting.metadata["env"], r"\b\d{3}-\d{2}-\d{4}\b")
    assert "078-05-1120" not in pii.mask_text("ssn 078-05-1120 on file")
    assert "078-05-112" in pii.mask_text("ref 078-05-112 only")


# ---------------------------------------------------------------- what leaves the warehouse

def write_people(path: Path, rows: int = ROWS) -> dict[str, list[str]]:
    """A table of personal data; returns the raw values by kind (what no artifact may show)."""
    raw = {"name": [], "email": [], "phone": [], "card": [], "iban": [], "ssn": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "customer_name", "email", "phone", "card_number", "iban", "ssn", "note", "amount"])
        for i in range(rows):
            values = {"name": f"Zelda Quixotewhistle{i:03d}", "email": f"zelda.q{i:03d}@example-corp.com",
                      "phone": f"+44 20 7946 {i:04d}", "card": card(i), "iban": iban(i), "ssn": f"078-05-{1000 + i}"}
            for kind, value in values.items():
                raw[kind].append(value)
            note = f"call {values['phone']} or write to {values['email']}"
            out.writerow([i, values["name"], values["email"], values["phone"], values["card"], values["iban"],
                          values["ssn"], note, (i % 50) * 1.5])
    return raw


def run_analysis(settings, hint: str) -> tuple[dict, object]:
    dispatcher = Dispatcher(settings)
    job_id = new_job_id()
    dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant="acme", job_id=job_id,
                                         function="test"))
    ctx = dispatcher.context("cli")
    return ctx.jobs("acme").get(job_id), ctx


HISTOGRAM_GAP = ("functions/analyze/profile.py (issue 5): a personal-data column read as numbers (card_number "
                 "as BIGINT) has min/max/top-k masked but its histogram bin edges, quantiles and mean are real "
                 "values (the first bin's lo is the smallest card number; p95 and the mean are card numbers of "
                 "the table): reported to the lead")
NUMERIC_STATS = ("histogram", "quantiles", "mean", "std", "skewness", "sum", "median")


def _without_numeric_stats_of_masked_columns(name: str, data: bytes) -> bytes:
    """The artifact minus the known gap (HISTOGRAM_GAP), so every other field stays checked."""
    if not (name.startswith("profile-") and name.endswith(".json")):
        return data
    doc = json.loads(data)
    for column in doc.get("column_profiles", []):
        if column.get("masked"):
            for stat in NUMERIC_STATS:
                column.pop(stat, None)
    return json.dumps(doc).encode()


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


@pytest.mark.xfail(strict=True, reason=HISTOGRAM_GAP)
def test_numeric_statistics_of_personal_data_columns_show_no_real_values(analysed_people):
    raw, artifacts = analysed_people
    for name, data in artifacts:
        if name.startswith("profile-") and name.endswith(".json"):
            assert not [v for v in raw["card"] if v.encode() in data], name


def test_no_artifact_of_a_job_shows_a_raw_personal_value(analysed_people):
    raw, artifacts = analysed_people
    names = []
    for name, data in artifacts:
        names.append(name)
        data = _without_numeric_stats_of_masked_columns(name, data)
        for kind, values in raw.items():
            leaked = [v for v in values if v.encode() in data]
            assert leaked == [], f"{name} shows raw {kind} values, e.g. {leaked[:3]}"
        assert b"zelda.q" not in data and b"Quixotewhistle" not in data  # not even a part
    kinds = " ".join(names)
    for kind in ("profile-", "ydata", "drift", "summary", "index.json"):
        assert kind in kinds, (kind, names)
