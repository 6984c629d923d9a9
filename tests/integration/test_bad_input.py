"""Bad input through the whole CLI: a clear one-line error, a failed job, nothing lost."""
from __future__ import annotations

import json
import re
import os
from pathlib import Path

import pytest

from frontends import cli
from tests.conftest import write_sales

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "udb"
    monkeypatch.setenv("UDB_HOME", str(home))
    monkeypatch.delenv("UDB_LOG_LEVEL", raising=False)
    return home


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _job_id(stdout: str) -> str:
    return stdout.split()[1]


def _ragged(tmp: Path, rows: int = 20_000, name: str = "ragged.csv") -> Path:
    path = tmp / name
    lines = ["id,name,amount"] + [f"{i},n{i},{i}" for i in range(rows)] + [f"{rows},short"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ragged_late(tmp: Path) -> Path:
    # Past the sniffer's sample (20,480 lines): discovery passes, the full read in sync refuses it.
    return _ragged(tmp, 60_000, "late.csv")


def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.csv"
    path.write_bytes(b"")
    return path


def _unsupported(tmp: Path) -> Path:
    path = tmp / "slides.pptx"
    path.write_bytes(b"PK\x03\x04 not really a deck")
    return path


def _small_ragged(tmp: Path) -> Path:
    # Small enough that DuckDB's sniffer finds no delimiter and reads whole lines as one column.
    path = tmp / "small.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6,7\n")
    return path


BAD_INPUTS = {
    "missing path": (lambda tmp: tmp / "nope.csv", "discover", "no such file or directory: {path}"),
    "empty file": (_empty, "discover", "empty.csv: file is empty"),
    "binary garbage": (_garbage, "discover",
                       "garbage.csv: binary content, not a text file (NUL bytes in the first 16384 bytes)"),
    "ragged csv": (_ragged, "discover", "ragged.csv: ragged rows: line 20002 has 2 fields, expected 3"),
    "small ragged csv": (_small_ragged, "discover", "small.csv: ragged rows: line 3 has 3 fields, expected 2"),
    "ragged csv past the sniffed lines": (_ragged_late, "sync", "late.csv: ragged rows: line 60002 has 2 fields, expected 3"),
    "unsupported type": (_unsupported, "discover",
                         "slides.pptx: unsupported file type '.pptx' (supported: .csv, .json, .jsonl, "
                         ".ndjson, .parquet, .pq, .tsv, .txt, .xlsx)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_loses_nothing(case, home, tmp_path, capsys):
    good = write_sales(tmp_path / "good" / "sales.csv", 2_000)
    code, out, _ = run(capsys, "run", str(good), "--no-analyze")
    assert code == 0 and "table good__sales: 2,000 rows" in out
    warehouse = home / "store" / "udb" / "tenants" / "demo" / "catalog.ducklake"
    before = warehouse.read_bytes()

    make, stage, reason = BAD_INPUTS[case]
    path = make(tmp_path)
    reason = reason.format(path=path)
    code, out, err = run(capsys, "run", str(path))
    assert code == 1
    assert err.strip().splitlines() == [f"udb: error: {reason}"]
    job_id = _job_id(out)
    code, out, _ = run(capsys, "status", job_id)
    doc = json.loads(out)
    assert code == 1 and doc["state"] == "failed"
    error = dict(doc["error"])
    cause = {key: error.pop(key, None) for key in ("error_type", "step", "raised_at")}
    assert error == {"stage": stage, "function": stage if stage != "load" else "writer", "reason": reason}
    # The cause beside the reason (issue 23): an input error, and where it was raised.
    assert cause["error_type"].endswith("Error") and re.fullmatch(r"\w+\.py:\d+ in \w+", cause["raised_at"])
    assert warehouse.read_bytes() == before  # the earlier load is untouched


def test_unknown_job_and_bad_tenant_are_clear_errors(home, capsys):
    code, _, err = run(capsys, "status", "job-0123456789abcdef")
    assert code == 2 and err.strip() == "udb: error: no job job-0123456789abcdef for tenant demo"
    code, _, err = run(capsys, "run", "/tmp", "--tenant", "Bad!")
    assert code == 2 and "invalid tenant id 'Bad!'" in err
