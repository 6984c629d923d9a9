"""Hint -> ranked provider candidates with a confidence and the reasons behind it.

Every connector of the registry (shared/sources/registry.py) says what it recognises; this
module only runs them. Two kinds of signal. Syntax, which costs nothing (`Connector.signals`):
the scheme, the host (share links of OneDrive, SharePoint, Google Drive), the path's extension,
DSN syntax, a local path's existence and first bytes. Probes, where the hint is reachable
(`Connector.probe`), each with a short timeout and through the SSRF guard: an HTTP GET shared by
the web connectors (content type, magic bytes, JSON shape: records, pagination), a WebDAV
PROPFIND (207 Multi-Status), an S3 ListObjectsV2 of one key, a PostgreSQL connect.

A hint whose scheme one connector owns (`s3://`, `postgresql://`, `upload://`, `webdav://`) is
shown to that connector alone; any other hint to every connector. A connector may claim the
hint (a share link, a document extension, libpq syntax): then the others' syntax signals are
dropped and only the claimants probe. Each signal adds its reason; the candidates come out best
first (shared/sources/detection.py says how ties break), and `ambiguous` says that the top two
are within AMBIGUITY_MARGIN of each other.
"""
from __future__ import annotations

from shared.core.errors import SourceError
from shared.core.settings import Settings
from shared.sources import http as web
from shared.sources import registry
from shared.sources.detection import AMBIGUITY_MARGIN, Hint, Scores

__all__ = ["AMBIGUITY_MARGIN", "detect"]


def detect(hint: str, options: dict | None = None, *, probe: bool = True, settings: Settings | None = None) -> dict:
    """{candidates: [{provider, confidence, reasons}], ambiguous, unreachable?} best first.
    `unreachable` is set when a network hint could not be reached at all (with the reason).
    Probes run under the caller's settings (SSRF allowlist, UDB's own S3); without any, the
    declared defaults (public addresses only, no S3 of UDB's own)."""
    seen = Hint(hint.strip(), dict(options or {}), settings if settings is not None else Settings())
    scores = Scores()
    given = seen.options.get("provider")
    if given:
        scores.add(str(given), 1.0, "provider given in options")
    if seen.is_web:  # a URL that does not parse is refused before any connector reads it
        try:
            _ = seen.url  # parsing it is the check
        except SourceError as exc:
            raise SourceError(f"not a valid URL: {web.redact(seen.text)!r}: {exc}") from None
    asked = registry.owners_of(seen.scheme) or registry.connectors()
    batches = [(connector, signals) for connector in asked if (signals := connector.signals(seen)) is not None]
    claimed = [(connector, signals) for connector, signals in batches if signals.claim]
    if claimed:
        batches = claimed
    # Strongest batch first (sorted() is stable: registry order among equals), so a tie between
    # two providers goes to the one whose syntax signal was stronger.
    for _, signals in sorted(batches, key=lambda batch: -batch[1].strength):
        signals.apply(scores)
    unreachable = None
    if probe and not given:
        for connector in ([c for c, _ in claimed] if claimed else asked):
            reason = connector.probe(seen, scores)
            if unreachable is None:
                unreachable = reason
    return scores.result(unreachable if not given else None)
