"""HTTP file URLs — CSV, TSV, Parquet, JSON, NDJSON, Excel, and documents (PDF, DOCX, HTML,
Markdown, text) — plus what every web source shares (REST, WebDAV): guarded requests with
bounded retries, auth from options and secrets, streamed downloads with a size cap.

A file is downloaded through the SSRF guard into a temp file (never past
`UDB_MAX_DOWNLOAD_BYTES`), its format taken from the Content-Type, the name's extension or its
first bytes, then read by the local-file code (`files.py`) or, for a document, `documents.py`.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import httpx

from shared.security import netguard
from shared.security.limits import Limits
from shared.core.errors import SourceError
from shared.core.settings import Settings
from shared.sources import documents, files, settings_of
from shared.core.tenancy import identifier
from shared.sources.detection import PROBE_BYTES, PROBE_CONNECT, PROBE_DEADLINE, PROBE_READ, Hint, Scores, Signals
from shared.sources.registry import Connector, register

PROVIDER = "http"
OPTIONS = frozenset({"auth", "headers"})
SCHEMES = ("http", "https")
REDACTED = "***"
MAX_ATTEMPTS = 5            # per request: the first try and up to 4 retries
MAX_RETRY_AFTER = 30.0      # seconds; a longer Retry-After fails the request instead of waiting
BACKOFF = (0.5, 1.0, 2.0, 4.0)
DATA_TYPES = {
    "text/csv": "csv", "application/csv": "csv", "text/tab-separated-values": "tsv",
    "application/vnd.apache.parquet": "parquet", "application/x-parquet": "parquet", "application/parquet": "parquet",
    "application/json": "json", "application/x-ndjson": "ndjson", "application/ndjson": "ndjson",
    "application/jsonl": "ndjson", "application/x-jsonlines": "ndjson",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/pdf": "pdf", "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html", "text/markdown": "markdown", "text/x-markdown": "markdown", "text/plain": None,
}
DATA_FORMATS = frozenset(files.FORMATS.values())
# URL path extensions that name a data file (.txt and .json could as well be an API's answer).
DATA_EXTENSIONS = frozenset(ext for ext in files.FORMATS if ext not in (".txt", ".json"))


# ---------------------------------------------------------------- hints

def redact(hint: str) -> str:
    """The URL with any password in it shown as `***`."""
    if not re.match(r"^[a-z][a-z0-9+.-]*://", hint, re.I) or hint.lower().startswith(("postgres", "s3:")):
        return hint
    try:
        url = urlsplit(hint)
        password = url.password
    except ValueError:
        return hint
    if not password:
        return hint
    user, host = url.netloc.rsplit("@", 1)
    return url._replace(netloc=f"{user.split(':', 1)[0]}:{REDACTED}@{host}").geturl()


def parse(hint: str, schemes: tuple[str, ...] = SCHEMES) -> httpx.URL:
    url = hint.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise SourceError(f"not an {'/'.join(schemes)} URL: {redact(url)!r}")
    return httpx.URL(url)


def file_name(url: httpx.URL | str) -> str:
    name = PurePosixPath(unquote(urlsplit(str(url)).path)).name
    return name or "index"


def content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------- auth and secrets

AUTH_TYPES = {"bearer": ("token",), "api_key": ("key",), "basic": ("username", "password")}
SECRET_FIELDS = {"bearer": ("token",), "api_key": ("key",), "basic": ("password",)}


def auth_spec(options: dict) -> dict | None:
    """The `auth` option as a dict with a known `type` (string shorthand allowed for none)."""
    auth = (options or {}).get("auth")
    if auth in (None, "", "none"):
        return None
    if not isinstance(auth, dict) or auth.get("type") not in AUTH_TYPES:
        kind = auth.get("type") if isinstance(auth, dict) else auth
        raise SourceError(f"options.auth: unknown type {kind!r}; known: {', '.join(AUTH_TYPES)}")
    missing = [f for f in AUTH_TYPES[auth["type"]] if not auth.get(f)]
    if missing:
        raise SourceError(f"options.auth ({auth['type']}): missing {', '.join(missing)}")
    if auth["type"] == "api_key" and auth.get("location", "header") not in ("header", "query"):
        raise SourceError(f"options.auth (api_key): location must be header or query, found {auth.get('location')!r}")
    return auth


def protect_options(options: dict, env, hint: str) -> dict:
    """The options as they may be persisted and sent in events: each inline credential moved
    into the tenant's secret store and replaced by its `secret://` reference."""
    options = dict(options or {})
    auth = auth_spec(options)
    if auth is None:
        options.pop("auth", None)
        return options
    auth = dict(auth)
    from shared.security.secrets import REF_PREFIX
    for field in SECRET_FIELDS[auth["type"]]:
        value = auth.get(field)
        if isinstance(value, str) and not value.startswith(REF_PREFIX):
            digest = hashlib.sha256(f"{redact(hint)}|{field}".encode()).hexdigest()[:16]
            auth[field] = env.keep_secret(f"src-{digest}-{field.replace('_', '-')}", value)
    options["auth"] = auth
    return options


