"""Limits on bad input: request bodies, uploads, archives, rows, columns, long cells, JSON depth.

Every limit is a setting (`shared/core/settings.py`, `UDB_MAX_*`; 0 turns one off) and every check
raises an error that names what broke which limit and the setting that sets it:
- `LimitExceeded` (a SourceError): a source file breaks a limit; the job fails, never retried.
- `RequestTooLarge` (an InputError): an HTTP body above its cap; the HTTP door answers 413.
- a request body nested deeper than `UDB_MAX_JSON_DEPTH` is an InputError (400).

Why these exist: DuckDB segfaults on JSON nested ~100,000 deep and needs seconds per level
past ~10,000 (measured on 1.5.5), Python's json raises RecursionError (not ValueError) past
~1,000, an .xlsx is a zip that DuckDB's excel extension inflates whole, and a gzip stream can
inflate a thousandfold. So nested JSON and archives are checked *before* DuckDB sees them, and
rows and cell lengths are capped *inside* the one COPY that extracts a source (a `LIMIT cap+1`
and a per-column `error()`), so a bad file costs one bounded pass.
"""
from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shared.core.errors import InputError, SourceError

MARK = "UDB limit:"  # prefix of errors raised inside DuckDB by capped_select
CHUNK = 1024 * 1024
MAX_ZIP_ENTRIES = 10_000
RATIO_FLOOR = 10 * 1024 * 1024  # entries smaller than this may compress as well as they like


class LimitExceeded(SourceError):
    """A source breaks one of the input limits (the job fails with this message)."""


class RequestTooLarge(InputError):
    """An HTTP request body above its cap (answered with 413)."""


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 1024 * 1024 * 1024
    max_uncompressed_bytes: int = 4 * 1024 * 1024 * 1024
    max_compression_ratio: int = 200
    max_rows: int = 100_000_000
    max_columns: int = 4096
    max_cell_chars: int = 1_000_000
    max_json_depth: int = 20

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        """The caps of the caller's Settings (shared.core.settings.Settings)."""
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})



def _on(limit: int) -> bool:
    return limit > 0


# ---------------------------------------------------------------- request bodies

def check_body_size(size: int | None, limit: int, setting: str) -> None:
    """Refuse a body of `size` bytes above `limit` (None: unknown, checked while reading)."""
    if _on(limit) and size is not None and size > limit:
        raise RequestTooLarge(f"request body of {size:,} bytes is above the limit of {limit:,} bytes ({setting})")


def read_capped(stream, limit: int, setting: str, chunk: int = CHUNK) -> bytes:
    """Read a stream of unknown length (chunked upload) into memory, refusing past `limit`."""
    parts: list[bytes] = []
    total = 0
    while True:
        block = stream.read(chunk)
        if not block:
            return b"".join(parts)
        total += len(block)
        if _on(limit) and total > limit:
            raise RequestTooLarge(f"request body is above the limit of {limit:,} bytes ({setting})")
        parts.append(block)


# ---------------------------------------------------------------- JSON nesting

