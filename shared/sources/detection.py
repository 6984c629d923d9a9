"""Detection's vocabulary, shared by discover's detect step and the connectors that feed it.

- `Hint`: the hint as detection reads it, parsed once: its scheme, its http(s) URL, its local
  path (with the file's first bytes), and what probes share (the web connectors' one GET,
  `shared.sources.http.web_answer`).
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

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit

import httpx

from shared.core.errors import SourceError
from shared.core.settings import Settings

AMBIGUITY_MARGIN = 0.15
PROBE_CONNECT = 1.5          # seconds: a probe gives up quickly, the catalogue step says why
PROBE_READ = 2.0
PROBE_DEADLINE = 2.5
PROBE_BYTES = 256 * 1024     # of a GET body: enough for the shape of a first page or a file's magic
SNIFF_BYTES = 64 * 1024      # of a local file: its magic bytes, a CSV's first lines


def local_path(hint: str) -> Path | None:
    """The filesystem path a hint names (`/x`, `./x`, `~/x`, `file:///x`), or None."""
    if hint.startswith("file://"):
        return Path(unquote(urlparse(hint).path))
    if "://" in hint:
        return None
    try:
        return Path(hint).expanduser()
    except RuntimeError:  # "~name" naming no user (found by the detection fuzz test): as written
        return Path(hint)


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
        """The file's first SNIFF_BYTES (read once, whichever connector asks first)."""
        with self.path.open("rb") as fh:
            return fh.read(SNIFF_BYTES)


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
    # The caller's settings, which the probes run under (SSRF allowlist, UDB's own S3 and
    # bucket); without any, the declared defaults: public addresses only, no S3 of UDB's own.
    settings: Settings = field(default_factory=Settings)

    @cached_property
    def scheme(self) -> str:
        return _scheme(self.text)

    @property
    def is_web(self) -> bool:
        return self.scheme in ("http", "https")

    # What one connector's probe found and another's reads (the GET of a web hint: http.py).
    shared: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def url(self) -> httpx.URL:
        """The http(s) URL (SourceError with httpx's reason when it does not parse; discover
        checks it first and names the hint)."""
        try:
            return httpx.URL(self.text)
        except (httpx.InvalidURL, ValueError) as exc:
            raise SourceError(str(exc)) from None

    @cached_property
    def local(self) -> LocalPath | None:
        """The filesystem path of a scheme-less hint, or None."""
        if self.scheme:
            return None
        path = local_path(self.text)
        return LocalPath(path) if path is not None else None
