"""PII masking gaps the outside probe found (finding 5): phone numbers in international form,
and KPI SQL that reshapes a personal-data column (`substr(card::VARCHAR, 1, 8)`,
`replace(email, '@', ' at ')`, `upper(name)` through a CTE, a subquery hop). Every result
column computed from a personal-data column is masked — in kpis-*.json, the charts and
summary.md — whatever the SQL did; counts over such a column are not personal data and stay."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest

from shared.analysis.kpi_defs import KpiDefinitions, warehouse_tables
from functions.analyze.kpis import PersonalColumns, open_kpi_connection, run_kpi
from functions.analyze.profile import profile_table
from shared.core import events
from shared.security import pii
from shared.serving.embedded import Dispatcher
from shared.security.pii_lineage import personal_outputs
from shared.core.settings import Settings
from shared.storage.backends import open_store
from shared.storage.store import TenantStore
from shared.core.tenancy import new_job_id
from tests.conftest import REPO

pytestmark = pytest.mark.security
TENANT = "acme"


def luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


# Three people; `card` is named like nothing personal: the profile finds it by content (Luhn).
PEOPLE = [
    {"id": 1, "customer_name": "Zenobia Quillfeather", "email": "zenobia.q@example-corp.com",
     "card": luhn("453914880343646"), "reach": "+44 7700 900123", "city": "London", "amount": 10.0},
    {"id": 2, "customer_name": "Bartholomew Fennimore", "email": "bart.f@example-corp.com",
     "card": luhn("545454123456789"), "reach": "+33 6 12 34 56 78", "city": "Paris", "amount": 20.0},
    {"id": 3, "customer_name": "Cordelia Wintergreen", "email": "cordelia.w@example-corp.com",
     "card": luhn("601100998877665"), "reach": "+49 30 1234567", "city": "London", "amount": 30.0},
]


# ================================================================ international phone numbers

@pytest.mark.parametrize("text, masked", [
    ("call +44 7700 900123 today", "call *** today"),
    ("+33 6 12 34 56 78", "***"),
    ("Berlin office: +49 30 1234567.", "Berlin office: ***."),
    ("+31 20 123 4567 or +81 3-1234-5678", "*** or ***"),
    ("+1 (415) 555-0100", "***"),
    ("version 2.4 +3 points, 2024-01-15", "version 2.4 +3 points, 2024-01-15"),  # not phones: kept
])
def test_international_phone_numbers_are_masked_in_text(text, masked):
    assert pii.mask_text(text) == masked
    assert pii.mask_text(masked) == masked  # idempotent


def test_a_column_of_international_phone_numbers_is_personal_data_by_content():
    numbers = [p["reach"] for p in PEOPLE]
    assert [pii.value_kind(n) for n in numbers] == ["phone", "phone", "phone"]
    rows, changed = pii.mask_rows(["reach", "city"], [[n, "London"] for n in numbers])
    assert changed and rows == [["***", "London"]] * 3
    # Through the profile: the column is found by content and no number is shown.
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('+44 7700 900123', 'ring +33 6 12 34 56 78'), "
                "('+33 6 12 34 56 78', 'ring +49 30 1234567'), ('+49 30 1234567', 'nothing')) v(reach, memo)")
    profile = profile_table(con, "t")
    columns = {c["name"]: c for c in profile["column_profiles"]}
    assert columns["reach"]["pii"]["kind"] == "phone" and columns["reach"]["pii"]["found_by"] == "content"
    text = json.dumps(profile)
    for number in numbers:
        assert number not in text
    assert sorted(t["value"] for t in columns["memo"]["top_k"]) == ["nothing", "ring ***", "ring ***"]


# ================================================================ lineage, exact answers

SCHEMA = {"people": {c: "VARCHAR" for c in PEOPLE[0]}}
PERSONAL = {"people": {"customer_name", "email", "card", "reach"}}


@pytest.mark.parametrize("sql, columns, expected", [
    ("SELECT substr(card::VARCHAR, 1, 8) AS p, city FROM people", ["p", "city"], {"p"}),
    ("SELECT replace(email, '@', ' at ') AS contact FROM people", ["contact"], {"contact"}),
    ("SELECT upper(customer_name) FROM people", ['upper(customer_name)'], {'upper(customer_name)'}),
    ("WITH x AS (SELECT id, upper(customer_name) AS shout FROM people) SELECT shout, id FROM x",
     ["shout", "id"], {"shout"}),
    ("SELECT s.handle FROM (SELECT split_part(email, '@', 1) AS handle FROM people) s", ["handle"], {"handle"}),
    ("SELECT city FROM people UNION ALL SELECT reach FROM people", ["city"], {"city"}),
    ("SELECT (SELECT max(email) FROM people) AS m", ["m"], {"m"}),
    ("SELECT string_agg(email, ',') AS all_emails FROM people", ["all_emails"], {"all_emails"}),
    ("SELECT * FROM people", list(PEOPLE[0]), {"customer_name", "email", "card", "reach"}),
    # Counts and presence are not personal data: kept.
    ("SELECT count(email) AS n, count(DISTINCT card) AS d, count(*) AS rows FROM people", ["n", "d", "rows"], set()),
    ("SELECT city, count(email) AS n FROM people GROUP BY city", ["city", "n"], set()),
    ("SELECT count_if(email IS NULL) AS missing, email IS NOT NULL AS has_email FROM people",
     ["missing", "has_email"], set()),
    ("SELECT city, sum(amount) AS total FROM people WHERE email LIKE '%corp%' GROUP BY city",
     ["city", "total"], set()),
])
def test_lineage_finds_every_output_computed_from_a_personal_column(sql, columns, expected):
    assert personal_outputs(sql, columns, SCHEMA, PERSONAL) == expected


# ================================================================ through the analysis

def write_people(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(PEOPLE[0]))
        out.writeheader()
        out.writerows(PEOPLE)


def publish(settings: Settings, kind: str, data: dict) -> dict:
    dispatcher = Dispatcher(settings)
    job_id = new_job_id()
    dispatcher.publish(events.make_event(kind, data, tenant=TENANT, job_id=job_id, function="test"))
    return dispatcher.context("cli").jobs(TENANT).get(job_id)


CUSTOM = {
    "card_prefix": ("SELECT substr(card::VARCHAR, 1, 8) AS prefix, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
                    {"type": "bar", "x": "prefix", "y": "n"}),
    "email_spelled": ("SELECT replace(email, '@', ' at ') AS spelled, amount FROM {t} ORDER BY id",
                      {"type": "bar", "x": "spelled", "y": "amount"}),
    "shouted": ("WITH x AS (SELECT id, upper(customer_name) AS shout, amount FROM {t}) "
                "SELECT shout, amount FROM x ORDER BY id", {"type": "bar", "x": "shout", "y": "amount"}),
    "handles": ("SELECT s.handle, s.amount FROM (SELECT id, split_part(email, '@', 1) AS handle, amount FROM {t}) s "
                "ORDER BY s.id", {"type": "bar", "x": "handle", "y": "amount"}),
    "emails_by_city": ("SELECT city, count(email) AS emails, count(DISTINCT card) AS cards FROM {t} "
                       "GROUP BY city ORDER BY city", {"type": "bar", "x": "city", "y": "emails"}),
}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lineage")
    settings = Settings.from_env(env={}, home=tmp / "udb", eventing_dir=REPO / "eventing", chart_png=False,
                                 log_level="WARNING")
    write_people(tmp / "crm" / "people.csv")
    loaded = publish(settings, events.DISCOVER_REQUESTED, {"hint": str(tmp / "crm" / "people.csv")})
    assert loaded["state"] == "completed", loaded.get("error")
    store = TenantStore(open_store(settings), TENANT)
    table = warehouse_tables(store)[0]
    for name, (sql, chart) in CUSTOM.items():
        KpiDefinitions(store).put(name, {"sql": sql.format(t=table), "chart": chart}, [table])
    job = publish(settings, events.ANALYZE_REQUESTED, {})
    assert job["state"] == "completed", job.get("error")
    artifacts = {info.key.rsplit("/", 1)[-1]: store.get(info.key).data
                 for info in store.list(f"artifacts/{job['job_id']}/")}
    return table, artifacts


def test_kpis_that_reshape_personal_columns_are_masked_in_json_charts_and_summary(analysed):
    table, artifacts = analysed
    custom = {k["name"]: k for k in json.loads(artifacts["kpis-custom.json"])}
    assert all("error" not in k for k in custom.values()), {n: k.get("error") for n, k in custom.items()}
    results = {name: (k["result"]["rows"], k["result"]["pii_columns"]) for name, k in custom.items()}
    assert results == {
        # Sorted by the raw prefix in DuckDB, then masked: first character and "***".
        "card_prefix": ([["4***", 1], ["5***", 1], ["6***", 1]], ["prefix"]),
        "email_spelled": ([["z***", 10.0], ["b***", 20.0], ["c***", 30.0]], ["spelled"]),
        "shouted": ([["Z***", 10.0], ["B***", 20.0], ["C***", 30.0]], ["shout"]),
        "handles": ([["z***", 10.0], ["b***", 20.0], ["c***", 30.0]], ["handle"]),
        # Counts over personal columns are not personal data: exact, unmasked.
        "emails_by_city": ([["London", 2, 2], ["Paris", 1, 1]], []),
    }
    raw = set()
    for p in PEOPLE:
        raw |= {p["card"][:8], p["card"], p["email"], p["email"].replace("@", " at "), p["email"].split("@")[0],
                p["customer_name"], p["customer_name"].upper(), p["reach"]}
    shown = [name for name in artifacts if name.startswith(("kpis-", "chart-", "summary", "index"))]
    assert {"kpis-custom.json", "summary.md", "summary.json", "index.html",
            "chart-kpi-card_prefix.html", "chart-kpi-shouted.html"} <= set(shown)
    for name in shown:
        leaked = [value for value in raw if value.encode() in artifacts[name]]
        assert leaked == [], f"{name} shows {leaked}"


def test_kpis_outside_the_analysis_work_out_personal_columns_themselves(analysed, tmp_path):
    """run_kpi without the profiles' verdicts (as the MCP server calls it) classifies the tables
    the query reads by name and content, and masks the same way."""
    table, _ = analysed
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE people AS SELECT * FROM (VALUES "
                + ", ".join(f"({p['id']}, '{p['email']}', {p['card']}, '{p['city']}')" for p in PEOPLE)
                + ") v(id, email, card, city)")
    con.close()
    kcon = open_kpi_connection(path)
    try:
        personal = PersonalColumns(kcon)
        assert personal.of("people") == {"email", "card"}  # email by name, the BIGINT card by content
        result = run_kpi(kcon, {"name": "k", "sql": "SELECT substr(card::VARCHAR, 1, 8) AS p, city, "
                                                     "count(*) OVER () AS n FROM people ORDER BY id"})
        assert result["rows"] == [["4***", "London", 3], ["5***", "Paris", 3], ["6***", "London", 3]]
        assert result["pii_columns"] == ["p"] and result["pii_masked"] is True
    finally:
        kcon.close()


def test_a_duckdb_error_quoting_a_value_does_not_carry_it_out():
    con = duckdb.connect()
    con.execute("CREATE TABLE people AS SELECT 'Zenobia Quillfeather' AS customer_name")
    from functions.analyze.kpis import KpiError
    with pytest.raises(KpiError) as caught:
        run_kpi(con, {"name": "k", "sql": "SELECT customer_name::INTEGER FROM people"})
    assert "Zenobia" not in str(caught.value) and "'***'" in str(caught.value)
