"""Uploaded files: `upload://<upload-id>/<filename>`, as POST /uploads answers.

The file lives in the tenant's store at `tenants/<t>/uploads/<upload-id>/<filename>`; discover
and sync copy it to a temp file and read it as a local file (data formats through files.py,
documents through documents.py).

Table names. An upload's table is `upload__<file name with its extension>` (`x.csv` ->
`upload__x_csv`, `x.xlsx` -> `upload__x_xlsx`), so two different files never share a table nor
become each other's drift reference. Uploading a file of the same name and type again replaces
its table on purpose (the old rows become the drift reference); `options.table` names the table
yourself (`{"table": "sales"}` -> `upload__sales`) to replace one table from files of any name.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, unquote

from shared.core.errors import NotFound, SourceError
from shared.sources import http as web
from shared.core.tenancy import identifier
from shared.sources.detection import Hint, Signals
from shared.sources.registry import Connector, register

PROVIDER = "upload"
OPTIONS = frozenset({"table"})
SCHEME = "upload://"
UPLOAD_ID_RE = re.compile(r"^up-[0-9a-f]{16}$")
FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ ()+-]{0,127}$")


def validate_filename(name: str) -> str:
    """A flat file name: no path, no traversal, no leading dot or control characters."""
    if not isinstance(name, str) or not FILENAME_RE.fullmatch(name) or ".." in name:
        raise SourceError(f"invalid file name {name!r}: expected 1-128 of letters, digits, space, "
                          f"'.', '_', '-', '(', ')', '+', starting with a letter or digit, no '..'")
    return name


def hint_for(upload_id: str, filename: str) -> str:
    return f"{SCHEME}{upload_id}/{quote(filename)}"


def parse(hint: str) -> tuple[str, str]:
    """`upload://<id>/<filename>` -> (id, filename), both validated."""
    text = hint.strip()
    if not text.startswith(SCHEME):
        raise SourceError(f"not an upload hint (expected upload://<upload-id>/<filename>): {text!r}")
    upload_id, _, name = text[len(SCHEME):].partition("/")
    if not UPLOAD_ID_RE.fullmatch(upload_id):
        raise SourceError(f"{text}: invalid upload id {upload_id!r} (expected up- and 16 hex digits)")
    return upload_id, validate_filename(unquote(name))


def key_of(upload_id: str, filename: str) -> str:
    return f"uploads/{upload_id}/{filename}"


def _fetch(env, hint: str, dest: Path) -> tuple[str, str]:
    if env is None or env.store is None:
        raise SourceError("upload hints need the tenant's store; none is available here")
    upload_id, name = parse(hint)
    try:
        env.store.get_to_file(key_of(upload_id, name), dest)
    except NotFound:
        raise SourceError(f"no upload {upload_id}/{name} for tenant {env.tenant}") from None
    return upload_id, name


def table_stem(filename: str, table: str | None = None) -> str:
    """The stream (and so table) name: `options.table` when given, else the whole file name."""
    if table is not None:
        if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", table):
            raise SourceError(f"options.table: expected a name of letters, digits and '_' starting with a "
                              f"letter (at most 63), found {table!r}")
        return table.lower()
    return identifier(filename, "upload")


def inspect(hint: str, *, env=None) -> dict:
    with web.scratch() as tmp:
        dest = tmp / "upload"
        upload_id, name = _fetch(env, hint, dest)
        fmt = web.file_format(name, "", dest)
        stream = web.describe_file(dest, fmt, name=name, location=hint_for(upload_id, name),
                                   size=dest.stat().st_size, env=env)
    stream["name"] = table_stem(name, (getattr(env, "options", None) or {}).get("table"))
    return {"provider": PROVIDER, "short": "upload", "streams": [stream]}


def extract(stream: dict, out_dir: Path, *, env=None, part_bytes: int, memory_limit: str = "1GB",
            threads: int = 2) -> int:
    with web.scratch() as tmp:
        dest = tmp / "upload"
        _, name = _fetch(env, stream["location"], dest)
        return web.extract_file(dest, stream, out_dir, name=name, part_bytes=part_bytes,
                                memory_limit=memory_limit, threads=threads, env=env)


@register
class UploadConnector(Connector):
    """A file uploaded to POST /uploads, named upload://<id>/<filename>."""
    providers = (PROVIDER,)
    schemes = ("upload",)
    options = OPTIONS

    def signals(self, hint: Hint) -> Signals | None:
        if hint.scheme != "upload":
            return None
        return Signals().add(PROVIDER, 0.99, "scheme upload:// (a file uploaded to POST /uploads)")