def request_auth(options: dict, env) -> tuple[dict, dict, httpx.Auth | None]:
    """(headers, query params, httpx auth) for the options' auth, secrets resolved."""
    auth = auth_spec(options)
    headers = {str(k): str(v) for k, v in ((options or {}).get("headers") or {}).items()}
    params: dict = {}
    if auth is None:
        return headers, params, None
    resolve = env.resolve_secret if env is not None else (lambda v: v)
    if auth["type"] == "bearer":
        headers["Authorization"] = f"Bearer {resolve(auth['token'])}"
        return headers, params, None
    if auth["type"] == "api_key":
        name = auth.get("name") or ("X-API-Key" if auth.get("location", "header") == "header" else "api_key")
        if auth.get("location", "header") == "header":
            headers[name] = resolve(auth["key"])
        else:
            params[name] = resolve(auth["key"])
        return headers, params, None
    return headers, params, httpx.BasicAuth(auth["username"], resolve(auth["password"]))


# ---------------------------------------------------------------- requests

def client(env=None, *, deadline: float = netguard.DEFAULT_DEADLINE) -> httpx.Client:
    """The SSRF-guarded client every web source uses, under the allowlist of the env's settings
    (the caller's)."""
    return netguard.client(settings_of(env), deadline=deadline)


def max_download_bytes(env=None) -> int:
    """UDB_MAX_DOWNLOAD_BYTES of the env's settings."""
    return settings_of(env).max_download_bytes


def limits_of(env=None) -> Limits:
    """The input limits (UDB_MAX_*) of the env's settings."""
    return Limits.from_settings(settings_of(env))


def describe_error(url, exc: Exception) -> str:
    """An httpx failure in one line that says what went wrong."""
    shown = redact(str(url))
    if isinstance(exc, httpx.ConnectTimeout):
        return f"{shown}: no connection within {netguard.CONNECT_TIMEOUT:.0f} s (host unreachable?)"
    if isinstance(exc, httpx.ReadTimeout):
        return f"{shown}: the server stopped answering (read timeout {netguard.READ_TIMEOUT:.0f} s or deadline)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{shown}: timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection failed"
        if "refused" in reason.lower():
            reason = "connection refused (is the server running?)"
        return f"{shown}: cannot connect: {reason}"
    return f"{shown}: {type(exc).__name__}: {exc}"


def retry_after(response: httpx.Response, attempt: int) -> float:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        when = email.utils.parsedate_to_datetime(value) if value else None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    return BACKOFF[min(attempt, len(BACKOFF) - 1)]


def status_error(url, response: httpx.Response) -> SourceError:
    shown = redact(str(url))
    code = response.status_code
    if code == 401:
        return SourceError(f"{shown}: 401 Unauthorized: the server wants credentials "
                           f"(give options.auth: bearer, api_key or basic)")
    if code == 403:
        return SourceError(f"{shown}: 403 Forbidden: the credentials given may not read this")
    if code == 404:
        return SourceError(f"{shown}: 404 Not Found")
    if code == 429:
        return SourceError(f"{shown}: 429 Too Many Requests, still after {MAX_ATTEMPTS} attempts")
    if code >= 500:
        return SourceError(f"{shown}: server error {code}, still after {MAX_ATTEMPTS} attempts")
    return SourceError(f"{shown}: HTTP {code} {response.reason_phrase}")


