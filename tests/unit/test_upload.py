"""shared/sources/upload.py: uploaded files named upload://<upload-id>/<filename>, read from the
tenant's store (a LocalStore here) like a local file."""
from __future__ import annotations

import duckdb
import pytest

from shared.core.errors import SourceError
from shared.sources import upload
from shared.sources.detection import Hint, Scores
from shared.sources.env import SourceEnv
from shared.storage.store import LocalStore, TenantStore

pytestmark = pytest.mark.unit
UPLOAD_ID = "up-0123456789abcdef"
CSV = b"region,amount\nnorth,1.5\nsouth,2\nnorth,3\n"


@pytest.fixture
def env(tmp_path):
    store = TenantStore(LocalStore(tmp_path / "store"), "acme")
    store.put(upload.key_of(UPLOAD_ID, "Sales 2024.csv"), CSV)
    return SourceEnv(tenant="acme", store=store)


@pytest.mark.parametrize("name", ["a.csv", "Sales 2024 (final)+v2.xlsx", "9", "x" * 128])
def test_valid_file_names(name):
    assert upload.validate_filename(name) == name


@pytest.mark.parametrize("name", ["", ".env", "../x.csv", "a/b.csv", "a..b", "x" * 129, "a\nb", "-x", None])
def test_invalid_file_names(name):
    with pytest.raises(SourceError, match="invalid file name"):
        upload.validate_filename(name)


def test_hints_round_trip():
    hint = upload.hint_for(UPLOAD_ID, "Sales 2024 (final).csv")
    assert hint == "upload://up-0123456789abcdef/Sales%202024%20%28final%29.csv"
    assert upload.parse(f"  {hint} ") == (UPLOAD_ID, "Sales 2024 (final).csv")
    assert upload.key_of(UPLOAD_ID, "a.csv") == "uploads/up-0123456789abcdef/a.csv"


@pytest.mark.parametrize("hint,message", [
    ("file:///x.csv", "not an upload hint"),
    ("upload://up-123/x.csv", "invalid upload id 'up-123'"),
    ("upload://up-0123456789abcdef/..%2Fescape.csv", "invalid file name"),
    ("upload://up-0123456789abcdef/", "invalid file name ''"),
])
def test_bad_hints(hint, message):
    with pytest.raises(SourceError, match=message):
        upload.parse(hint)


def test_table_stem():
    assert upload.table_stem("Sales 2024.csv") == "sales_2024_csv"
    assert upload.table_stem("x.xlsx") == "x_xlsx"
    assert upload.table_stem("2024.csv") == "upload_2024_csv"
    assert upload.table_stem("x.csv", "Sales") == "sales"
    for bad in ("1st", "a-b", "x" * 64, 5):
        with pytest.raises(SourceError, match="options.table: expected a name"):
            upload.table_stem("x.csv", bad)


def test_the_upload_scheme_is_detected():
    scores = Scores()
    upload.UploadConnector().signals(Hint(upload.hint_for(UPLOAD_ID, "a.csv"))).apply(scores)
    assert scores.result()["candidates"] == [{"provider": "upload", "confidence": 0.99,
                                              "reasons": ["scheme upload:// (a file uploaded to POST /uploads)"]}]
    assert upload.UploadConnector().signals(Hint("/local/a.csv")) is None


def test_inspect_and_extract_read_the_stored_file(env, tmp_path):
    hint = upload.hint_for(UPLOAD_ID, "Sales 2024.csv")
    found = upload.inspect(hint, env=env)
    [stream] = found["streams"]
    assert (found["provider"], found["short"]) == ("upload", "upload")
    assert (stream["name"], stream["format"], stream["location"], stream["bytes"]) == \
        ("sales_2024_csv", "csv", hint, len(CSV))
    assert stream["columns"] == [{"name": "region", "type": "VARCHAR"}, {"name": "amount", "type": "DOUBLE"}]
    out = tmp_path / "out"
    out.mkdir()
    assert upload.extract(stream, out, env=env, part_bytes=1 << 20) == 3
    rows = duckdb.sql(f"SELECT region, sum(amount) FROM '{out}/*.parquet' GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("north", 4.5), ("south", 2.0)]
    named = SourceEnv(tenant="acme", store=env.store, options={"table": "Sales"})
    assert upload.inspect(hint, env=named)["streams"][0]["name"] == "sales"


def test_a_missing_upload_or_store(env):
    with pytest.raises(SourceError, match="no upload up-0123456789abcdef/other.csv for tenant acme"):
        upload.inspect(upload.hint_for(UPLOAD_ID, "other.csv"), env=env)
    with pytest.raises(SourceError, match="upload hints need the tenant's store"):
        upload.inspect(upload.hint_for(UPLOAD_ID, "Sales 2024.csv"), env=SourceEnv(tenant="acme"))
