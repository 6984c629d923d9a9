"""Local files and folders of files: CSV/TSV, Parquet, JSON, NDJSON, Excel .xlsx.

`inspect` turns a path into a catalogue of streams (one per file) after checking that each
file is what it claims to be; `extract` streams one file through DuckDB into chunked Parquet,
so memory stays bounded whatever the file's size.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path, PurePath

from shared.storage import duck
from shared.security.limits import (Limits, capped_select, check_columns, check_file, check_rows,
                                     raise_if_limit)
from shared.core.errors import SourceError
from shared.core.tenancy import identifier
from shared.sources.detection import SNIFF_BYTES, Hint, Signals, local_path
from shared.sources.registry import Connector, register
from shared.sources import settings_of

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".xlsx": "xlsx"}
_CSV_LINE_ERROR = re.compile(r"CSV Error on Line: (\d+).*?Expected Number of Columns: (\d+) Found: (\d+)", re.S)


def looks_tabular(head: bytes) -> bool:
    """Text whose first lines split into the same number (> 1) of fields on one delimiter."""
    lines = [line for line in head.decode("utf-8", "replace").splitlines()[:20] if line.strip()]
    if len(head) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]
    if len(lines) < 2:
        return False
    for delim in (",", "\t", ";", "|"):
        counts = {line.count(delim) for line in lines}
        if len(counts) == 1 and counts.pop() > 0:
            return True
    return False


def supported() -> str:
    return ", ".join(sorted(FORMATS))


def detect_format(path: Path, limits: Limits) -> str:
    """The file's format from its extension, confirmed by its first bytes."""
    size = path.stat().st_size
    if size == 0:
        raise SourceError(f"{path.name}: file is empty")
    head = path.open("rb").read(SNIFF_BYTES)
    ext = path.suffix.lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        if ext:
            raise SourceError(f"{path.name}: unsupported file type {ext!r} (supported: {supported()})")
        fmt = _sniff_kind(head)
        if fmt is None:
            raise SourceError(f"{path.name}: cannot tell the file type (no extension, unrecognised content)")
    if fmt == "parquet":
        with path.open("rb") as fh:
            fh.seek(-4, 2)
            tail = fh.read(4)
        if not head.startswith(b"PAR1") or tail != b"PAR1":
            raise SourceError(f"{path.name}: not a Parquet file (missing PAR1 magic bytes)")
    elif fmt == "xlsx":
        if not head.startswith(b"PK\x03\x04"):
            raise SourceError(f"{path.name}: not an Excel .xlsx file (not a zip container)")
    else:
        _check_text(path, head)
        if fmt in ("json", "ndjson"):
            first = head.lstrip()[:1]
            if first not in (b"[", b"{"):
                raise SourceError(f"{path.name}: not JSON (starts with {head.lstrip()[:12]!r})")
    check_file(path, fmt, limits)  # JSON depth, zip/gzip bombs: before DuckDB opens the file
    return fmt


def _sniff_kind(head: bytes) -> str | None:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    stripped = head.lstrip()
    if stripped[:1] in (b"[", b"{"):
        return "ndjson" if stripped[:1] == b"{" and b"\n{" in stripped else "json"
    if b"\x00" not in head:
        return "csv"
    return None


