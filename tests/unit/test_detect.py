"""Detection from syntax alone (no probes): schemes, share links, DSNs, local files, and the
pure parts of the REST provider (record paths, paginator registry and detection, flattening)."""
from __future__ import annotations

import httpx
import pytest

from functions.discover.detect import AMBIGUITY_MARGIN, detect
from shared.core.errors import SourceError
from shared.sources import connector_for, needs_oauth, redact, registry, rest, upload

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("hint, provider, confidence, reason", [
    ("https://1drv.ms/x/s!AbCdEf", "onedrive", 0.97, "OneDrive short share link (1drv.ms)"),
    ("https://onedrive.live.com/redir?resid=ABC", "onedrive", 0.97, "OneDrive share link (onedrive.live.com)"),
    ("https://contoso.sharepoint.com/:x:/s/team/EaBc", "sharepoint", 0.97, "SharePoint link (*.sharepoint.com)"),
    ("https://contoso-my.sharepoint.com/:x:/p/ada/EaBc", "onedrive", 0.95,
     "OneDrive for Business link (*-my.sharepoint.com)"),
    ("https://drive.google.com/file/d/1AbC/view", "gdrive", 0.97, "Google Drive link (drive.google.com)"),
    ("https://docs.google.com/spreadsheets/d/1AbC/edit", "gdrive", 0.97, "Google Docs/Sheets link (docs.google.com)"),
    ("upload://up-0123456789abcdef/sales.csv", "upload", 0.99, "scheme upload:// (a file uploaded to POST /uploads)"),
    ("webdav://dav.example.com/share/", "webdav", 0.97, "scheme webdav://"),
    ("s3://bucket/key.csv", "s3", 0.95, "scheme s3"),
    ("postgresql://u:p@db.example.com/sales", "postgres", 0.95, "DSN syntax"),
    ("host=db.example.com dbname=sales", "postgres", 0.6, "libpq key=value syntax (give a postgresql:// URI)"),
])
def test_syntax_signals(hint, provider, confidence, reason):
    found = detect(hint, probe=False)
    assert found["candidates"][0] == {"provider": provider, "confidence": confidence, "reasons": [reason]}


def test_share_links_have_oauth_connectors():
    from shared.sources import gdrive, msgraph
    assert {p: type(connector_for(p)) for p in registry.providers() if needs_oauth(p)} == {
        "onedrive": msgraph.MsGraphConnector, "sharepoint": msgraph.MsGraphConnector, "gdrive": gdrive.GdriveConnector}
    assert connector_for("sharepoint").oauth.name == "microsoft" and connector_for("gdrive").oauth.name == "google"
    with pytest.raises(SourceError, match="unknown provider 'dropbox'"):
        connector_for("dropbox")


@pytest.mark.parametrize("hint, ranked", [
    ("https://example.com/exports/sales.csv", ["http"]),
    ("https://example.com/report.pdf", ["http"]),
    ("https://example.com/data.json", ["http", "rest"]),
    ("https://api.example.com/v1/orders", ["rest", "http", "webdav"]),
])
def test_url_shapes_before_probing(hint, ranked):
    assert [c["provider"] for c in detect(hint, probe=False)["candidates"]] == ranked


def test_ambiguity_and_the_options_override():
    found = detect("https://example.com/data.json", probe=False)
    assert found["ambiguous"] and 0.6 - 0.5 < AMBIGUITY_MARGIN
    found = detect("https://example.com/data.json", {"provider": "rest"}, probe=False)
    assert found["candidates"][0] == {"provider": "rest", "confidence": 1.0,
                                      "reasons": ["provider given in options", "URL path ends in .json (could be an API)"]}
    assert detect("gopher://example.com/x", probe=False)["candidates"] == []


