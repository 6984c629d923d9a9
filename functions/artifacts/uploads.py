"""POST /uploads: a file in (multipart/form-data, one file part, named `file`), stored in the
tenant's store at `tenants/<t>/uploads/<upload-id>/<filename>`; out: the upload id, the hint to
discover it with (`upload://<upload-id>/<filename>`), its size and SHA-256.

Bounded memory: werkzeug spools the part to a temp file as it arrives, it is copied once more
to hash and size it, and the store receives it as a streamed file. Refused: a body or a file
above UDB_MAX_UPLOAD_BYTES (413), no file part or several, an empty file, and a file name with
a path, a traversal or odd characters (400).
"""
from __future__ import annotations

import hashlib
import secrets
import tempfile
from pathlib import Path

from werkzeug.exceptions import RequestEntityTooLarge

from functions.artifacts.handler import _tenant
from shared.core.errors import InputError
from shared.serving.httpfn import json_response
from shared.serving.runtime import Context
from shared.sources import upload as upload_source

FIELD = "file"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file's bytes
CHUNK = 1024 * 1024


def _too_large(limit: int):
    return json_response({"error": f"upload above the limit of {limit:,} bytes (UDB_MAX_UPLOAD_BYTES)"}, 413)


def upload(request, ctx: Context):
    """POST /uploads"""
    tenant = _tenant(request)
    limit = ctx.settings.max_upload_bytes
    if limit and request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
        return _too_large(limit)
    if not (request.mimetype or "").startswith("multipart/form-data"):
        raise InputError(f"expected multipart/form-data with one file part named {FIELD!r}, "
                         f"found Content-Type {request.mimetype or 'none'!r}")
    if limit:
        request.max_content_length = limit + MULTIPART_OVERHEAD  # bounds a chunked body too
    try:
        parts = request.files
    except RequestEntityTooLarge:
        return _too_large(limit)
    found = [(name, f) for name, f in parts.items(multi=True)]
    if len(found) != 1 or found[0][0] != FIELD:
        raise InputError(f"expected exactly one file part named {FIELD!r}, found "
                         f"{[name for name, _ in found] or 'none'}")
    storage = found[0][1]
    raw_name = storage.filename or ""
    if "/" in raw_name or "\\" in raw_name:
        raise InputError(f"invalid file name {raw_name!r}: a plain name is expected, not a path")
    filename = upload_source.validate_filename(raw_name)
    upload_id = "up-" + secrets.token_hex(8)
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryDirectory(prefix="udb-upload-") as tmp:
        local = Path(tmp) / "file"
        with open(local, "wb") as out:
            while True:
                chunk = storage.stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if limit and size > limit:
                    return _too_large(limit)
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InputError(f"{filename}: the file is empty")
        ctx.tenant_store(tenant).put(upload_source.key_of(upload_id, filename), local,
                                     content_type=storage.mimetype or "application/octet-stream")
    storage.close()
    ctx.log.info("upload %s: %s, %d bytes", upload_id, filename, size)
    return json_response({"uploadId": upload_id, "hint": upload_source.hint_for(upload_id, filename),
                          "filename": filename, "bytes": size, "sha256": digest.hexdigest()}, 201)


ROUTES = [("POST", "/uploads", upload)]