def _check_text(path: PurePath, head: bytes) -> None:
    if b"\x00" in head:
        raise SourceError(f"{path.name}: binary content, not a text file (NUL bytes in the first "
                          f"{min(len(head), SNIFF_BYTES)} bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte character at the end is fine
            control = sum(1 for b in head if b < 9 or 13 < b < 32)
            if control > len(head) // 100:
                raise SourceError(f"{path.name}: binary content, not a text file "
                                  f"(invalid UTF-8 at byte {exc.start})") from None


def _csv_reader_sql(path: Path | str, fmt: str, dialect: dict | None = None) -> str:
    if dialect:
        # The dialect discovery sniffed, stated: DuckDB's sniffer (a few hundred ms per call, most
        # of a small file's load) runs once per job instead of four times. skip = 0: discovery
        # refused the file had the sniffer wanted to skip leading lines.
        opts = ", ".join(f"{k} = {_str(dialect[k])}" for k in ("delim", "quote", "escape") if k in dialect)
        header = "true" if dialect.get("header", True) else "false"
        return (f"read_csv({_lit(path)}, strict_mode = true, null_padding = false, {opts}, header = {header}, "
                f"skip = 0)")
    delim = ", delim = '\t'" if fmt == "tsv" else ""
    return f"read_csv({_lit(path)}, strict_mode = true, null_padding = false{delim})"


def _str(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def reader_sql(path: Path | str, fmt: str, dialect: dict | None = None) -> str:
    """A DuckDB table function call that reads the whole file (a CSV with the dialect
    discovery sniffed, when given)."""
    if fmt in ("csv", "tsv"):
        return _csv_reader_sql(path, fmt, dialect)
    if fmt == "parquet":
        return f"read_parquet({_lit(path)})"
    if fmt == "json":
        return f"read_json({_lit(path)}, format = 'auto')"
    if fmt == "ndjson":
        return f"read_json({_lit(path)}, format = 'newline_delimited')"
    if fmt == "xlsx":
        return f"read_xlsx({_lit(path)})"
    raise SourceError(f"unsupported format {fmt!r}")


def _lit(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def check_csv_shape(con, path: Path, fmt: str) -> dict:
    """DuckDB's sniffer copes with ragged leading lines by skipping them, which would drop
    rows silently; refuse the file instead and say which line is wrong. Returns the dialect
    it found ({delim, quote, escape, header}), which reader_sql can state so no one sniffs again."""
    delim = "\t" if fmt == "tsv" else None
    try:
        row = con.execute(f"SELECT Delimiter, SkipRows, Columns, Quote, Escape, HasHeader FROM sniff_csv({_lit(path)}"
                          + (", delim = '\t'" if delim else "") + ")").fetchone()
        delim = delim or row[0]
        skipped, columns = row[1], row[2]
    except Exception as exc:
        raise _ragged_or(path, delim or ",", f"{path.name}: cannot read as CSV: {_first_line(exc)}") from None
    if skipped:
        raise _ragged_or(path, delim, f"{path.name}: the first {skipped} lines do not match the rest of the file")
    if len(columns) == 1 and any(d in columns[0]["name"] for d in ",;|\t"):
        # The sniffer gave up on delimiters and read whole lines as one column: ragged rows.
        raise _ragged_or(path, ",", f"{path.name}: no consistent delimiter (one column named "
                                    f"{columns[0]['name']!r})")
    # The sniffer writes a missing quote or escape character as "(empty)".
    quote, escape = ("" if v in (None, "(empty)") else v for v in (row[3], row[4]))
    return {"delim": delim, "quote": quote, "escape": escape, "header": bool(row[5])}


def _ragged_or(path: Path, delim: str, fallback: str, max_lines: int = 100_000) -> SourceError:
    """Name the first line whose field count differs from the header's (within the lines
    DuckDB's sniffer looks at), or fall back to the sniffer's own complaint."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        expected = None
        reader = csv.reader(fh, delimiter=delim)
        try:
            for lineno, row in enumerate(reader, start=1):
                if lineno > max_lines:
                    break
                if not row:
                    continue
                if expected is None:
                    expected = len(row)
                elif len(row) != expected:
                    return SourceError(f"{path.name}: ragged rows: line {lineno} has {len(row)} fields, "
                                       f"expected {expected}")
        except csv.Error as exc:
            return csv_error(path.name, reader, exc)
    return SourceError(fallback)


def csv_error(name: str, reader, exc: csv.Error) -> SourceError:
    """A line Python's csv reader refuses, named (a field above its limit is almost always a
    quote that never closes, which swallows the rest of the file into one field)."""
    if "field larger than field limit" in str(exc):
        return SourceError(f"{name}: line {reader.line_num} has a field longer than {csv.field_size_limit():,} "
                           f"characters, the CSV reader's limit (a quote that is never closed?)")
    return SourceError(f"{name}: line {reader.line_num} cannot be read as CSV: {exc}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def describe(con, path: Path, fmt: str, dialect_out: dict | None = None) -> list[dict]:
    dialect = check_csv_shape(con, path, fmt) if fmt in ("csv", "tsv") else None
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader_sql(path, fmt, dialect)}").fetchall()
    except Exception as exc:
        raise SourceError(f"{path.name}: cannot read as {fmt}: {_first_line(exc)}") from None
    if not rows:
        raise SourceError(f"{path.name}: no columns found")
    if dialect and dialect_out is not None:
        dialect_out.update(dialect)
    return [{"name": r[0], "type": r[1]} for r in rows]


def inspect(hint: str, *, env=None) -> dict:
    """The catalogue of a local file or folder: {short, provider, streams[...]}."""
    caps = Limits.from_settings(settings_of(env))
    path = local_path(hint)
    if path is None:
        raise SourceError(f"not a local path: {hint!r}")
    if not path.exists():
        raise SourceError(f"no such file or directory: {path}")
    con = duck.connect(extensions=("excel",))
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            usable = [p for p in files if p.suffix.lower() in FORMATS]
            if not usable:
                raise SourceError(f"{path}: no supported files in the folder (supported: {supported()})")
            streams = [_stream(con, p, caps) for p in usable]
            provider, short = "directory", path.resolve().name
        else:
            streams = [_stream(con, path, caps)]
            provider, short = "file", path.resolve().parent.name
    finally:
        con.close()
    names = [s["name"] for s in streams]
    if len(set(names)) != len(names):
        raise SourceError(f"{path}: two files map to the same table name ({', '.join(names)})")
    return {"provider": provider, "short": identifier(short, "src"), "streams": streams}


def _stream(con, path: Path, limits: Limits) -> dict:
    fmt = detect_format(path, limits)
    dialect: dict = {}
    columns = describe(con, path, fmt, dialect)
    check_columns(len(columns), path.name, limits)
    temporal = [c["name"] for c in columns if c["type"].startswith(("TIMESTAMP", "DATE"))]
    keys = [c["name"] for c in columns if c["name"].lower() in ("id",) or c["name"].lower().endswith("_id")]
    stream = {"name": identifier(path.stem), "format": fmt, "location": str(path.resolve()),
              "columns": columns, "sync_modes": ["full"], "cursor_candidates": temporal,
              "primary_key_candidates": keys[:1], "bytes": path.stat().st_size}
    if dialect:
        stream["options"] = {"csv": dialect}  # sync reads with it, without sniffing again
    return stream


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    """Write the stream as Parquet parts into `out_dir`; returns the row count."""
    return extract_with(stream, out_dir, limits=Limits.from_settings(settings_of(env)), part_bytes=part_bytes,
                        memory_limit=memory_limit, threads=threads)


def extract_with(stream: dict, out_dir: Path, *, limits: Limits, part_bytes: int, memory_limit: str = "1GB",
                 threads: int = 2) -> int:
    """`extract` under these limits (the web sources' downloaded copies come here)."""
    path, fmt = Path(stream["location"]), stream["format"]
    if not path.is_file():
        raise SourceError(f"{path}: file disappeared since discovery")
    check_file(path, fmt, limits)
    con = duck.connect(memory_limit=memory_limit, threads=threads, extensions=("excel",))
    try:
        dialect = (stream.get("options") or {}).get("csv")
        if fmt in ("csv", "tsv") and not dialect:
            dialect = check_csv_shape(con, path, fmt)
        try:
            # No LIMIT for the row cap: the file is already here, its size bounded by
            # UDB_MAX_UPLOAD_BYTES or UDB_MAX_DOWNLOAD_BYTES (or it is the user's own, in
            # embedded mode); its rows are checked after the COPY (check_rows), and a LIMIT
            # would halve the COPY's speed.
            select = capped_select(reader_sql(path, fmt, dialect), stream['columns'], limits, name=path.name,
                                   cap_rows=False)
            rows = duck.scalar(con,
                f"COPY ({select}) "
                f"TO {_lit(out_dir)} "
                f"(FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(part_bytes)}, "
                f"FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE)")
        except Exception as exc:
            raise_if_limit(exc, path.name)  # a row, column or cell cap, named
            match = _CSV_LINE_ERROR.search(str(exc))
            if match:
                line, expected, found = match.groups()
                raise SourceError(f"{path.name}: ragged rows: line {line} has {found} fields, "
                                  f"expected {expected}") from None
            raise SourceError(f"{path.name}: cannot read as {fmt}: {_first_line(exc)}") from None
    finally:
        con.close()
    return check_rows(int(rows), path.name, limits)


@register
class FilesConnector(Connector):
    """A local file (CSV, TSV, Parquet, JSON, NDJSON, Excel) or a directory of them."""
    providers = ("file", "directory")

    def signals(self, hint: Hint) -> Signals | None:
        local = hint.local
        if local is None:
            return None
        if local.is_dir:
            return Signals().add("directory", 0.99, "local path").note("directory", "is a directory")
        if not local.is_file:
            return Signals().add("file", 0.3, "looks like a local path").note("file", "nothing exists there")
        ext = local.ext
        if ext == ".txt":  # documents.py scores the same file as prose
            if looks_tabular(local.head):
                return Signals().add("file", 0.9, "a .txt file whose lines split into the same columns (CSV)")
            return Signals().add("file", 0.4, "a .txt file (could be CSV)")
        if ext in FORMATS:
            return (Signals().add("file", 0.99, "local path").note("file", "is a file")
                    .note("file", f"extension {ext} is a known format"))
        kind = _sniff_kind(local.head)
        if kind and not ext:
            return Signals().add("file", 0.85, f"local file without extension, content looks like {kind}")
        return Signals().add("file", 0.6, f"local file, extension {ext or '(none)'} is not a known format")
