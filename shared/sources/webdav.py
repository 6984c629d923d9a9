"""WebDAV folders and files: `webdav://host/path` (`webdavs://` for TLS), or an http(s) URL
whose server answers PROPFIND with 207 Multi-Status.

`inspect` lists the folder with one PROPFIND (Depth: 1) and makes one stream per supported file
in it (data files and documents; sub-folders are not walked), or one stream for a file URL; each
file is fetched with GET and described as an HTTP file is. `extract` is the HTTP file extract.
Auth as the other web sources: `options.auth` (basic, bearer), or user:password in the URL.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

import httpx
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from shared.core.errors import SourceError
from shared.core.settings import Settings
from shared.sources import documents, files
from shared.sources import http as web
from shared.core.tenancy import identifier
from shared.sources.detection import Hint, Scores, Signals
from shared.sources.registry import Connector, register

PROVIDER = "webdav"
OPTIONS = frozenset({"auth", "headers"})
SCHEMES = {"webdav": "http", "dav": "http", "webdavs": "https", "davs": "https"}
MAX_FILES = 200
MAX_LISTING_BYTES = 16 * 1024 * 1024
DAV = "{DAV:}"
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
                 b'<D:resourcetype/><D:getcontentlength/><D:getcontenttype/><D:getlastmodified/><D:getetag/>'
                 b'</D:prop></D:propfind>')


def to_http(hint: str) -> str:
    """`webdav://` -> `http://`, `webdavs://` -> `https://`; http(s) URLs unchanged."""
    scheme, sep, rest = hint.strip().partition("://")
    if sep and scheme.lower() in SCHEMES:
        return f"{SCHEMES[scheme.lower()]}://{rest}"
    return hint.strip()


def redact(hint: str) -> str:
    return web.redact(hint)


def propfind(http: httpx.Client, url, *, depth: str = "1", headers=None, auth=None) -> list[dict]:
    """The entries a PROPFIND answers: [{href, url, collection, size, content_type, etag}]."""
    kwargs: dict[str, Any] = {"headers": {"Depth": depth, "Content-Type": "application/xml", **(headers or {})},
              "content": PROPFIND_BODY}
    if auth is not None:
        kwargs["auth"] = auth
    response = web.request(http, "PROPFIND", url, stream=True, **kwargs)
    try:
        if response.status_code != 207:
            raise SourceError(f"{web.redact(str(url))}: not a WebDAV resource (PROPFIND answered "
                              f"{response.status_code}, expected 207 Multi-Status)")
        data = web.read_capped(response, MAX_LISTING_BYTES, web.redact(str(url)))
    finally:
        response.close()
    return parse_multistatus(data, httpx.URL(str(url)))


def parse_multistatus(data: bytes, base: httpx.URL) -> list[dict]:
    """The entries of a 207 Multi-Status body. Parsed by defusedxml with DTDs forbidden: a
    listing never needs one, and a DTD is how entity expansion (billion laughs) and external
    entities (local files, internal URLs) get in — in any encoding the parser accepts, which a
    byte search for `<!ENTITY` does not see (UTF-16, say)."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise SourceError(f"{web.redact(str(base))}: refusing a WebDAV listing with a DTD or entity "
                          f"declarations ({type(exc).__name__})") from None
    except SafeET.ParseError as exc:
        raise SourceError(f"{web.redact(str(base))}: the PROPFIND answer is not XML: {exc}") from None
    entries = []
    for response in root.iter(f"{DAV}response"):
        href = response.findtext(f"{DAV}href") or ""
        props = {}
        for propstat in response.iter(f"{DAV}propstat"):
            status = propstat.findtext(f"{DAV}status") or ""
            if " 200 " not in f"{status} ":
                continue
            prop = propstat.find(f"{DAV}prop")
            if prop is not None:
                props.update({child.tag: child for child in prop})
        kind = props.get(f"{DAV}resourcetype")
        collection = kind is not None and kind.find(f"{DAV}collection") is not None
        size = props.get(f"{DAV}getcontentlength")
        ctype = props.get(f"{DAV}getcontenttype")
        etag = props.get(f"{DAV}getetag")
        entries.append({"href": href, "url": base.join(href), "collection": collection,
                        "size": int(size.text) if size is not None and size.text and size.text.isdigit() else None,
                        "content_type": (ctype.text or "").split(";")[0].strip().lower() if ctype is not None else "",
                        "etag": (etag.text or "").strip('"') if etag is not None else None})
    if not entries:
        raise SourceError(f"{web.redact(str(base))}: the PROPFIND answer lists nothing")
    return entries


def _same(a: httpx.URL, b: httpx.URL) -> bool:
    return unquote(a.path).rstrip("/") == unquote(b.path).rstrip("/")