class _DepthScanner:
    """Maximum nesting depth of JSON text, fed in chunks; strings and escapes are honoured, so
    a bracket inside a string does not count. It never parses: malformed JSON gets a number
    too (stray closers never take the depth below 0), and the parser that runs after it
    reports the syntax error. A backslash outside a string is where any JSON parser stops, so
    the scan stops there too (escapes are only exact up to that point). Vectorised with
    numpy, several times faster than a loop over the bytes."""

    def __init__(self, limit: int = 0):
        self.limit = limit
        self.depth = self.max_depth = 0
        self.in_string = False
        self.backslashes = 0  # length of the run of backslashes that ended the previous chunk
        self.stopped = False  # a backslash outside a string: not JSON from there on

    def feed(self, data: bytes) -> None:
        import numpy as np

        if not data or self.stopped:
            return
        a = np.frombuffer(data, dtype=np.uint8)
        n = a.size
        idx = np.arange(n)
        is_bs = a == 0x5C
        # For each position, the index of the last byte that is not a backslash (-1: none yet).
        last_plain = np.maximum.accumulate(np.where(is_bs, -1, idx))
        quotes = np.flatnonzero(a == 0x22)
        if quotes.size:
            before = np.where(quotes > 0, last_plain[np.maximum(quotes - 1, 0)], -1)
            run = np.where(quotes > 0, quotes - 1 - before, 0)
            run = np.where(before == -1, run + self.backslashes, run)  # run continues from the last chunk
            real = quotes[run % 2 == 0]
        else:
            real = quotes
        toggles = np.zeros(n, dtype=np.int64)
        toggles[real] = 1
        parity = (np.cumsum(toggles) + int(self.in_string)) % 2
        # A quote toggles the state at itself; brackets are never quotes, so parity there is exact.
        outside = parity == 0
        stray = np.flatnonzero(is_bs & outside)
        if stray.size:
            self.stopped = True
            n = int(stray[0])
            if n == 0:
                return
            a, outside, parity, last_plain = a[:n], outside[:n], parity[:n], last_plain[:n]
        step = np.zeros(n, dtype=np.int64)
        step[((a == 0x5B) | (a == 0x7B)) & outside] = 1
        step[((a == 0x5D) | (a == 0x7D)) & outside] = -1
        walk = self.depth + np.cumsum(step)
        # Depth with a floor at 0: the walk minus its lowest point below 0 so far.
        floor = np.minimum(np.minimum.accumulate(walk), 0)
        depth = walk - floor
        self.max_depth = max(self.max_depth, int(depth.max()))
        self.depth = int(depth[-1])
        self.in_string = bool(parity[-1])
        tail = n - 1 - int(last_plain[-1])
        self.backslashes = tail + (self.backslashes if tail == n else 0)

    @property
    def too_deep(self) -> bool:
        return bool(self.limit) and self.max_depth > self.limit


def json_depth(data: bytes | str) -> int:
    """The maximum nesting depth of JSON text (0 for a scalar)."""
    scanner = _DepthScanner()
    scanner.feed(data.encode() if isinstance(data, str) else data)
    return scanner.max_depth


def check_json_depth(data: bytes | str, limit: int, what: str = "request body") -> None:
    """InputError when JSON `data` nests deeper than `limit` (UDB_MAX_JSON_DEPTH)."""
    if not _on(limit):
        return
    scanner = _DepthScanner(limit)
    scanner.feed(data.encode() if isinstance(data, str) else data)
    if scanner.too_deep:
        raise InputError(f"{what}: JSON nested deeper than {limit} levels (UDB_MAX_JSON_DEPTH)")


def check_json_file(path: Path, limit: int) -> None:
    """LimitExceeded when a JSON/NDJSON file nests deeper than `limit`; reads it in chunks."""
    if not _on(limit):
        return
    scanner = _DepthScanner(limit)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            scanner.feed(block)
            if scanner.too_deep:
                raise LimitExceeded(f"{Path(path).name}: JSON nested deeper than {limit} levels "
                                    f"(UDB_MAX_JSON_DEPTH)")


# ---------------------------------------------------------------- archives