def request(http: httpx.Client, method: str, url, *, stream: bool = False, attempts: int = MAX_ATTEMPTS,
            sleep=time.sleep, log=None, **kwargs) -> httpx.Response:
    """One guarded request with bounded retries: 429 (Retry-After honoured up to 30 s), 5xx and
    connection failures back off and retry, up to `attempts` tries; any other status >= 400 is
    a SourceError that names it. With stream=True the caller must close the response."""
    last_error = None
    for attempt in range(attempts):
        try:
            response = netguard.send(http, method, str(url), stream=True, **kwargs)
        except netguard.BlockedAddress:
            raise
        except SourceError:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # A host that refuses or never answers the connection is not coming back in seconds.
            raise SourceError(describe_error(url, exc)) from None
        except httpx.TransportError as exc:
            last_error = SourceError(describe_error(url, exc))
            if attempt + 1 < attempts:
                sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            continue
        code = response.status_code
        if code == 429 or code >= 500:
            wait = retry_after(response, attempt) if code in (429, 503) else BACKOFF[min(attempt, len(BACKOFF) - 1)]
            response.close()
            last_error = status_error(url, response)
            if wait > MAX_RETRY_AFTER:
                raise SourceError(f"{redact(str(url))}: {code}, asked to retry after {wait:.0f} s "
                                  f"(more than {MAX_RETRY_AFTER:.0f} s)")
            if attempt + 1 < attempts:
                if log is not None:
                    log.info("%s answered %d; retry %d in %.1f s", redact(str(url)), code, attempt + 1, wait)
                sleep(wait)
            continue
        if code >= 400:
            response.close()
            raise status_error(url, response)
        return netguard.settled(response, stream=stream)
    raise last_error  # type: ignore[misc]


def read_capped(response: httpx.Response, cap: int, what: str, setting: str = "") -> bytes:
    """The whole body, refusing one larger than `cap` bytes (checked while reading)."""
    named = f" ({setting})" if setting else ""
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise SourceError(f"{what}: the response is {int(length):,} bytes, over the {cap:,}-byte limit{named}")
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > cap:
            raise SourceError(f"{what}: the response is over the {cap:,}-byte limit{named}")
        chunks.append(chunk)
    return b"".join(chunks)


def download(http: httpx.Client, url, dest: Path, *, cap: int, headers=None, params=None, auth=None,
             log=None) -> tuple[str, int]:
    """Stream `url` into `dest` (at most `cap` bytes); returns (content type, bytes)."""
    kwargs = {k: v for k, v in (("headers", headers), ("params", params), ("auth", auth)) if v}
    response = request(http, "GET", url, stream=True, log=log, **kwargs)
    return save_capped(response, url, dest, cap=cap, what=redact(str(url)))


def save_capped(response: httpx.Response, url, dest: Path, *, cap: int, what: str) -> tuple[str, int]:
    """Stream a response's body into `dest`, at most `cap` bytes, and close it; returns
    (content type, bytes). `what` names the source in errors (never with a credential)."""
    try:
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > cap:
            raise SourceError(f"{what}: {int(length):,} bytes, over the download limit of "
                              f"{cap:,} bytes (UDB_MAX_DOWNLOAD_BYTES)")
        total = 0
        with open(dest, "wb") as out:
            try:
                for chunk in response.iter_bytes(1024 * 1024):
                    total += len(chunk)
                    if total > cap:
                        raise SourceError(f"{what}: over the download limit of {cap:,} bytes "
                                          f"(UDB_MAX_DOWNLOAD_BYTES)")
                    out.write(chunk)
            except httpx.TransportError as exc:
                raise SourceError(describe_error(url, exc)) from None
        return content_type(response), total
    finally:
        response.close()


# ---------------------------------------------------------------- formats