def supported_name(name: str) -> bool:
    ext = PurePosixPath(name).suffix.lower()
    return ext in files.FORMATS or ext in documents.FORMATS


def inspect(hint: str, *, env=None) -> dict:
    """One stream per supported file of a WebDAV folder (or the one file a URL names)."""
    url, options = web.split_credentials(web.parse(to_http(hint)), getattr(env, "options", None) or {})
    options = web.protect_options(options, env, hint)
    headers, params, auth = web.request_auth(options, env)
    with web.client(env) as http, web.scratch() as tmp:
        entries = propfind(http, url, headers=headers, auth=auth)
        self_entry = next((e for e in entries if _same(e["url"], url)), entries[0])
        if self_entry["collection"]:
            children = [e for e in entries if e is not self_entry and not e["collection"]]
            names = [(e, unquote(PurePosixPath(e["url"].path).name)) for e in children]
            usable = [(e, n) for e, n in names if not n.startswith(".") and supported_name(n)]
            if not usable:
                raise SourceError(f"{web.redact(str(url))}: no supported files in the WebDAV folder "
                                  f"({len(children)} files; supported: {files.supported()}, {documents.supported()})")
            if len(usable) > MAX_FILES:
                raise SourceError(f"{web.redact(str(url))}: {len(usable)} files, more than {MAX_FILES} tables")
            short = unquote(PurePosixPath(url.path.rstrip("/")).name) or (url.host or "dav")
        else:
            usable = [(self_entry, unquote(PurePosixPath(url.path).name))]
            short = unquote(PurePosixPath(PurePosixPath(url.path).parent).name) or (url.host or "dav")
        streams: list[dict] = []
        cap = web.max_download_bytes(env)
        for i, (entry, name) in enumerate(sorted(usable, key=lambda en: en[1])):
            dest = tmp / f"file-{i}"
            ctype, size = web.download(http, entry["url"], dest, cap=cap, headers=headers, params=params, auth=auth)
            fmt = web.file_format(name, ctype or entry["content_type"], dest)
            stream = web.describe_file(dest, fmt, name=name, location=str(entry["url"]), size=size, env=env)
            keep = web.stream_options(options)
            if keep:
                stream["options"] = keep
            streams.append(stream)
    table_names = [s["name"] for s in streams]
    if len(set(table_names)) != len(table_names):
        raise SourceError(f"{web.redact(str(url))}: two files map to the same table name "
                          f"({', '.join(table_names)})")
    return {"provider": PROVIDER, "short": identifier(short, "dav"), "streams": streams}


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    return web.extract(stream, out_dir, env=env, part_bytes=part_bytes, memory_limit=memory_limit, threads=threads)


def _probe(url: str, scores: Scores, settings: Settings, *, only: bool) -> str | None:
    """PROPFIND Depth 0: 207 Multi-Status means WebDAV. `only`: the hint's scheme says WebDAV,
    so a failure is the hint's (unreachable), not just a signal that is missing."""
    from shared.security import netguard

    bare, auth = web.without_userinfo(url)
    try:
        with web.probe_client(settings) as http:
            entries = propfind(http, str(bare), depth="0", **auth)
    except netguard.BlockedAddress as exc:
        return str(exc) if only else None
    except SourceError as exc:
        if only:
            scores.note(PROVIDER, f"PROPFIND probe: {exc}")
            text = str(exc)
            return text if "cannot connect" in text or "no connection" in text or "resolve" in text else None
        return None
    except httpx.HTTPError:
        return None
    collection = bool(entries and entries[0]["collection"])
    scores.add(PROVIDER, 0.98 if collection else 0.9,
               "PROPFIND answered 207 Multi-Status" + (" (a folder)" if collection else " (a file)"))
    return None


@register
class WebdavConnector(Connector):
    """Files of a WebDAV folder (webdav://, davs://, or an http(s) URL answering PROPFIND)."""
    providers = (PROVIDER,)
    schemes = tuple(SCHEMES)
    options = OPTIONS

    def signals(self, hint: Hint) -> Signals | None:
        if hint.scheme in SCHEMES:
            return Signals().add(PROVIDER, 0.97, f"scheme {hint.scheme}://")
        if hint.is_web and web.url_file_kind(hint.url)[0] is None:
            return Signals().add(PROVIDER, 0.3, "an http(s) URL")
        return None

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        if hint.scheme in SCHEMES:
            return _probe(to_http(hint.text), scores, hint.settings, only=True)
        if hint.is_web and web.web_answer(hint).unreachable is None:
            _probe(str(hint.url), scores, hint.settings, only=False)
        return None
