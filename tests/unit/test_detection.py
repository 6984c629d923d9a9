"""shared/sources/detection.py: detection's vocabulary (Hint, Signals, Scores, local paths)."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.errors import SourceError
from shared.core.settings import Settings
from shared.sources.detection import (AMBIGUITY_MARGIN, SNIFF_BYTES, Hint, LocalPath, Scores, Signals,
                                      local_path)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("hint,expected", [
    ("/data/sales.csv", Path("/data/sales.csv")),
    ("./sales.csv", Path("sales.csv")),
    ("file:///data/My%20Sales.csv", Path("/data/My Sales.csv")),
    ("~/x.csv", Path.home() / "x.csv"),
    ("~nosuchuser-udb/x.csv", Path("~nosuchuser-udb/x.csv")),
    ("https://example.com/a.csv", None),
    ("s3://bucket/key", None),
])
def test_local_path(hint, expected):
    assert local_path(hint) == expected


def test_scores_keep_the_best_confidence_and_every_reason_once():
    scores = Scores()
    scores.add("http", 0.4, "an http URL")
    scores.add("http", 0.7, "answers CSV")
    scores.add("http", 0.5, "an http URL")
    scores.add("rest", 1.7, "JSON API")          # capped at 1
    scores.note("http", "answers CSV")            # already there: not twice
    scores.note("http", "content-length 10")
    scores.note("gdrive", "not a candidate")      # a note never creates one
    result = scores.result()
    assert result == {"candidates": [
        {"provider": "rest", "confidence": 1.0, "reasons": ["JSON API"]},
        {"provider": "http", "confidence": 0.7, "reasons": ["an http URL", "answers CSV", "content-length 10"]},
    ], "ambiguous": False}


def test_ambiguity_is_a_top_two_gap_below_the_margin():
    scores = Scores()
    scores.add("a", 0.8, "x")
    scores.add("b", 0.8 - AMBIGUITY_MARGIN + 0.01, "y")
    assert scores.result()["ambiguous"] is True
    scores = Scores()
    scores.add("a", 0.8, "x")
    scores.add("b", 0.6, "y")
    assert scores.result()["ambiguous"] is False
    one = Scores()
    one.add("a", 0.1, "x")
    assert one.result("connection refused") == {
        "candidates": [{"provider": "a", "confidence": 0.1, "reasons": ["x"]}],
        "ambiguous": False, "unreachable": "connection refused"}


def test_ties_keep_first_appearance_order():
    scores = Scores()
    for provider in ("second", "first", "third"):
        scores.add(provider, 0.5, "same")
    assert [c["provider"] for c in scores.result()["candidates"]] == ["second", "first", "third"]


def test_signals_record_steps_and_apply_them_in_order():
    signals = Signals(claim=True).add("http", 0.6, "a URL").note("http", "big body").add("rest", 0.3, "api/")
    assert signals.claim is True
    assert signals.strength == 0.6
    assert Signals().note("x", "only a note").strength == 0.0
    scores = Scores()
    signals.apply(scores)
    assert scores.found == {"http": {"provider": "http", "confidence": 0.6, "reasons": ["a URL", "big body"]},
                            "rest": {"provider": "rest", "confidence": 0.3, "reasons": ["api/"]}}


@pytest.mark.parametrize("text,scheme,web", [
    ("HTTPS://Example.com/x", "https", True),
    ("http://example.com", "http", True),
    ("s3://bucket/key", "s3", False),
    ("postgresql://u@h/db", "postgresql", False),
    ("/data/x.csv", "", False),
    ("http://[::1", "http", True),   # unparseable netloc: the scheme still reads
])
def test_hint_scheme(text, scheme, web):
    hint = Hint(text)
    assert hint.scheme == scheme and hint.is_web is web


def test_hint_defaults_and_url():
    hint = Hint("https://example.com/a.csv?x=1")
    assert hint.settings == Settings() and hint.options == {} and hint.shared == {}
    assert str(hint.url) == "https://example.com/a.csv?x=1"
    assert hint.url.host == "example.com"
    assert hint.local is None
    with pytest.raises(SourceError, match="Invalid port: 'abc'"):
        _ = Hint("http://x:abc/").url


def test_hint_local_reads_the_head_once(tmp_path):
    path = tmp_path / "Big.CSV"
    path.write_bytes(b"a,b\n" + b"1,2\n" * (SNIFF_BYTES // 4 + 100))
    local = Hint(str(path)).local
    assert isinstance(local, LocalPath)
    assert (local.path, local.is_file, local.is_dir, local.ext) == (path, True, False, ".csv")
    assert len(local.head) == SNIFF_BYTES and local.head.startswith(b"a,b\n1,2\n")
    path.write_bytes(b"changed")
    assert local.head.startswith(b"a,b\n")   # read once
    folder = Hint(str(tmp_path)).local
    assert (folder.is_dir, folder.is_file, folder.ext) == (True, False, "")
    assert Hint("s3://bucket/key").local is None