def file_format(name: str, ctype: str, path: Path) -> str:
    """The format of a downloaded file: extension first, then Content-Type, then first bytes."""
    with path.open("rb") as fh:
        head = fh.read(files.SNIFF_BYTES)
    if not head:
        raise SourceError(f"{name}: the file is empty")
    ext = PurePosixPath(name).suffix.lower()
    fmt = documents.FORMATS.get(ext) if ext != ".txt" else None
    fmt = fmt or files.FORMATS.get(ext)
    if ext == ".txt":
        fmt = "csv" if files.looks_tabular(head) else "text"
    if fmt is None and ctype in DATA_TYPES:
        fmt = DATA_TYPES[ctype]
        if fmt == "json" and head.lstrip()[:1] == b"{" and b"\n{" in head:
            fmt = "ndjson"
    if fmt is None:
        fmt = documents.sniff(head) or files._sniff_kind(head)
        if fmt == "csv" and not files.looks_tabular(head):
            fmt = "text"
    if fmt is None:
        raise SourceError(f"{name}: cannot tell the file type (Content-Type {ctype or 'none'}, "
                          f"supported: {files.supported()}, {documents.supported()})")
    return fmt


def describe_file(path: Path, fmt: str, *, name: str, location: str, size: int, env=None) -> dict:
    """The catalogue entry of a downloaded file, described as the local-file code would, under
    the limits of the env's settings."""
    if fmt in documents.FORMAT_NAMES:
        documents.check(path, fmt, name, limits=limits_of(env))
        return documents.stream_for(path, fmt, name=PurePosixPath(name).stem or "document",
                                    location=location, size=size)
    local = _named_copy(path, name, fmt)
    from shared.storage import duck
    con = duck.connect(extensions=("excel",))
    try:
        stream = files._stream(con, local, limits_of(env))  # checks the bytes, describes the columns
    finally:
        con.close()
    stream.update(name=identifier(PurePosixPath(name).stem or "data"), location=location, bytes=size)
    return stream


_EXT_OF = {"csv": ".csv", "tsv": ".tsv", "parquet": ".parquet", "json": ".json", "ndjson": ".ndjson", "xlsx": ".xlsx"}


def _named_copy(path: Path, name: str, fmt: str) -> Path:
    """files.py takes the format from the extension: give the temp file the right one."""
    wanted = path.with_name(identifier(PurePosixPath(name).stem or "data") + _EXT_OF[fmt])
    if wanted != path:
        path.rename(wanted)
    return wanted


def extract_file(path: Path, stream: dict, out_dir: Path, *, name: str, part_bytes: int, memory_limit: str,
                 threads: int, env=None) -> int:
    """Extract a fetched copy of the stream's file: data formats through files.py, documents
    through documents.py, under the limits of the env's settings."""
    fmt = stream["format"]
    if fmt in documents.FORMAT_NAMES:
        return documents.extract_file(path, fmt, out_dir, document=name, limits=limits_of(env))
    local = _named_copy(path, name, fmt)
    return files.extract_with({**stream, "location": str(local)}, out_dir, limits=limits_of(env),
                              part_bytes=part_bytes, memory_limit=memory_limit, threads=threads)


