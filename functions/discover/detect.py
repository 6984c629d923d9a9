"""Hint -> ranked provider candidates with a confidence and the reasons behind it.

Two kinds of signal. Syntax, which costs nothing: the scheme, the host (share links of
OneDrive, SharePoint, Google Drive), the path's extension, DSN syntax, a local path's existence
and first bytes. Probes, where the hint is reachable, each with a short timeout and through
the SSRF guard: an HTTP GET (content type, magic bytes, JSON shape: records, pagination), a
WebDAV PROPFIND (207 Multi-Status), an S3 ListObjectsV2 of one key, a PostgreSQL connect.
Each signal adds its reason; the candidates come out best first, and `ambiguous` says that
the top two are within AMBIGUITY_MARGIN of each other.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx

from shared.security import netguard
from shared.core.errors import SourceError
from shared.core.settings import Settings
from shared.sources import documents, files, postgres, rest, webdav
from shared.sources import http as web

AMBIGUITY_MARGIN = 0.15
PROBE_CONNECT = 1.5          # seconds: a probe gives up quickly, the catalogue step says why
PROBE_READ = 2.0
PROBE_DEADLINE = 2.5
PROBE_BYTES = 256 * 1024     # of a GET body: enough for the shape of a first page or a file's magic
DATA_EXTENSIONS = {ext for ext in files.FORMATS if ext not in (".txt", ".json")}
SHARE_HOSTS = (("1drv.ms", "onedrive", "OneDrive short share link (1drv.ms)"),
               ("onedrive.live.com", "onedrive", "OneDrive share link (onedrive.live.com)"),
               ("drive.google.com", "gdrive", "Google Drive link (drive.google.com)"),
               ("docs.google.com", "gdrive", "Google Docs/Sheets link (docs.google.com)"))
API_PATH = re.compile(r"/(api|v\d+|rest|graphql|odata)(/|$)", re.I)
LIBPQ_KEYWORDS = re.compile(r"^\s*(host|dbname|user|port|hostaddr)\s*=", re.I)


class _Scores:
    """Candidates being built: the best confidence any signal gave, and every reason."""

    def __init__(self):
        self.found: dict[str, dict] = {}

    def add(self, provider: str, confidence: float, reason: str) -> None:
        entry = self.found.setdefault(provider, {"provider": provider, "confidence": 0.0, "reasons": []})
        entry["confidence"] = round(min(1.0, max(entry["confidence"], confidence)), 2)
        if reason not in entry["reasons"]:
            entry["reasons"].append(reason)

    def note(self, provider: str, reason: str) -> None:
        if provider in self.found and reason not in self.found[provider]["reasons"]:
            self.found[provider]["reasons"].append(reason)

    def result(self, unreachable: str | None = None) -> dict:
        candidates = sorted(self.found.values(), key=lambda c: -c["confidence"])
        ambiguous = len(candidates) > 1 and candidates[0]["confidence"] - candidates[1]["confidence"] < AMBIGUITY_MARGIN
        out = {"candidates": candidates, "ambiguous": ambiguous}
        if unreachable:
            out["unreachable"] = unreachable
        return out


def _scheme(hint: str) -> str:
    if "://" not in hint:
        return ""
    try:
        return urlsplit(hint).scheme.lower()
    except ValueError:
        return hint.split("://", 1)[0].lower()


def detect(hint: str, options: dict | None = None, *, probe: bool = True, settings: Settings | None = None) -> dict:
    """{candidates: [{provider, confidence, reasons}], ambiguous, unreachable?} best first.
    `unreachable` is set when a network hint could not be reached at all (with the reason).
    Probes run under the caller's settings (SSRF allowlist, UDB's own S3); without any, the
    declared defaults (public addresses only, no S3 of UDB's own)."""
    settings = settings if settings is not None else Settings()
    hint = hint.strip()
    scores = _Scores()
    given = (options or {}).get("provider")
    if given:
        scores.add(str(given), 1.0, "provider given in options")
    scheme = _scheme(hint)
    unreachable = None
    if scheme == "s3":
        scores.add("s3", 0.95, "scheme s3")
        if probe and not given:
            _probe_s3(hint, scores, settings)
    elif scheme in postgres.SCHEMES:
        scores.add("postgres", 0.95, "DSN syntax")
        if probe and not given:
            _probe_postgres(hint, scores, settings)
    elif scheme == "upload":
        scores.add("upload", 0.99, "scheme upload:// (a file uploaded to POST /uploads)")
    elif scheme in webdav.SCHEMES:
        scores.add("webdav", 0.97, f"scheme {scheme}://")
        if probe and not given:
            unreachable = _probe_webdav(webdav.to_http(hint), scores, settings, only=True)
    elif scheme in ("http", "https"):
        unreachable = _detect_web(hint, scores, settings, probe=probe and not given)
    elif scheme:
        pass  # a scheme UDB has no provider for: no candidate, discover says so
    elif LIBPQ_KEYWORDS.match(hint):
        scores.add("postgres", 0.6, "libpq key=value syntax (give a postgresql:// URI)")
    else:
        _detect_local(hint, scores)
    return scores.result(unreachable if not given else None)


# ---------------------------------------------------------------- local paths

def _detect_local(hint: str, scores: _Scores) -> None:
    path = files.local_path(hint)
    if path is None:
        return
    if path.is_dir():
        scores.add("directory", 0.99, "local path")
        scores.note("directory", "is a directory")
        return
    if not path.is_file():
        scores.add("file", 0.3, "looks like a local path")
        scores.note("file", "nothing exists there")
        return
    ext = path.suffix.lower()
    with path.open("rb") as fh:
        head = fh.read(files.SNIFF_BYTES)
    if ext == ".txt":
        if web._looks_tabular(head):
            scores.add("file", 0.9, "a .txt file whose lines split into the same columns (CSV)")
            scores.add("document", 0.6, "a .txt file (text document)")
        else:
            scores.add("document", 0.9, "a .txt file of prose, not delimited columns")
            scores.add("file", 0.4, "a .txt file (could be CSV)")
        return
    if ext in documents.FORMATS:
        scores.add("document", 0.99, f"local file, extension {ext} is a document format")
        return
    if ext in files.FORMATS:
        scores.add("file", 0.99, "local path")
        scores.note("file", "is a file")
        scores.note("file", f"extension {ext} is a known format")
        return
    kind = documents.sniff(head)
    if kind:
        scores.add("document", 0.9 if not ext else 0.8, f"local file, content is {kind} (magic bytes)")
        return
    kind = files._sniff_kind(head)
    if kind and not ext:
        scores.add("file", 0.85, f"local file without extension, content looks like {kind}")
    else:
        scores.add("file", 0.6, f"local file, extension {ext or '(none)'} is not a known format")


# ---------------------------------------------------------------- web

def _detect_web(hint: str, scores: _Scores, settings: Settings, *, probe: bool) -> str | None:
    try:
        url = httpx.URL(hint)
    except (httpx.InvalidURL, ValueError) as exc:
        raise SourceError(f"not a valid URL: {web.redact(hint)!r}: {exc}") from None
    host = (url.host or "").lower()
    for suffix, provider, reason in SHARE_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            scores.add(provider, 0.97, reason)
            return None
    if host.endswith(".sharepoint.com"):
        if host.endswith("-my.sharepoint.com"):
            scores.add("onedrive", 0.95, "OneDrive for Business link (*-my.sharepoint.com)")
            scores.add("sharepoint", 0.75, "a SharePoint host")
        else:
            scores.add("sharepoint", 0.97, "SharePoint link (*.sharepoint.com)")
        return None
    name = PurePosixPath(url.path).name
    ext = PurePosixPath(name).suffix.lower()
    if ext in DATA_EXTENSIONS:
        scores.add("http", 0.75, f"URL path ends in a data file extension ({ext})")
    elif ext in documents.FORMATS and ext != ".txt":
        scores.add("http", 0.75, f"URL path ends in a document extension ({ext})")
    elif ext == ".json":
        scores.add("http", 0.6, "URL path ends in .json (a JSON file)")
        scores.add("rest", 0.5, "URL path ends in .json (could be an API)")
    else:
        api = bool(API_PATH.search(url.path))
        scores.add("rest", 0.5 if api else 0.4, "URL path looks like an API" if api else "an http(s) URL")
        scores.add("http", 0.3, "an http(s) URL")
        scores.add("webdav", 0.3, "an http(s) URL")
    if not probe:
        return None
    unreachable = _probe_get(url, scores, settings)
    if unreachable is None:
        _probe_webdav(str(url), scores, settings)
    return unreachable


def _probe_client(settings: Settings):
    return netguard.client(settings, deadline=PROBE_DEADLINE, connect_timeout=PROBE_CONNECT, read_timeout=PROBE_READ)


def _without_userinfo(url) -> tuple[httpx.URL, dict]:
    """The URL without `user:password@` and the auth to send instead: httpx logs every URL it
    requests (logger "httpx", INFO), so a password in it would reach the logs
    (tests/security/test_secrets.py)."""
    url = httpx.URL(str(url))
    if not url.userinfo:
        return url, {}
    return url.copy_with(userinfo=b""), {"auth": (url.username, url.password)}


def _probe_get(url: httpx.URL, scores: _Scores, settings: Settings) -> str | None:
    """GET the URL (at most PROBE_BYTES): content type, magic bytes, JSON shape."""
    url, auth = _without_userinfo(url)
    try:
        with _probe_client(settings) as http:
            response = netguard.send(http, "GET", str(url), stream=True,
                                     headers={"Accept": "application/json, */*;q=0.5"}, **auth)
            try:
                head, complete = _read_head(response)
            finally:
                response.close()
    except netguard.BlockedAddress as exc:
        return str(exc)
    except SourceError as exc:
        return str(exc)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return web.describe_error(url, exc)
    except httpx.HTTPError as exc:
        scores.note("rest", f"GET probe failed: {web.describe_error(url, exc)}")
        return None
    code, ctype = response.status_code, web.content_type(response)
    if code in (401, 403):
        scores.add("rest", 0.6, f"GET answered {code}: needs credentials (options.auth)")
        return None
    if code >= 400:
        scores.note("rest", f"GET answered {code}")
        scores.note("http", f"GET answered {code}")
        return None
    _classify_body(url, response, ctype, head, complete, scores)
    return None


def _read_head(response: httpx.Response) -> tuple[bytes, bool]:
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        total += len(chunk)
        if total >= PROBE_BYTES:
            return b"".join(chunks)[:PROBE_BYTES], False
    return b"".join(chunks), True


def _classify_body(url: httpx.URL, response: httpx.Response, ctype: str, head: bytes, complete: bool,
                   scores: _Scores) -> None:
    name = PurePosixPath(url.path).name
    if head.startswith(b"PAR1"):
        scores.add("http", 0.95, "content starts with PAR1 (Parquet)")
        return
    if head.startswith(b"%PDF-"):
        scores.add("http", 0.95, "content starts with %PDF- (a PDF document)")
        return
    if head.startswith(b"PK\x03\x04"):
        scores.add("http", 0.9, "content is a zip container (Excel .xlsx or Word .docx)")
        return
    mapped = web.DATA_TYPES.get(ctype)
    if mapped and mapped not in ("json", "ndjson", "html"):
        scores.add("http", 0.95 if mapped in ("csv", "tsv", "parquet", "xlsx") else 0.8,
                   f"Content-Type {ctype} ({mapped})")
        return
    stripped = head.lstrip()
    looks_json = ctype.endswith("json") or stripped[:1] in (b"[", b"{")
    if looks_json:
        if ctype in ("application/x-ndjson", "application/ndjson", "application/jsonl") or (
                stripped[:1] == b"{" and b"\n{" in stripped):
            scores.add("http", 0.9, "newline-delimited JSON (one object per line)")
            return
        if not complete:
            scores.add("rest", 0.6, f"JSON response larger than {PROBE_BYTES // 1024} KiB (shape not checked)")
            scores.add("http", 0.6, "a large JSON document")
            return
        try:
            body = json.loads(head)
        except ValueError:
            scores.note("rest", "body is not valid JSON")
            return
        try:
            path, records = rest.find_records(body)
        except SourceError:
            scores.add("rest", 0.5, "JSON without an array of records")
            return
        where = ".".join(path) or "the top level"
        spec, reason = rest.detect_paginator(url, response, body, records)
        static_file = name.lower().endswith(".json")
        if spec["type"] != "none":
            scores.add("rest", 0.95, f"JSON records at {where}; pagination: {reason}")
        elif path:
            scores.add("rest", 0.9, f"JSON object with a records array at {where}")
        else:
            scores.add("rest", 0.8 if not static_file else 0.7, "JSON array of records at the top level")
        if static_file:
            scores.add("http", 0.8, "a .json file URL")
        if not records:
            scores.note("rest", "the first page has no records")
        return
    if ctype == "text/html":
        scores.add("http", 0.6, "Content-Type text/html (a web page: read as a document)")
        return
    if ctype.startswith("text/"):
        tabular = web._looks_tabular(head)
        scores.add("http", 0.8 if tabular else 0.6,
                   f"Content-Type {ctype}, {'delimited columns (CSV)' if tabular else 'text'}")


def _probe_webdav(url: str, scores: _Scores, settings: Settings, only: bool = False) -> str | None:
    """PROPFIND Depth 0: 207 Multi-Status means WebDAV."""
    url, auth = _without_userinfo(url)
    try:
        with _probe_client(settings) as http:
            entries = webdav.propfind(http, str(url), depth="0", **auth)
    except netguard.BlockedAddress as exc:
        return str(exc) if only else None
    except SourceError as exc:
        if only:
            scores.note("webdav", f"PROPFIND probe: {exc}")
            text = str(exc)
            return text if "cannot connect" in text or "no connection" in text or "resolve" in text else None
        return None
    except httpx.HTTPError:
        return None
    collection = bool(entries and entries[0]["collection"])
    scores.add("webdav", 0.98 if collection else 0.9,
               "PROPFIND answered 207 Multi-Status" + (" (a folder)" if collection else " (a file)"))
    return None


# ---------------------------------------------------------------- s3, postgres

def _probe_s3(hint: str, scores: _Scores, settings: Settings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from shared.sources import s3

    config = s3.S3Config.from_settings(settings)
    if not config.endpoint and not config.access_key:
        return  # no S3 configured here: nothing to probe
    try:
        bucket, key = s3.parse(hint)
    except SourceError:
        return
    if bucket == settings.bucket:
        return  # UDB's own bucket is never a source: not even whether a key exists may leak
    # UDB's own keys from the settings, or unsigned: never the host's default credential chain.
    client = config.client(connect_timeout=PROBE_CONNECT, read_timeout=PROBE_READ, attempts=1)
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        scores.note("s3", "ListObjectsV2 answered" + ("" if listed.get("KeyCount") else " (no objects there)"))
    except ClientError as exc:
        scores.note("s3", f"ListObjectsV2 answered {exc.response.get('Error', {}).get('Code', 'an error')}")
    except BotoCoreError:
        pass  # unreachable: the catalogue step says why


def probe_postgres(dsn, settings: Settings, *, connect_timeout: int = 2) -> dict:
    """Connect once with psycopg at the checked address: {"version", "parameters"}, where
    `parameters` are the connection parameters libpq used (psycopg never returns the password)."""
    import psycopg

    conninfo = postgres.pinned_conninfo(dsn, dsn.password, settings)
    with psycopg.connect(conninfo + f" connect_timeout={int(connect_timeout)}", autocommit=True) as con:
        return {"version": con.info.server_version, "parameters": con.info.get_parameters()}


def _probe_postgres(hint: str, scores: _Scores, settings: Settings) -> None:
    """Connect once with the hint's own password (never a stored one: the probe runs before
    the tenant's catalogue step), at the address the SSRF guard checked (`hostaddr`)."""
    try:
        dsn = postgres.parse(hint)
    except SourceError:
        return  # not probed; the catalogue step gives the reason
    import psycopg

    started = time.monotonic()
    try:
        answer = probe_postgres(dsn, settings)
        where = answer["parameters"].get("hostaddr") or dsn.host or "localhost"
        scores.note("postgres", f"connected to {where} (PostgreSQL {answer['version'] // 10000}) "
                                f"in {1000 * (time.monotonic() - started):.0f} ms")
    except SourceError:
        return  # refused by the SSRF guard: the catalogue step gives the reason
    except psycopg.Error as exc:
        reason = postgres._reason(exc, dsn)
        if "password" in reason or "authentication" in reason or "does not exist" in reason:
            scores.note("postgres", f"a PostgreSQL server answered: {reason}")
