"""Uploads: POST /uploads on the artifacts function (its real HTTP app through Flask's test
client) streams the file into the tenant's store on the real MinIO; `upload://` hints are then
discovered and synced like local files, end to end to the warehouse on MinIO."""
from __future__ import annotations

import hashlib
import io

import flask
import pytest

from devstack import services
from functions.artifacts.routes import ROUTES
from shared.core import events
from shared.serving import runtime
from shared.serving.embedded import Dispatcher
from shared.serving.httpfn import FunctionApp
from shared.core.settings import Settings
from shared.core.tenancy import new_job_id
from tests.conftest import REPO, write_sales
from shared.storage import lake

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_settings(stack_services, tmp_path) -> Settings:
    user, password = services.minio_credentials()
    return Settings.from_env(env={}, home=tmp_path / "udb", store="s3", bucket="udb",
                             s3_endpoint=stack_services["s3"], s3_access_key=user, s3_secret_key=password,
                             eventing_dir=REPO / "eventing", log_level="WARNING", max_upload_bytes=200_000)


@pytest.fixture
def client(s3_settings):
    ctx = runtime.start("artifacts", s3_settings)
    app = FunctionApp("artifacts", routes=ROUTES).use(ctx)
    web = flask.Flask("artifacts-test")

    @web.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @web.route("/<path:path>", methods=["GET", "POST"])
    def serve(path):
        return app(flask.request)

    return web.test_client()


def post(client, tenant, name, body: bytes, field="file"):
    return client.post("/uploads", headers={"X-UDB-Tenant": tenant},
                       data={field: (io.BytesIO(body), name)}, content_type="multipart/form-data")


def test_upload_then_discover_and_sync_to_the_warehouse(client, s3_settings, s3_client, tenant, tmp_path):
    body = write_sales(tmp_path / "sales.csv", 2500).read_bytes()
    response = post(client, tenant, "sales.csv", body)
    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    upload_id = answer["uploadId"]
    assert answer == {"uploadId": upload_id, "hint": f"upload://{upload_id}/sales.csv", "filename": "sales.csv",
                      "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    stored = s3_client.get_object(Bucket="udb", Key=f"tenants/{tenant}/uploads/{upload_id}/sales.csv")["Body"].read()
    assert stored == body

    dispatcher = Dispatcher(s3_settings)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": answer["hint"], "autoanalyze": False},
                                tenant=tenant, job_id=job, function="test")
    seen = dispatcher.publish(request)
    assert [e["type"] for e in seen][-1] == events.WAREHOUSE_LOADED, events.event_data(seen[-1])
    discovered = events.event_data(seen[1])
    assert discovered["candidates"][0] == {"provider": "upload", "confidence": 0.99,
                                           "reasons": ["scheme upload:// (a file uploaded to POST /uploads)"]}
    ctx = dispatcher.context("cli")
    assert ctx.jobs(tenant).get(job)["tables"] == {"upload__sales_csv": {"rows": 2500}}
    with lake.reader(ctx.tenant_store(tenant)) as w:
        assert w.execute("SELECT count(*), sum(order_id), count(*) FILTER (discount IS NULL) FROM upload__sales_csv"
                         ).fetchone() == (2500, 2500 * 2501 // 2, 250)


def test_an_uploaded_document(client, s3_settings, tenant):
    body = b"# Notes\n\nThe upload path reads documents too. It keeps every paragraph.\n"
    answer = post(client, tenant, "notes.md", body).get_json()
    dispatcher = Dispatcher(s3_settings)
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": answer["hint"], "autoanalyze": False},
                                tenant=tenant, job_id=job, function="test")
    assert [e["type"] for e in dispatcher.publish(request)][-1] == events.WAREHOUSE_LOADED
    assert dispatcher.context("cli").jobs(tenant).get(job)["tables"] == {"upload__notes_md": {"rows": 2}}


def discover_upload(dispatcher, tenant, hint, options=None) -> dict:
    job = new_job_id()
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": hint, "autoanalyze": False,
                                                             "options": options or {}},
                                tenant=tenant, job_id=job, function="test")
    seen = dispatcher.publish(request)
    assert seen[-1]["type"] == events.WAREHOUSE_LOADED, events.event_data(seen[-1])
    return dispatcher.context("cli").jobs(tenant).get(job)["tables"]