def check_zip(path: Path, limits: Limits, name: str | None = None) -> None:
    """Refuse a zip (an .xlsx, a .docx) that would inflate past UDB_MAX_UNCOMPRESSED_BYTES or whose
    entries inflate more than UDB_MAX_COMPRESSION_RATIO times: first from the sizes its central
    directory declares, then by inflating every entry with a byte count (zipfile stops at the
    declared size and checks the CRC, so a directory that lies is caught too). `name` names the
    file in errors (default: its file name)."""
    name = name or Path(path).name
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise LimitExceeded(f"{name}: zip archive with {len(entries):,} entries (at most {MAX_ZIP_ENTRIES:,})")
            declared = sum(e.file_size for e in entries)
            _check_uncompressed(name, declared, limits, "declares")
            for entry in entries:
                ratio = entry.file_size / max(entry.compress_size, 1)
                if (_on(limits.max_compression_ratio) and entry.file_size > RATIO_FLOOR
                        and ratio > limits.max_compression_ratio):
                    raise LimitExceeded(
                        f"{name}: zip entry {entry.filename!r} inflates {ratio:,.0f} times ({entry.compress_size:,} "
                        f"-> {entry.file_size:,} bytes); the limit is {limits.max_compression_ratio} "
                        f"(UDB_MAX_COMPRESSION_RATIO): a decompression bomb?")
            total = 0
            for entry in entries:
                with archive.open(entry) as member:
                    for block in iter(lambda: member.read(CHUNK), b""):
                        total += len(block)
                        _check_uncompressed(name, total, limits, "inflates to")
    except zipfile.BadZipFile as exc:
        raise LimitExceeded(f"{name}: corrupt zip archive ({exc})") from None
    except (zlib.error, EOFError, NotImplementedError) as exc:
        raise LimitExceeded(f"{name}: unreadable zip archive ({exc})") from None


def _check_uncompressed(name: str, size: int, limits: Limits, verb: str) -> None:
    if _on(limits.max_uncompressed_bytes) and size > limits.max_uncompressed_bytes:
        raise LimitExceeded(f"{name}: archive {verb} more than {limits.max_uncompressed_bytes:,} bytes "
                            f"uncompressed (UDB_MAX_UNCOMPRESSED_BYTES): a decompression bomb?")


def gunzip_capped(src: Path, dst: Path | None, limit: int) -> int:
    """Inflate a gzip file (every member) into `dst` (None: just count), refusing past `limit`
    bytes (UDB_MAX_UNCOMPRESSED_BYTES); returns the inflated size."""
    name, total = Path(src).name, 0
    out = open(dst, "wb") if dst is not None else None
    try:
        with open(src, "rb") as fh:
            inflater, fed, pending = zlib.decompressobj(wbits=31), False, b""
            while True:
                if not pending:
                    pending = fh.read(CHUNK)
                    if not pending:
                        break
                try:
                    # max_length bounds what one call may produce: a bomb never sits in memory.
                    block = inflater.decompress(pending, CHUNK)
                except zlib.error as exc:
                    raise LimitExceeded(f"{name}: corrupt gzip data ({exc})") from None
                fed = True
                pending = inflater.unconsumed_tail
                total += len(block)
                if _on(limit) and total > limit:
                    raise LimitExceeded(f"{name}: gzip data inflates to more than {limit:,} bytes "
                                        f"(UDB_MAX_UNCOMPRESSED_BYTES): a decompression bomb?")
                if out is not None:
                    out.write(block)
                if inflater.eof:  # concatenated members: the next one starts in unused_data
                    pending = inflater.unused_data + pending
                    inflater, fed = zlib.decompressobj(wbits=31), False
            if fed and not inflater.eof:
                raise LimitExceeded(f"{name}: truncated gzip data")
    finally:
        if out is not None:
            out.close()
    return total


# ---------------------------------------------------------------- where a hint may read

_LIBPQ = re.compile(r"^\s*[a-z_]+\s*=", re.I)  # `host=... dbname=...`: a DSN, not a path