def test_local_files(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    (tmp_path / "prose.txt").write_text("Just a note.\nNothing tabular here at all.\n")
    (tmp_path / "table.txt").write_text("a;b\n1;2\n3;4\n")
    (tmp_path / "noext").write_bytes(b"%PDF-1.4\n...")
    assert detect(str(tmp_path))["candidates"] == [{"provider": "directory", "confidence": 0.99,
                                                    "reasons": ["local path", "is a directory"]}]
    assert detect(str(tmp_path / "a.csv"))["candidates"][0]["provider"] == "file"
    assert [c["provider"] for c in detect(str(tmp_path / "prose.txt"))["candidates"]] == ["document", "file"]
    assert [c["provider"] for c in detect(str(tmp_path / "table.txt"))["candidates"]] == ["file", "document"]
    assert detect(str(tmp_path / "noext"))["candidates"][0] == {
        "provider": "document", "confidence": 0.9, "reasons": ["local file, content is pdf (magic bytes)"]}
    assert detect(str(tmp_path / "missing.csv"))["candidates"] == [{"provider": "file", "confidence": 0.3, "reasons": [
        "looks like a local path", "nothing exists there"]}]


def test_redaction_of_web_hints():
    assert redact("https://ada:s3cret@example.com/x.csv") == "https://ada:***@example.com/x.csv"
    assert redact("webdav://ada:pw@dav.example.com/share/") == "webdav://ada:***@dav.example.com/share/"
    assert redact("https://example.com/x.csv") == "https://example.com/x.csv"


# ---------------------------------------------------------------- REST internals

@pytest.mark.parametrize("body, path, count", [
    ([{"a": 1}, {"a": 2}], [], 2),
    ({"data": [{"a": 1}], "meta": {"tags": ["x"]}}, ["data"], 1),
    ({"meta": {"n": 2}, "response": {"items": [{"a": 1}, {"a": 2}]}}, ["response", "items"], 2),
    ({"value": [{"a": 1}, {"a": 2}, {"a": 3}], "other": [{"b": 1}]}, ["value"], 3),
    ({"results": []}, ["results"], 0),
])
def test_record_paths(body, path, count):
    found_path, records = rest.find_records(body)
    assert (found_path, len(records)) == (path, count)


def test_record_path_errors():
    with pytest.raises(SourceError, match=r"no array of records in the JSON response \(top-level keys: ok, n\)"):
        rest.find_records({"ok": True, "n": 1})
    with pytest.raises(SourceError, match="options.record_path 'data.rows': no array at data.rows"):
        rest.find_records({"data": {}}, "data.rows")


def test_paginator_registry():
    assert rest.make_paginator("cursor").spec() == {"type": "cursor"}
    assert rest.make_paginator({"type": "page", "size": 10, "size_param": "n"}).spec() == \
        {"type": "page", "size": 10, "size_param": "n"}
    with pytest.raises(SourceError, match=r"options.paginator \(page\): unknown fields \['limit'\]"):
        rest.make_paginator({"type": "page", "limit": 5})


def response(body=None, headers=None):
    return httpx.Response(200, json=body, headers=headers or {}, request=httpx.Request("GET", "http://x/items"))


@pytest.mark.parametrize("body, headers, spec", [
    ([{"a": 1}], {"Link": '<http://x/items?page=2>; rel="next"'}, {"type": "link_header"}),
    ({"data": [{"a": 1}], "links": {"next": "/items?p=2"}}, {}, {"type": "next_url", "next_path": "links.next"}),
    ({"items": [{"a": 1}], "nextPageToken": "t2"}, {}, {"type": "cursor", "cursor_path": "nextPageToken",
                                                       "cursor_param": "pageToken"}),
    ({"rows": [{"a": 1}], "offset": 0, "limit": 1, "count": 9}, {}, {"type": "offset", "limit": 1,
                                                                     "total_path": "count"}),
    ({"records": [{"a": 1}], "current_page": 1, "last_page": 4}, {}, {"type": "page", "page_param": "page",
                                                                      "total_pages_path": "last_page"}),
    ({"data": [{"a": 1}]}, {}, {"type": "none"}),
])
def test_paginator_detection(body, headers, spec):
    _, records = rest.find_records(body)
    found, _ = rest.detect_paginator(httpx.URL("http://x/items"), response(body, headers), body, records)
    assert found == spec


def test_paginators_step():
    url = httpx.URL("http://x/items")
    offset = rest.make_paginator({"type": "offset", "limit": 2, "total_path": "total"})
    assert offset.start() == {"offset": 0, "limit": 2}
    assert offset.next(url, {"offset": 0, "limit": 2}, None, {"total": 3}, [1, 2]) == (url, {"offset": 2, "limit": 2})
    assert offset.next(url, {"offset": 2, "limit": 2}, None, {"total": 3}, [3]) is None
    page = rest.make_paginator("page")
    assert page.next(url, {"page": 1}, None, {}, [1]) == (url, {"page": 2})
    assert page.next(url, {"page": 2}, None, {}, []) is None
    cursor = rest.make_paginator({"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"})
    assert cursor.next(url, {}, None, {"meta": {"next": "c2"}}, [1]) == (url, {"after": "c2"})
    assert cursor.next(url, {}, None, {"meta": {"next": None}}, [1]) is None


def test_flatten_rule():
    record = {"id": 1, "a": {"b": 1, "c": {"d": 2, "e": {"f": 3}}}, "tags": [1, 2], "empty": {}}
    assert rest.flatten(record) == {"id": 1, "a__b": 1, "a__c__d": 2, "a__c__e": '{"f": 3}', "tags": "[1, 2]",
                                    "empty": "{}"}
    assert rest.flatten(5) == {"value": 5}


def test_upload_hints():
    assert upload.parse("upload://up-0123456789abcdef/my%20sales.csv") == ("up-0123456789abcdef", "my sales.csv")
    assert upload.hint_for("up-0123456789abcdef", "my sales.csv") == "upload://up-0123456789abcdef/my%20sales.csv"
    with pytest.raises(SourceError, match="invalid upload id"):
        upload.parse("upload://../x.csv")
    with pytest.raises(SourceError, match="invalid file name"):
        upload.parse("upload://up-0123456789abcdef/..%2F..%2Fetc%2Fpasswd")