def test_uploads_of_the_same_stem_never_collide_and_a_table_is_replaced_on_purpose(client, s3_settings, tenant,
                                                                                   tmp_path):
    from shared.storage import duck
    con = duck.connect(extensions=("excel",))
    xlsx = tmp_path / "x.xlsx"
    con.execute(f"COPY (SELECT i AS id, i * 2 AS twice FROM range(1, 31) t(i)) TO '{xlsx}' (FORMAT xlsx, HEADER true)")
    con.close()
    dispatcher = Dispatcher(s3_settings)
    csv_hint = post(client, tenant, "x.csv", b"id,name\n1,a\n2,b\n3,c\n").get_json()["hint"]
    xlsx_hint = post(client, tenant, "x.xlsx", xlsx.read_bytes()).get_json()["hint"]
    assert discover_upload(dispatcher, tenant, csv_hint) == {"upload__x_csv": {"rows": 3}}
    assert discover_upload(dispatcher, tenant, xlsx_hint) == {"upload__x_xlsx": {"rows": 30}}
    # The same name and type again replaces its own table; options.table names a table to replace.
    again = post(client, tenant, "x.csv", b"id,name\n1,a\n2,b\n3,c\n4,d\n").get_json()["hint"]
    assert discover_upload(dispatcher, tenant, again) == {"upload__x_csv": {"rows": 4}}
    assert discover_upload(dispatcher, tenant, xlsx_hint, {"table": "x_csv"}) == {"upload__x_csv": {"rows": 30}}
    with lake.reader(dispatcher.context("cli").tenant_store(tenant)) as w:
        assert w.execute("SELECT count(*), sum(twice) FROM upload__x_csv").fetchone() == (30, 930)
        assert w.execute("SELECT count(*), sum(twice) FROM upload__x_xlsx").fetchone() == (30, 930)
        assert w.execute("SELECT count(*) FROM udb_snapshots.upload__x_csv").fetchone() == (4,)
    job = new_job_id()
    failed = dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED,
                                                  {"hint": csv_hint, "options": {"table": "../x"}},
                                                  tenant=tenant, job_id=job, function="test"))
    assert failed[-1]["type"] == events.JOB_FAILED
    assert "options.table: expected a name of letters" in events.event_data(failed[-1])["reason"]


@pytest.mark.parametrize("name, message", [
    ("../../etc/passwd", "invalid file name '../../etc/passwd': a plain name is expected, not a path"),
    ("a/b.csv", "a plain name is expected, not a path"),
    ("..\\x.csv", "invalid file name"),  # the multipart parser drops the backslash: '..x.csv'
    (".hidden.csv", "invalid file name '.hidden.csv'"),
    ("a..csv", "invalid file name 'a..csv'"),
])
def test_file_names_with_paths_or_traversal_are_refused(client, tenant, name, message):
    response = post(client, tenant, name, b"a,b\n1,2\n")
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_size_limit_empty_file_and_wrong_form(client, tenant, s3_client):
    response = post(client, tenant, "big.csv", b"x,y\n" + b"1,2\n" * 60_000)
    assert response.status_code == 413
    assert response.get_json()["error"] == "upload above the limit of 200,000 bytes (UDB_MAX_UPLOAD_BYTES)"
    assert post(client, tenant, "empty.csv", b"").get_json()["error"] == "empty.csv: the file is empty"
    response = post(client, tenant, "a.csv", b"a\n1\n", field="upload")
    assert response.status_code == 400 and response.get_json()["error"] == \
        "expected exactly one file part named 'file', found ['upload']"
    response = client.post("/uploads", headers={"X-UDB-Tenant": tenant}, data=b"a,b", content_type="text/csv")
    assert response.status_code == 400 and "expected multipart/form-data" in response.get_json()["error"]
    assert s3_client.list_objects_v2(Bucket="udb", Prefix=f"tenants/{tenant}/uploads/").get("KeyCount") == 0
    response = client.post("/uploads", data={"file": (io.BytesIO(b"a\n1\n"), "a.csv")}, content_type="multipart/form-data")
    assert response.status_code == 400 and "X-UDB-Tenant" in response.get_json()["error"]
