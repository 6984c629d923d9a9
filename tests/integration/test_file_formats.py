"""Every local file format, in one folder: one table per file, exact rows and types."""
from __future__ import annotations

import json

import pytest

from shared.storage import duck
from shared.serving.embedded import Dispatcher
from shared.core import events
from shared.core.tenancy import new_job_id
from shared.storage import lake

pytestmark = pytest.mark.integration


def test_folder_of_every_format_loads_one_table_per_file(settings, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    con = duck.connect(extensions=("excel",))
    rows = "SELECT i AS id, 'name ' || i AS name, i * 0.5 AS score FROM range(1, {n} + 1) t(i)"
    con.execute(f"COPY ({rows.format(n=1200)}) TO '{folder / 'a.tsv'}' (HEADER, DELIMITER '\t')")
    con.execute(f"COPY ({rows.format(n=1300)}) TO '{folder / 'b.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY ({rows.format(n=1400)}) TO '{folder / 'c.ndjson'}' (FORMAT json)")
    con.execute(f"COPY ({rows.format(n=1500)}) TO '{folder / 'd.json'}' (FORMAT json, ARRAY true)")
    con.execute(f"COPY ({rows.format(n=1600)}) TO '{folder / 'e.xlsx'}' (FORMAT xlsx, HEADER true)")
    (folder / "notes.md").write_text("ignored: not a data file")

    dispatcher = Dispatcher(settings)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": str(folder), "autoanalyze": False},
                                tenant="mix", job_id=job, function="test")
    types = [e["type"] for e in dispatcher.publish(request)]
    assert types == [events.DISCOVER_REQUESTED, events.SOURCE_DISCOVERED, events.SYNC_STAGED,
                     events.WAREHOUSE_LOADED]  # autoanalyze off: no Trigger fires on loaded
    doc = dispatcher.context("cli").jobs("mix").get(job)
    assert doc["state"] == "loaded"
    assert doc["tables"] == {"mixed__a": {"rows": 1200}, "mixed__b": {"rows": 1300}, "mixed__c": {"rows": 1400},
                             "mixed__d": {"rows": 1500}, "mixed__e": {"rows": 1600}}
    with lake.reader(dispatcher.context("cli").tenant_store("mix")) as w:
        for table, n in (("a", 1200), ("b", 1300), ("c", 1400), ("d", 1500), ("e", 1600)):
            assert w.execute(f"SELECT count(*), sum(id), max(name) IS NOT NULL FROM mixed__{table}").fetchone() \
                == (n, n * (n + 1) // 2, True)
        assert w.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'mixed__a' "
                         "ORDER BY ordinal_position").fetchall() == [("BIGINT",), ("VARCHAR",), ("DOUBLE",)]
    source = json.loads(dispatcher.context("cli").tenant_store("mix").get(f"sources/{doc['source_id']}.json").data)
    assert [(s["name"], s["format"]) for s in source["streams"]] == [
        ("a", "tsv"), ("b", "parquet"), ("c", "ndjson"), ("d", "json"), ("e", "xlsx")]
