"""REST/JSON APIs: one endpoint, its pages, one table.

Discovery fetches the first page, finds the records in it and how the API pages, and describes
the columns; sync walks every page and streams the records to disk, so memory holds one page
at a time whatever the API's size, then DuckDB turns the NDJSON into chunked Parquet.

Options (the `options` of dev.udb.discover.requested; each can be left to auto-detection):
- `record_path`: where the records are: "" for a top-level array, "data" or "data.items".
  Auto: a top-level array, else the largest array of objects under a key such as data, items,
  results, records, value, entries, rows (searched three levels deep).
- `paginator`: a name or a dict with `type` (a registry, as dlt's rest_api):
  `link_header` (Link: <...>; rel="next"), `next_url` {next_path} (a next URL in the body: next,
  next_url, links.next, @odata.nextLink...), `cursor` {cursor_path, cursor_param} (next_cursor ->
  ?cursor=), `offset` {offset_param, limit_param, limit, total_path}, `page` {page_param,
  size_param, size, start, total_pages_path} (stops on an empty page), `none`.
- `auth`: {type: bearer, token} | {type: api_key, name, key, location: header|query} |
  {type: basic, username, password}; each secret inline (discovery moves it into the secret
  store) or as `secret://name`.
- `headers`, `params`: extra request headers and query parameters.
- `incremental`: {cursor_field, filter_param?, initial_value?}: each sync keeps records whose
  cursor is newer than the last sync's (state in tenants/<t>/state/<source_id>.json); with
  `filter_param` the API is asked for newer records only (?<filter_param>=<last value>),
  otherwise every page is read and the filter is applied here, client-side.
- `primary_key`, `name`, `max_pages`.

Nested objects: a record's objects are flattened into `parent__child` columns two levels deep
(`{"a": {"b": {"c": 1}}}` gives `a__b__c`); an object nested deeper than that, and every array,
is kept whole as JSON text in one VARCHAR column.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from shared.storage import duck
from shared.core.errors import SourceError
from shared.sources import http as web
from shared.storage import syncstate as state
from shared.core.tenancy import identifier
from shared.sources.detection import PROBE_BYTES, Hint, Scores, Signals
from shared.sources.registry import Connector, register

PROVIDER = "rest"
OPTIONS = frozenset({"record_path", "paginator", "auth", "headers", "params", "incremental", "primary_key",
                     "name", "max_pages"})
RECORD_KEYS = ("data", "items", "results", "records", "value", "entries", "rows", "objects", "hits",
               "elements", "list", "content", "docs", "nodes")
FLATTEN_DEPTH = 2
DEFAULT_MAX_PAGES = 100_000
SEP = "__"


# ---------------------------------------------------------------- records

def _path_list(path) -> list[str]:
    if path in (None, "", "$", "."):
        return []
    if isinstance(path, (list, tuple)):
        return [str(p) for p in path]
    return [p for p in str(path).removeprefix("$.").split(".") if p]


def _get(body, path: str):
    """The value at a dotted path; a key that itself contains dots (@odata.nextLink) wins."""
    if isinstance(body, dict) and path in body:
        return body[path]
    return _at(body, _path_list(path))


def _at(body, path: list[str]):
    for key in path:
        if isinstance(body, dict) and key in body:
            body = body[key]
        elif isinstance(body, list) and key.isdigit() and int(key) < len(body):
            body = body[int(key)]
        else:
            return None
    return body


def find_records(body, record_path=None) -> tuple[list[str], list]:
    """(path, records) of a response body: the given path, or the auto-detected one."""
    if record_path is not None:
        path = _path_list(record_path)
        found = _at(body, path) if path else body
        if not isinstance(found, list):
            where = ".".join(path) or "the top level"
            raise SourceError(f"options.record_path {'.'.join(path) or '(top level)'!r}: no array at {where} "
                              f"(found {type(found).__name__})")
        return path, found
    if isinstance(body, list):
        return [], body
    if not isinstance(body, dict):
        raise SourceError(f"the response is a JSON {type(body).__name__}, not an array or object of records")
    best = None
    for path, value in _arrays(body, [], 0):
        objects = value and all(isinstance(v, dict) for v in value[:50])
        known = path[-1].lower() in RECORD_KEYS
        if not (objects or (known and not value)):
            continue
        score = (bool(value), known, len(value), -len(path))
        if best is None or score > best[0]:
            best = (score, path, value)
    if best is None:
        keys = ", ".join(list(body)[:12]) or "(none)"
        raise SourceError(f"no array of records in the JSON response (top-level keys: {keys}); "
                          f"name it with options.record_path")
    return best[1], best[2]


def _arrays(obj: dict, path: list[str], depth: int):
    for key, value in obj.items():
        if isinstance(value, list):
            yield path + [key], value
        elif isinstance(value, dict) and depth < 2:
            yield from _arrays(value, path + [key], depth + 1)


def flatten(record, max_depth: int = FLATTEN_DEPTH) -> dict:
    """A record as flat columns: objects as `a__b` two levels deep, deeper objects and arrays
    as JSON text, a non-object record as {"value": ...}."""
    if not isinstance(record, dict):
        return {"value": json.dumps(record) if isinstance(record, list) else record}
    out: dict = {}

    def walk(obj: dict, prefix: str, depth: int) -> None:
        for key, value in obj.items():
            name = f"{prefix}{SEP}{key}" if prefix else str(key)
            if isinstance(value, dict):
                if value and depth < max_depth:
                    walk(value, name, depth + 1)
                else:
                    out[name] = json.dumps(value, sort_keys=True)
            elif isinstance(value, list):
                out[name] = json.dumps(value)
            else:
                out[name] = value

    walk(record, "", 0)
    return out


# ---------------------------------------------------------------- paginators (a registry)

class Paginator:
    """How to get the next page. `start` gives the first request's extra params; `next` the
    (url, params) of the following page, or None after the last."""
    type = "none"

    def __init__(self, **config):
        self.config = config

    def spec(self) -> dict:
        return {"type": self.type, **self.config}

    def start(self) -> dict:
        return {}

    def next(self, url: httpx.URL, params: dict, response: httpx.Response, body, records: list):
        return None


class SinglePage(Paginator):
    type = "none"


class LinkHeader(Paginator):
    type = "link_header"

    def next(self, url, params, response, body, records):
        link = response.links.get("next", {}).get("url")
        if not link or not records:
            return None
        return url.join(link), {}


class NextUrl(Paginator):
    type = "next_url"

    def next(self, url, params, response, body, records):
        value = _get(body, self.config.get("next_path", "next"))
        if isinstance(value, dict):
            value = value.get("href")
        if not isinstance(value, str) or not value or not records:
            return None
        return url.join(value), {}


class Cursor(Paginator):
    type = "cursor"

    def next(self, url, params, response, body, records):
        value = _get(body, self.config.get("cursor_path", "next_cursor"))
        more = _at(body, ["has_more"])
        if value in (None, "") or more is False or not records:
            return None
        return url, {**params, self.config.get("cursor_param", "cursor"): value}


class Offset(Paginator):
    type = "offset"

    def start(self):
        params = {self.config.get("offset_param", "offset"): int(self.config.get("start", 0))}
        if self.config.get("limit"):
            params[self.config.get("limit_param", "limit")] = int(self.config["limit"])
        return params

    def next(self, url, params, response, body, records):
        if not records:
            return None
        offset_param = self.config.get("offset_param", "offset")
        offset = int(params.get(offset_param, self.config.get("start", 0))) + len(records)
        total = _get(body, self.config.get("total_path", "total"))
        if isinstance(total, int) and offset >= total:
            return None
        limit = self.config.get("limit")
        if total is None and limit and len(records) < int(limit):
            return None
        return url, {**params, offset_param: offset}


class PageNumber(Paginator):
    type = "page"

    def start(self):
        params = {self.config.get("page_param", "page"): int(self.config.get("start", 1))}
        if self.config.get("size_param") and self.config.get("size"):
            params[self.config["size_param"]] = int(self.config["size"])
        return params

    def next(self, url, params, response, body, records):
        if not records:
            return None
        page_param = self.config.get("page_param", "page")
        page = int(params.get(page_param, self.config.get("start", 1)))
        total_pages = _get(body, self.config.get("total_pages_path", "total_pages"))
        if isinstance(total_pages, int) and page >= total_pages:
            return None
        return url, {**params, page_param: page + 1}


PAGINATORS: dict[str, type[Paginator]] = {p.type: p for p in (SinglePage, LinkHeader, NextUrl, Cursor, Offset, PageNumber)}
PAGINATOR_FIELDS = {"none": set(), "link_header": set(), "next_url": {"next_path"},
                    "cursor": {"cursor_path", "cursor_param"},
                    "offset": {"offset_param", "limit_param", "limit", "total_path", "start"},
                    "page": {"page_param", "size_param", "size", "start", "total_pages_path"}}


def make_paginator(spec) -> Paginator:
    """A paginator from a name ("cursor") or a dict with `type`, checked against the registry."""
    if isinstance(spec, Paginator):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or spec.get("type") not in PAGINATORS:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise SourceError(f"options.paginator: unknown type {kind!r}; known: {', '.join(PAGINATORS)}")
    config = {k: v for k, v in spec.items() if k != "type"}
    unknown = set(config) - PAGINATOR_FIELDS[spec["type"]]
    if unknown:
        raise SourceError(f"options.paginator ({spec['type']}): unknown fields {sorted(unknown)}; "
                          f"known: {sorted(PAGINATOR_FIELDS[spec['type']]) or 'none'}")
    return PAGINATORS[spec["type"]](**config)


NEXT_URL_PATHS = ("next", "next_url", "nextUrl", "next_page_url", "@odata.nextLink", "odata.nextLink",
                  "links.next", "links.next.href", "_links.next.href", "_links.next", "paging.next", "meta.next")
CURSOR_PATHS = {"next_cursor": "cursor", "nextCursor": "cursor", "cursor": "cursor", "next_page_token": "page_token",
                "nextPageToken": "pageToken", "meta.next_cursor": "cursor", "response_metadata.next_cursor": "cursor",
                "pagination.next_cursor": "cursor"}
TOTAL_PATHS = ("total", "total_count", "totalCount", "count", "meta.total", "pagination.total")
PAGE_KEYS = ("page", "current_page", "page_number", "pageNumber")


def detect_paginator(url: httpx.URL, response: httpx.Response, body, records: list) -> tuple[dict, str]:
    """(paginator spec, reason) from the first page: Link header, a next URL or a cursor in the
    body, offset/limit/total, a page number; `none` when nothing says there are more pages."""
    if response.links.get("next", {}).get("url"):
        return {"type": "link_header"}, "Link header with rel=next"
    query = dict(parse_qsl(urlsplit(str(url)).query))
    if isinstance(body, dict):
        for path in NEXT_URL_PATHS:
            value = _get(body, path)
            if isinstance(value, str) and (value.startswith(("http://", "https://", "/", "?"))):
                return {"type": "next_url", "next_path": path}, f"next URL in the body at {path!r}"
        for path, param in CURSOR_PATHS.items():
            if _present(body, path):
                return ({"type": "cursor", "cursor_path": path, "cursor_param": param},
                        f"cursor in the body at {path!r} (sent back as ?{param}=)")
        total_path = next((p for p in TOTAL_PATHS if isinstance(_get(body, p), int)), None)
        if isinstance(body.get("offset"), int) or ("offset" in query):
            limit = body.get("limit") if isinstance(body.get("limit"), int) else (
                int(query["limit"]) if query.get("limit", "").isdigit() else None)
            spec = {"type": "offset", "limit": limit or len(records) or None, "total_path": total_path or "total"}
            return {k: v for k, v in spec.items() if v is not None}, "offset/limit in the body" + (
                f" with a total at {total_path!r}" if total_path else "")
        page_key = next((k for k in PAGE_KEYS if isinstance(body.get(k), int)), None)
        if page_key is not None or "page" in query:
            spec = {"type": "page", "page_param": "page"}
            for size_key in ("per_page", "page_size", "pageSize", "size"):
                if isinstance(body.get(size_key), int):
                    spec.update(size_param=size_key, size=body[size_key])
                    break
            for total_key in ("total_pages", "totalPages", "last_page", "page_count"):
                if isinstance(body.get(total_key), int):
                    spec["total_pages_path"] = total_key
                    break
            return spec, f"page number in the {'body' if page_key else 'query'} (stops on an empty page)"
    elif "page" in query:
        return {"type": "page", "page_param": "page"}, "page number in the query (stops on an empty page)"
    elif "offset" in query:
        return {"type": "offset", "limit": len(records) or None}, "offset in the query"
    return {"type": "none"}, "no pagination signal: one page"


def _present(body: dict, path: str) -> bool:
    parts = _path_list(path)
    parent = _at(body, parts[:-1]) if len(parts) > 1 else body
    return isinstance(parent, dict) and parts[-1] in parent and not isinstance(parent[parts[-1]], (dict, list))


# ---------------------------------------------------------------- pages

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def parse_json(data: bytes, url, ctype: str):
    try:
        # NaN and the infinities parse to shared objects, so a page that repeats with them in
        # it still compares equal to the previous one (iter_pages).
        return json.loads(data, parse_constant=_CONSTANTS.__getitem__)
    except (ValueError, UnicodeDecodeError):
        start = data.lstrip()[:40]
        raise SourceError(f"{web.redact(str(url))}: not JSON (Content-Type {ctype or 'none'}, starts with "
                          f"{start!r})") from None


def fetch_page(http: httpx.Client, url: httpx.URL, params: dict, headers: dict, auth, cap: int, log=None):
    """(response, body) of one page, refusing a page larger than `cap` bytes."""
    kwargs: dict[str, Any] = {"params": params or None, "headers": {"Accept": "application/json", **headers}}
    if auth is not None:
        kwargs["auth"] = auth
    response = web.request(http, "GET", url, stream=True, log=log, **kwargs)
    try:
        try:
            data = web.read_capped(response, cap, web.redact(str(response.url)), "UDB_MAX_PAGE_BYTES")
        except httpx.TransportError as exc:
            raise SourceError(web.describe_error(url, exc)) from None
    finally:
        response.close()
    return response, parse_json(data, response.url, web.content_type(response))


def page_cap(env=None) -> int:
    """UDB_MAX_PAGE_BYTES of the env's settings (the caller's)."""
    return web.settings_of(env).max_page_bytes


def iter_pages(http, url: httpx.URL, *, paginator: Paginator, record_path, headers: dict, base_params: dict,
               auth, cap: int, max_pages: int = DEFAULT_MAX_PAGES, log=None):
    """Yield the records of each page, following the paginator; stops when a page repeats the
    previous one (an API that ignores the page parameter would otherwise loop forever)."""
    params = {**base_params, **paginator.start()}
    current, previous = url, None
    for _ in range(max_pages):
        response, body = fetch_page(http, current, params, headers, auth, cap, log)
        _, records = find_records(body, record_path)
        # Compared as parsed values (key order aside, as a sorted dump would be): serialising
        # every page again to hash it cost about 8% of the CPU of a 200k-record sync.
        if records and records == previous:
            if log is not None:
                log.warning("%s: page repeats the previous one; stopping", web.redact(str(current)))
            return
        previous = records
        yield records
        step = paginator.next(current, params, response, body, records)
        if step is None:
            return
        current, page_params = step
        params = {**base_params, **page_params}
    raise SourceError(f"{web.redact(str(url))}: more than {max_pages} pages (options.max_pages)")


# ---------------------------------------------------------------- schema

def _write_ndjson(records, out) -> int:
    n = 0
    for record in records:
        out.write(json.dumps(flatten(record), default=str))
        out.write("\n")
        n += 1
    return n


def _reader(path: Path) -> str:
    return (f"read_json('{str(path)}', format = 'newline_delimited', sample_size = -1, "
            f"union_by_name = true, maximum_object_size = 134217728)")


def _select_list(con, path: Path) -> tuple[str, list[dict]]:
    """The SELECT list over the NDJSON (JSON-typed columns read as text) and its columns."""
    described = con.execute(f"DESCRIBE SELECT * FROM {_reader(path)}").fetchall()
    exprs, columns = [], []
    for name, dtype, *_ in described:
        q = duck.quote(name)
        if dtype in ("JSON", "NULL") or dtype.startswith(("STRUCT", "MAP")) or dtype.endswith("[]"):
            exprs.append(f"CAST({q} AS VARCHAR) AS {q}")
            dtype = "VARCHAR"
        else:
            exprs.append(q)
        columns.append({"name": name, "type": dtype})
    return ", ".join(exprs), columns


CURSOR_NAME = re.compile(r"(updated|modified|changed|created|inserted)(_?at|_?on|_?time|_?date)?$|"
                         r"timestamp$|^ts$|^seq|sequence|version$", re.I)
KEY_NAME = re.compile(r"^(id|uuid|guid|key)$|_id$|Id$")


def describe_records(records: list, tmp: Path) -> tuple[list[dict], list[str], list[str]]:
    """(columns, cursor candidates, primary-key candidates) of a sample of records."""
    sample = tmp / "sample.ndjson"
    with sample.open("w") as out:
        _write_ndjson(records, out)
    con = duck.connect()
    try:
        select, columns = _select_list(con, sample)
        cursors = [c["name"] for c in columns if c["type"].startswith(("TIMESTAMP", "DATE"))]
        cursors += [c["name"] for c in columns if c["name"] not in cursors and CURSOR_NAME.search(c["name"])
                    and not c["type"].startswith(("BOOLEAN", "VARCHAR[]"))]
        keys = []
        for c in columns:
            if KEY_NAME.search(c["name"]):
                q = duck.quote(c["name"])
                unique = duck.scalar(con, f"SELECT count(DISTINCT {q}) = count(*) AND count({q}) = count(*) "
                                     f"FROM (SELECT {select} FROM {_reader(sample)})")
                if unique:
                    keys.append(c["name"])
    finally:
        con.close()
    keys.sort(key=lambda k: (k.lower() != "id", len(k)))
    return columns, cursors, keys[:1]


# ---------------------------------------------------------------- options

def _options_problem(options: dict) -> None:
    known = {"provider", "record_path", "paginator", "auth", "headers", "params", "incremental", "primary_key",
             "name", "max_pages"}
    unknown = set(options) - known
    if unknown:
        raise SourceError(f"options: unknown fields {sorted(unknown)}; known: {sorted(known)}")
    if options.get("headers") is not None and not isinstance(options["headers"], dict):
        raise SourceError("options.headers: expected an object of header: value")
    if options.get("params") is not None and not isinstance(options["params"], dict):
        raise SourceError("options.params: expected an object of name: value")


def _incremental(options: dict, cursors: list[str], columns: list[dict]) -> dict | None:
    spec = options.get("incremental")
    if not spec:
        return None
    if spec is True:
        spec = {}
    if not isinstance(spec, dict):
        raise SourceError("options.incremental: expected true or {cursor_field, filter_param?, initial_value?}")
    field = spec.get("cursor_field") or (cursors[0] if cursors else None)
    if not field:
        raise SourceError("options.incremental: no cursor_field given and no cursor candidate found")
    field = field.replace(".", SEP)
    if field not in {c["name"] for c in columns}:
        raise SourceError(f"options.incremental.cursor_field {field!r}: no such column "
                          f"(columns: {', '.join(c['name'] for c in columns)})")
    out = {"cursor_field": field, "filtering": "server" if spec.get("filter_param") else "client"}
    if spec.get("filter_param"):
        out["filter_param"] = str(spec["filter_param"])
    if spec.get("initial_value") is not None:
        out["initial_value"] = spec["initial_value"]
    return out


# ---------------------------------------------------------------- provider interface

def inspect(hint: str, *, env=None) -> dict:
    """Fetch the first page: records, pagination, columns, cursor and key candidates."""
    url, options = web.split_credentials(web.parse(hint), getattr(env, "options", None) or {})
    _options_problem(options)
    options = web.protect_options(options, env, hint)
    headers, auth_params, auth = web.request_auth(options, env)
    base_params = {**{str(k): v for k, v in (options.get("params") or {}).items()}, **auth_params}
    with web.client(env) as http, web.scratch() as tmp:
        response, body = fetch_page(http, url, base_params, headers, auth, page_cap(env))
        path, records = find_records(body, options.get("record_path"))
        where = ".".join(path) or "the top level"
        if not records:
            raise SourceError(f"{web.redact(str(url))}: the API returned no records (an empty array at {where})")
        if options.get("paginator"):
            paginator = make_paginator(options["paginator"])
            pagination_reason = "given in options"
        else:
            spec, pagination_reason = detect_paginator(url, response, body, records)
            paginator = make_paginator(spec)
        columns, cursors, keys = describe_records(records, tmp)
    if options.get("primary_key"):
        keys = [str(options["primary_key"]).replace(".", SEP)]
    incremental = _incremental(options, cursors, columns)
    stream_opts = {"record_path": ".".join(path), "paginator": paginator.spec(),
                   **{k: options[k] for k in ("auth", "headers", "params", "max_pages") if options.get(k)}}
    if incremental:
        stream_opts["incremental"] = incremental
    name = options.get("name") or next((p for p in reversed(url.path.split("/")) if p), url.host or "api")
    stream = {"name": identifier(str(name), "api"), "format": "json", "location": str(url), "columns": columns,
              "sync_modes": ["full", "incremental"] if cursors else ["full"], "cursor_candidates": cursors,
              "primary_key_candidates": keys, "options": stream_opts,
              "detection": [f"records at {where}", f"pagination: {paginator.type} ({pagination_reason})"]}
    return {"provider": PROVIDER, "short": identifier((url.host or "api").split(".")[0], "api"), "streams": [stream]}


# Incremental state lives in shared/storage/syncstate.py, shared with postgres and s3.
load_state = state.load_state


def save_cursor(env, stream: str, field: str, value) -> None:
    """Record the stream's last cursor value in the source's state (compare-and-swap)."""
    state.save_stream(env, stream, {"cursor_field": field, "last_value": value})


def _newer(value, last) -> bool:
    if value is None:
        return False
    if last is None:
        return True
    try:
        if isinstance(value, (int, float)) and isinstance(last, (int, float)):
            return value > last
        return str(value) > str(last)
    except TypeError:
        return str(value) > str(last)


def _max(a, b):
    if a is None:
        return b
    return b if _newer(b, a) else a


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    """Walk every page into an NDJSON file (one page in memory at a time), then DuckDB writes
    it as Parquet parts; with an incremental cursor, only records newer than the last sync."""
    options = dict(stream.get("options") or {})
    url = web.parse(stream["location"])
    headers, auth_params, auth = web.request_auth(options, env)
    base_params = {**{str(k): v for k, v in (options.get("params") or {}).items()}, **auth_params}
    paginator = make_paginator(options.get("paginator") or "none")
    record_path = options.get("record_path", None)
    incremental = options.get("incremental")
    field, last = None, None
    if incremental:
        field = incremental["cursor_field"]
        state, _ = load_state(env)
        last = (state.get("streams", {}).get(stream["name"], {}) or {}).get("last_value",
                                                                           incremental.get("initial_value"))
        if last is not None and incremental.get("filter_param"):
            base_params[incremental["filter_param"]] = last
    log = None
    newest, rows = last, 0
    out_dir = Path(out_dir)
    with web.client(env) as http, web.scratch() as tmp:
        ndjson = tmp / "records.ndjson"
        with ndjson.open("w") as out:
            for records in iter_pages(http, url, paginator=paginator, record_path=record_path, headers=headers,
                                      base_params=base_params, auth=auth, cap=page_cap(env),
                                      max_pages=int(options.get("max_pages") or DEFAULT_MAX_PAGES), log=log):
                if field is not None:
                    flat = [flatten(r) for r in records]
                    kept = [r for r in flat if _newer(r.get(field), last)]
                    for r in kept:
                        newest = _max(newest, r.get(field))
                    for r in kept:
                        out.write(json.dumps(r, default=str))
                        out.write("\n")
                    rows += len(kept)
                else:
                    rows += _write_ndjson(records, out)
        if rows == 0:
            return 0
        out_dir.mkdir(parents=True, exist_ok=True)
        con = duck.connect(memory_limit=memory_limit, threads=threads)
        try:
            select, _ = _select_list(con, ndjson)
            written = duck.scalar(con,
                f"COPY (SELECT {select} FROM {_reader(ndjson)}) TO '{out_dir}' "
                f"(FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(part_bytes)}, "
                f"FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE)")
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{web.redact(str(url))}: cannot convert the records: "
                              f"{str(exc).splitlines()[0]}") from None
        finally:
            con.close()
    if field is not None and env is not None and env.source_id and env.store is not None and newest is not None:
        save_cursor(env, stream["name"], field, newest)
    return int(written)


# A URL path that looks like an API's: /api/, /v1/, /rest/, /graphql, /odata.
API_PATH = re.compile(r"/(api|v\d+|rest|graphql|odata)(/|$)", re.I)


@register
class RestConnector(Connector):
    """A JSON API at an http(s) URL: records found, pages followed, optionally incremental."""
    providers = (PROVIDER,)
    options = OPTIONS

    def signals(self, hint: Hint) -> Signals | None:
        if not hint.is_web:
            return None
        kind, _ = web.url_file_kind(hint.url)
        if kind == "json":
            return Signals().add(PROVIDER, 0.5, "URL path ends in .json (could be an API)")
        if kind is None:
            api = bool(API_PATH.search(hint.url.path))
            return Signals().add(PROVIDER, 0.5 if api else 0.4,
                                 "URL path looks like an API" if api else "an http(s) URL")
        return None

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        """The shared GET's answer: credentials asked for, JSON records, pagination."""
        if not hint.is_web:
            return None
        answer = web.web_answer(hint)
        if answer.unreachable:
            return answer.unreachable
        if answer.error:
            scores.note(PROVIDER, f"GET probe failed: {answer.error}")
            return None
        code = answer.status
        if code in (401, 403):
            scores.add(PROVIDER, 0.6, f"GET answered {code}: needs credentials (options.auth)")
            return None
        if code >= 400:
            scores.note(PROVIDER, f"GET answered {code}")
            return None
        if answer.kind != "json" or answer.response is None:
            return None
        if not answer.complete:
            scores.add(PROVIDER, 0.6, f"JSON response larger than {PROBE_BYTES // 1024} KiB (shape not checked)")
            return None
        try:
            body = answer.json_body()
        except ValueError:
            scores.note(PROVIDER, "body is not valid JSON")
            return None
        try:
            path, records = find_records(body)
        except SourceError:
            scores.add(PROVIDER, 0.5, "JSON without an array of records")
            return None
        where = ".".join(path) or "the top level"
        spec, reason = detect_paginator(answer.url, answer.response, body, records)
        static_file = PurePosixPath(answer.url.path).name.lower().endswith(".json")
        if spec["type"] != "none":
            scores.add(PROVIDER, 0.95, f"JSON records at {where}; pagination: {reason}")
        elif path:
            scores.add(PROVIDER, 0.9, f"JSON object with a records array at {where}")
        else:
            scores.add(PROVIDER, 0.8 if not static_file else 0.7, "JSON array of records at the top level")
        if static_file:  # records in a file: as much a file to download (http.py) as an API
            scores.add(web.PROVIDER, 0.8, "a .json file URL")
        if not records:
            scores.note(PROVIDER, "the first page has no records")
        return None