def check_local_hint(hint: str, settings) -> None:
    """Refuse a local-path hint that would read what its tenant must not. A path is the
    embedded user's own file; in stack and cluster mode a hint is a tenant's input, and a path
    would read the function's filesystem (the service account token, UDB_HOME's secrets, the
    local store of every tenant). There, paths are refused unless under UDB_FILE_ROOTS (which,
    when set, binds embedded mode too). Symbolic links are resolved before the check."""
    text = (hint or "").strip()
    if "://" in text and not text.lower().startswith("file://"):
        return
    if _LIBPQ.match(text):
        return
    # As shared.sources.files.local_path reads a hint (not imported: every function loads this).
    path = Path(unquote(urlsplit(text).path)) if text.lower().startswith("file://") else Path(text)
    roots = [Path(r.strip()).expanduser().resolve() for r in settings.file_roots.split(",") if r.strip()]
    if not roots:
        if settings.mode == "embedded":
            return
        raise SourceError(f"local paths cannot be read in {settings.mode} mode: upload the file "
                          f"(POST /uploads) or name its folder in UDB_FILE_ROOTS")
    try:
        real = path.expanduser().resolve()
    except RuntimeError:  # "~name" naming no user: read as written, as files.local_path does
        real = path.resolve()
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise SourceError(f"{text}: outside the folders local hints may read (UDB_FILE_ROOTS)")


# ---------------------------------------------------------------- files, columns, rows, cells

def check_file(path: Path, fmt: str, limits: Limits) -> None:
    """Checks a source file needs before DuckDB opens it: JSON depth, zip and gzip inflation."""
    path = Path(path)
    if fmt in ("json", "ndjson"):
        check_json_file(path, limits.max_json_depth)
    elif fmt in ("xlsx", "docx"):
        check_zip(path, limits)
    if path.suffix.lower() == ".gz":
        gunzip_capped(path, None, limits.max_uncompressed_bytes)


def check_columns(count: int, name: str, limits: Limits) -> None:
    if _on(limits.max_columns) and count > limits.max_columns:
        raise LimitExceeded(f"{name}: {count:,} columns; the limit is {limits.max_columns:,} (UDB_MAX_COLUMNS)")


def check_rows(rows: int, name: str, limits: Limits) -> int:
    """`rows` came from a `capped_select` (at most cap + 1, or all of a bounded reader's rows):
    more than the cap fails."""
    if _on(limits.max_rows) and rows > limits.max_rows:
        raise LimitExceeded(f"{name}: more than {limits.max_rows:,} rows (UDB_MAX_ROWS)")
    return rows


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def capped_select(reader_sql: str, columns: list[dict], limits: Limits, name: str = "source",
                  *, cap_rows: bool = True) -> str:
    """`SELECT * FROM <reader>` with the row cap (LIMIT cap + 1) and, per text column, an
    `error()` when a cell is longer than UDB_MAX_CELL_CHARS — so the COPY that extracts a
    source enforces both in its single pass. `columns` are the catalogue's {name, type}.

    `cap_rows=False` leaves the LIMIT out, for a reader whose size is already bounded (a
    local file under the upload or download cap): the COPY counts its rows and `check_rows`
    fails it after. With a LIMIT, DuckDB's COPY of the bench's 1M-row CSV took 2.4 s on
    2 cores; without, 1.3 s."""
    check_columns(len(columns), name, limits)
    replaced = []
    if _on(limits.max_cell_chars):
        for column in columns:
            if str(column.get("type", "")).upper() not in ("VARCHAR", "JSON"):
                continue
            col = _ident(column["name"])
            before = f"{MARK} column {column['name']!r} has a value of "
            after = f" characters; the limit is {limits.max_cell_chars:,} (UDB_MAX_CELL_CHARS)"
            message = f"{_sql_text(before)} || length({col}) || {_sql_text(after)}"
            replaced.append(f"CASE WHEN length({col}) > {limits.max_cell_chars} "
                            f"THEN error({message}) ELSE {col} END AS {col}")
    star = f"* REPLACE ({', '.join(replaced)})" if replaced else "*"
    limit = f" LIMIT {limits.max_rows + 1}" if cap_rows and _on(limits.max_rows) else ""
    return f"SELECT {star} FROM {reader_sql}{limit}"


def raise_if_limit(exc: Exception, name: str) -> None:
    """Turn an error raised by a `capped_select` inside DuckDB into a LimitExceeded."""
    text = str(exc)
    if MARK in text:
        raise LimitExceeded(f"{name}: {text[text.index(MARK) + len(MARK):].strip().splitlines()[0]}") from None
