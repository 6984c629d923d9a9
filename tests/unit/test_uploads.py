"""functions/artifacts/uploads.py: POST /uploads, one multipart file part stored in the tenant's
store, called with real werkzeug requests on an embedded artifacts context."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import pytest
from werkzeug.test import EnvironBuilder

from functions.artifacts import uploads
from shared.core.errors import InputError, SourceError
from shared.sources import upload as upload_source

pytestmark = pytest.mark.unit
TENANT = "acme"
CSV = b"region,amount\nnorth,1.5\nsouth,2\n"


@pytest.fixture
def ctx(ctx_for):
    return ctx_for("artifacts")


def _request(data=None, *, tenant=TENANT, content_type=None, body=None):
    kw = {"data": body, "content_type": content_type} if body is not None else \
        {"data": data, "content_type": "multipart/form-data"}
    return EnvironBuilder(method="POST", path="/uploads", headers={"X-UDB-Tenant": tenant}, **kw).get_request()


def _call(request, ctx):
    text, status, headers = uploads.upload(request, ctx)
    return json.loads(text), status


def test_a_file_is_stored_and_named_by_its_hint(ctx):
    body, status = _call(_request({"file": (io.BytesIO(CSV), "Sales 2024.csv", "text/csv")}), ctx)
    assert status == 201
    assert set(body) == {"uploadId", "hint", "filename", "bytes", "sha256"}
    assert upload_source.UPLOAD_ID_RE.fullmatch(body["uploadId"])
    assert body["hint"] == upload_source.hint_for(body["uploadId"], "Sales 2024.csv")
    assert (body["filename"], body["bytes"], body["sha256"]) == ("Sales 2024.csv", len(CSV), hashlib.sha256(CSV).hexdigest())
    stored = ctx.tenant_store(TENANT).get(upload_source.key_of(body["uploadId"], "Sales 2024.csv"))
    assert stored.data == CSV
    assert upload_source.parse(body["hint"]) == (body["uploadId"], "Sales 2024.csv")


def test_two_uploads_of_one_name_get_their_own_ids(ctx):
    first, _ = _call(_request({"file": (io.BytesIO(CSV), "a.csv")}), ctx)
    second, _ = _call(_request({"file": (io.BytesIO(CSV + b"east,3\n"), "a.csv")}), ctx)
    assert first["uploadId"] != second["uploadId"] and second["bytes"] == len(CSV) + 7


@pytest.mark.parametrize("data,error,message", [
    ({"note": "a form field, no file"}, InputError, "expected exactly one file part named 'file', found none"),
    ({"upload": (io.BytesIO(CSV), "a.csv")}, InputError, r"found \['upload'\]"),
    ({"file": [(io.BytesIO(CSV), "a.csv"), (io.BytesIO(CSV), "b.csv")]}, InputError, r"found \['file', 'file'\]"),
    ({"file": (io.BytesIO(b""), "empty.csv")}, InputError, "empty.csv: the file is empty"),
    ({"file": (io.BytesIO(CSV), "../etc/passwd")}, InputError, "a plain name is expected, not a path"),
    ({"file": (io.BytesIO(CSV), ".hidden.csv")}, SourceError, "invalid file name '.hidden.csv'"),
])
def test_refused_uploads_say_why(ctx, data, error, message):
    with pytest.raises(error, match=message):
        uploads.upload(_request(data), ctx)
    assert list(ctx.tenant_store(TENANT).list("uploads/")) == []


def test_not_multipart(ctx):
    with pytest.raises(InputError, match="expected multipart/form-data .* found Content-Type 'text/csv'"):
        uploads.upload(_request(body=CSV, content_type="text/csv"), ctx)


def test_above_the_limit_is_413_and_nothing_is_stored(ctx):
    ctx.settings = dataclasses.replace(ctx.settings, max_upload_bytes=10)
    body, status = _call(_request({"file": (io.BytesIO(CSV), "a.csv")}), ctx)
    assert (status, body) == (413, {"error": "upload above the limit of 10 bytes (UDB_MAX_UPLOAD_BYTES)"})
    big = b"x" * (uploads.MULTIPART_OVERHEAD + 100)
    body, status = _call(_request({"file": (io.BytesIO(big), "b.csv")}), ctx)
    assert status == 413
    assert list(ctx.tenant_store(TENANT).list("uploads/")) == []


def test_the_route():
    assert uploads.ROUTES == [("POST", "/uploads", uploads.upload)]
