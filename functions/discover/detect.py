"""Hint -> ranked provider candidates with a confidence and the reasons behind it."""
from __future__ import annotations

from shared.sources import files

AMBIGUITY_MARGIN = 0.15


def detect(hint: str) -> dict:
    """{candidates: [{provider, confidence, reasons}], ambiguous} best first."""
    candidates = []
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
