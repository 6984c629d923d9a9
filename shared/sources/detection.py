"""Detection's vocabulary, shared by discover's detect step and the connectors that feed it.

- `Hint`: the hint as detection reads it, parsed once: its scheme, its http(s) URL, its local
  path (with the file's first bytes), and the one GET probe every web connector shares.
- `Signals`: one connector's verdicts in one phase (syntax), a batch of `add` and `note`.
  A batch may `claim` the hint: then only the claiming connectors' batches count (a share link
  is not also a plain web page; a document extension is not also an unknown file).
- `Scores`: the candidates being built, best confidence per provider and every reason.

Ties keep the order in which candidates first appeared. The syntax batches of one hint are
applied strongest first (stable in registry order), so a tie between two providers goes to the
one whose syntax signal was stronger: a `.json` URL answering a large JSON body stays `http`
first, an API-looking URL answering the same stays `rest` first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from shared.core.errors import SourceError
from shared.security import netguard

AMBIGUITY_MARGIN = 0.15
PROBE_CONNECT = 1.5          # seconds: a probe gives up quickly, the catalogue step says why
PROBE_READ = 2.0
PROBE_DEADLINE = 2.5
PROBE_BYTES = 256 * 1024     # of a GET body: enough for the shape of a first page or a file's magic


class Scores:
    """Candidates being built: the best confidence any signal gave, and every reason."""

    def __init__(self) -> None:
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
        out: dict = {"candidates": candidates, "ambiguous": ambiguous}
        if unreachable:
            out["unreachable"] = unreachable
        return out


class Signals:
    """One connector's syntax verdicts on a hint: `add` a candidate, `note` a reason to one."""

    def __init__(self, *, claim: bool = False) -> None:
        self.claim = claim
        self.steps: list[tuple[str, str, float, str]] = []

    def add(self, provider: str, confidence: float, reason: str) -> "Signals":
        self.steps.append(("add", provider, confidence, reason))
        return self

    def note(self, provider: str, reason: str) -> "Signals":
        self.steps.append(("note", provider, 0.0, reason))
        return self

    @property
    def strength(self) -> float:
        return max((confidence for kind, _, confidence, _ in self.steps if kind == "add"), default=0.0)

    def apply(self, scores: Scores) -> None:
        for kind, provider, confidence, reason in self.steps:
            if kind == "add":
                scores.add(provider, confidence, reason)
            else:
                scores.note(provider, reason)


@dataclass
class LocalPath:
    """A scheme-less hint read as a filesystem path."""
    path: Path

    @cached_property
    def is_dir(self) -> bool:
        return self.path.is_dir()

    @cached_property
    def is_file(self) -> bool:
        return self.path.is_file()

    @property
    def ext(self) -> str:
        return self.path.suffix.lower()

    @cached_property
    def head(self) -> bytes:
        """The file's first bytes (files.SNIFF_BYTES; read once, whichever connector asks first)."""
        from shared.sources import files

        with self.path.open("rb") as fh:
            return fh.read(files.SNIFF_BYTES)


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
    from shared.sources import http as web

    if head.startswith(b"PAR1"):
        return "parquet", None
    if head.startswith(b"%PDF-"):
        return "pdf", None
    if head.startswith(b"PK\x03\x04"):
        return "zip", None
    mapped = web.DATA_TYPES.get(ctype)
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


def probe_client() -> httpx.Client:
    return netguard.client(deadline=PROBE_DEADLINE, connect_timeout=PROBE_CONNECT, read_timeout=PROBE_READ)


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


def get_probe(url: httpx.URL) -> WebAnswer:
    """GET the URL (at most PROBE_BYTES) through the SSRF guard."""
    from shared.sources import http as web

    url, auth = without_userinfo(url)
    try:
        with probe_client() as http:
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
        return WebAnswer(url, unreachable=web.describe_error(url, exc))
    except httpx.HTTPError as exc:
        return WebAnswer(url, error=web.describe_error(url, exc))
    ctype = web.content_type(response)
    kind, data_format = _kind(ctype, head) if response.status_code < 400 else (None, None)
    return WebAnswer(url, response=response, status=response.status_code, ctype=ctype, head=head,
                     complete=complete, kind=kind, data_format=data_format)


def _scheme(hint: str) -> str:
    if "://" not in hint:
        return ""
    try:
        return urlsplit(hint).scheme.lower()
    except ValueError:
        return hint.split("://", 1)[0].lower()


@dataclass
class Hint:
    """A hint as detection reads it. `text` is stripped; `scheme` is lower case ("" for none)."""
    text: str
    options: dict = field(default_factory=dict)

    @cached_property
    def scheme(self) -> str:
        return _scheme(self.text)

    @property
    def is_web(self) -> bool:
        return self.scheme in ("http", "https")

    @cached_property
    def url(self) -> httpx.URL:
        """The http(s) URL (SourceError when it does not parse)."""
        try:
            return httpx.URL(self.text)
        except (httpx.InvalidURL, ValueError) as exc:
            from shared.sources import http as web
            raise SourceError(f"not a valid URL: {web.redact(self.text)!r}: {exc}") from None

    @cached_property
    def local(self) -> LocalPath | None:
        """The filesystem path of a scheme-less hint, or None."""
        if self.scheme:
            return None
        from shared.sources import files

        path = files.local_path(self.text)
        return LocalPath(path) if path is not None else None

    @cached_property
    def _answer(self) -> WebAnswer:
        return get_probe(self.url)

    def web_answer(self) -> WebAnswer:
        """The answer to one GET of an http(s) hint, made on the first call and shared."""
        return self._answer