@contextmanager
def scratch():
    tmp = Path(tempfile.mkdtemp(prefix="udb-http-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- provider interface

def stream_options(options: dict) -> dict:
    """What of the options a stream keeps (headers and auth, secrets as references)."""
    return {k: v for k, v in (options or {}).items() if k in ("auth", "headers")}


def inspect(hint: str, *, env=None) -> dict:
    """The catalogue of one file URL: one stream, described from the downloaded file."""
    url, options = split_credentials(parse(hint), getattr(env, "options", None) or {})
    options = protect_options(options, env, hint)
    headers, params, auth = request_auth(options, env)
    name = file_name(url)
    with client(env) as http, scratch() as tmp:
        dest = tmp / "download"
        ctype, size = download(http, url, dest, cap=max_download_bytes(env), headers=headers, params=params,
                               auth=auth)
        fmt = file_format(name, ctype, dest)
        stream = describe_file(dest, fmt, name=name, location=str(url), size=size, env=env)
    keep = stream_options(options)
    if keep:
        stream["options"] = keep
    short = identifier(url.host.split(".")[0] if url.host else "web", "web")
    return {"provider": PROVIDER, "short": short, "streams": [stream]}


def split_credentials(url: httpx.URL, options: dict) -> tuple[httpx.URL, dict]:
    """A URL's user:password moved into basic-auth options (so that discovery can keep the
    password in the secret store), and the URL without them."""
    if not url.username and not url.password:
        return url, dict(options)
    options = dict(options)
    if url.password and not options.get("auth"):
        options["auth"] = {"type": "basic", "username": url.username, "password": url.password}
    return url.copy_with(username=None, password=None), options


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    url = parse(stream["location"])
    headers, params, auth = request_auth(stream.get("options") or {}, env)
    name = file_name(url)
    with client(env) as http, scratch() as tmp:
        dest = tmp / "download"
        download(http, url, dest, cap=max_download_bytes(env), headers=headers, params=params, auth=auth)
        return extract_file(dest, stream, out_dir, name=name, part_bytes=part_bytes,
                            memory_limit=memory_limit, threads=threads, env=env)


def url_file_kind(url: httpx.URL) -> tuple[str | None, str]:
    """What the extension of an http(s) URL's path names, and the extension: ("data", ".csv"),
    ("document", ".pdf"), ("json", ".json"), or (None, ext) for anything else (an API, a page)."""
    ext = PurePosixPath(PurePosixPath(url.path).name).suffix.lower()
    if ext in DATA_EXTENSIONS:
        return "data", ext
    if ext in documents.FORMATS and ext != ".txt":
        return "document", ext
    if ext == ".json":
        return "json", ext
    return None, ext


# ---------------------------------------------------------------- the probe web connectors share

@dataclass
class WebAnswer:
    """What the one GET probe of an http(s) hint found. `unreachable` says why nothing answered
    (the hint cannot be discovered); `error` a failure after connecting; else the status, the
    content type, the first PROBE_BYTES of the body (`complete` when that was all of it), and
    `kind`: what those bytes are (parquet, pdf, zip, data, ndjson, json, json-large, html, text)."""
    url: httpx.URL
    unreachable: str | None = None
    error: str | None = None
    response: httpx.Response | None = None
    status: int = 0
    ctype: str = ""
    head: bytes = b""
    complete: bool = True
    kind: str | None = None
    data_format: str | None = None  # the format the content type maps to, for kind "data"

    def json_body(self):
        """The parsed body (ValueError when it is not JSON)."""
        return json.loads(self.head)


def _kind(ctype: str, head: bytes) -> tuple[str | None, str | None]:
    """(kind, data format) of a GET answer from its first bytes and content type."""
    if head.startswith(b"PAR1"):
        return "parquet", None
    if head.startswith(b"%PDF-"):
        return "pdf", None
    if head.startswith(b"PK\x03\x04"):
        return "zip", None
    mapped = DATA_TYPES.get(ctype)
    if mapped and mapped not in ("json", "ndjson", "html"):
        return "data", mapped
    stripped = head.lstrip()
    if ctype.endswith("json") or stripped[:1] in (b"[", b"{"):
        if ctype in ("application/x-ndjson", "application/ndjson", "application/jsonl") or (
                stripped[:1] == b"{" and b"\n{" in stripped):
            return "ndjson", None
        return "json", None
    if ctype == "text/html":
        return "html", None
    if ctype.startswith("text/"):
        return "text", None
    return None, None


def probe_client(settings: Settings) -> httpx.Client:
    return netguard.client(settings, deadline=PROBE_DEADLINE, connect_timeout=PROBE_CONNECT, read_timeout=PROBE_READ)


def without_userinfo(url) -> tuple[httpx.URL, dict]:
    """The URL without `user:password@` and the auth to send instead: httpx logs every URL it
    requests (logger "httpx", INFO), so a password in it would reach the logs
    (tests/security/test_secrets.py)."""
    url = httpx.URL(str(url))
    if not url.userinfo:
        return url, {}
    return url.copy_with(userinfo=b""), {"auth": (url.username, url.password)}


def _read_head(response: httpx.Response) -> tuple[bytes, bool]:
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        total += len(chunk)
        if total >= PROBE_BYTES:
            return b"".join(chunks)[:PROBE_BYTES], False
    return b"".join(chunks), True


def get_probe(url: httpx.URL, settings: Settings) -> WebAnswer:
    """GET the URL (at most PROBE_BYTES) through the SSRF guard."""
    url, auth = without_userinfo(url)
    try:
        with probe_client(settings) as http:
            response = netguard.send(http, "GET", str(url), stream=True,
                                     headers={"Accept": "application/json, */*;q=0.5"}, **auth)
            try:
                head, complete = _read_head(response)
            finally:
                response.close()
    except netguard.BlockedAddress as exc:
        return WebAnswer(url, unreachable=str(exc))
    except SourceError as exc:
        return WebAnswer(url, unreachable=str(exc))
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return WebAnswer(url, unreachable=describe_error(url, exc))
    except httpx.HTTPError as exc:
        return WebAnswer(url, error=describe_error(url, exc))
    ctype = content_type(response)
    kind, data_format = _kind(ctype, head) if response.status_code < 400 else (None, None)
    return WebAnswer(url, response=response, status=response.status_code, ctype=ctype, head=head,
                     complete=complete, kind=kind, data_format=data_format)


def web_answer(hint: Hint) -> WebAnswer:
    """The answer to one GET of an http(s) hint: made by the first connector that asks, shared
    with the others (http, rest, webdav) through the hint."""
    if "get" not in hint.shared:
        hint.shared["get"] = get_probe(hint.url, hint.settings)
    return hint.shared["get"]


@register
class HttpConnector(Connector):
    """A file at an http(s) URL: data (CSV, Parquet, JSON, Excel...) or a document."""
    providers = (PROVIDER,)
    options = OPTIONS

    def signals(self, hint: Hint) -> Signals | None:
        if not hint.is_web:
            return None
        kind, ext = url_file_kind(hint.url)
        if kind == "data":
            return Signals().add(PROVIDER, 0.75, f"URL path ends in a data file extension ({ext})")
        if kind == "document":
            return Signals().add(PROVIDER, 0.75, f"URL path ends in a document extension ({ext})")
        if kind == "json":
            return Signals().add(PROVIDER, 0.6, "URL path ends in .json (a JSON file)")
        return Signals().add(PROVIDER, 0.3, "an http(s) URL")

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        """The shared GET's content: magic bytes, content type, JSON lines, text (records in a
        static .json file are rest.py's to find: it adds this provider's signal for them)."""
        if not hint.is_web:
            return None
        answer = web_answer(hint)
        if answer.unreachable or answer.error:
            return answer.unreachable
        if answer.status >= 400:
            if answer.status not in (401, 403):
                scores.note(PROVIDER, f"GET answered {answer.status}")
            return None
        kind, ctype = answer.kind, answer.ctype
        if kind == "parquet":
            scores.add(PROVIDER, 0.95, "content starts with PAR1 (Parquet)")
        elif kind == "pdf":
            scores.add(PROVIDER, 0.95, "content starts with %PDF- (a PDF document)")
        elif kind == "zip":
            scores.add(PROVIDER, 0.9, "content is a zip container (Excel .xlsx or Word .docx)")
        elif kind == "data":
            mapped = answer.data_format
            scores.add(PROVIDER, 0.95 if mapped in ("csv", "tsv", "parquet", "xlsx") else 0.8,
                       f"Content-Type {ctype} ({mapped})")
        elif kind == "ndjson":
            scores.add(PROVIDER, 0.9, "newline-delimited JSON (one object per line)")
        elif kind == "json" and not answer.complete:
            scores.add(PROVIDER, 0.6, "a large JSON document")
        elif kind == "html":
            scores.add(PROVIDER, 0.6, "Content-Type text/html (a web page: read as a document)")
        elif kind == "text":
            tabular = files.looks_tabular(answer.head)
            scores.add(PROVIDER, 0.8 if tabular else 0.6,
                       f"Content-Type {ctype}, {'delimited columns (CSV)' if tabular else 'text'}")
        return None
