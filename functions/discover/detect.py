"""Hint -> ranked provider candidates with a confidence and the reasons behind it."""
from __future__ import annotations

from urllib.parse import urlsplit

from shared.sources import files, postgres

AMBIGUITY_MARGIN = 0.15


def _scheme(hint: str) -> str:
    if "://" not in hint:
        return ""
    try:
        return urlsplit(hint).scheme.lower()
    except ValueError:
        return hint.split("://", 1)[0].lower()


def detect(hint: str) -> dict:
    """{candidates: [{provider, confidence, reasons}], ambiguous} best first."""
    candidates = []
    scheme = _scheme(hint)
    if scheme == "s3":
        candidates.append({"provider": "s3", "confidence": 0.95, "reasons": ["scheme s3"]})
    elif scheme in postgres.SCHEMES:
        candidates.append({"provider": "postgres", "confidence": 0.95, "reasons": ["DSN syntax"]})
    path = files.local_path(hint)
    if path is not None:
        if path.is_dir():
            candidates.append({"provider": "directory", "confidence": 0.99,
                               "reasons": ["local path", "is a directory"]})
        elif path.is_file():
            ext = path.suffix.lower()
            known = ext in files.FORMATS
            candidates.append({"provider": "file", "confidence": 0.99 if known else 0.6,
                               "reasons": ["local path", "is a file",
                                           f"extension {ext or '(none)'} {'is' if known else 'is not'} a known format"]})
        else:
            candidates.append({"provider": "file", "confidence": 0.3,
                               "reasons": ["looks like a local path", "nothing exists there"]})
    candidates.sort(key=lambda c: -c["confidence"])
    ambiguous = len(candidates) > 1 and candidates[0]["confidence"] - candidates[1]["confidence"] < AMBIGUITY_MARGIN
    return {"candidates": candidates, "ambiguous": ambiguous}
