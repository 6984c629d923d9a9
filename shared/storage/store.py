"""Object store interface, its local-directory backend, and the tenant-scoped view.

The operations mirror S3's, conditional writes included, so the S3 backend fits the same
contract: `put(..., if_none_match=True)` is `If-None-Match: *` (put-if-absent) and
`put(..., if_match=etag)` is `If-Match` (put-if-match). ETags are opaque strings.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from shared.core.errors import InputError, NotFound, PreconditionFailed
from shared.core.tenancy import tenant_prefix, validate_artifact_name


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore(Protocol):
    def get(self, key: str) -> Blob: ...
    def get_to_file(self, key: str, path: Path) -> str: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def put(self, key: str, data: bytes | Path, *, if_match: str | None = None,
            if_none_match: bool = False, content_type: str | None = None) -> str: ...
    def delete(self, key: str, *, if_match: str | None = None) -> None: ...
    def copy(self, source: str, key: str) -> str: ...
    def url(self, key: str) -> str: ...
    def duckdb_secret(self, scope_key: str) -> str | None: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


def get_with_etag(store: ObjectStore, key: str) -> Blob:
    return store.get(key)


def put_if_absent(store: ObjectStore, key: str, data: bytes | Path, **kw) -> str:
    return store.put(key, data, if_none_match=True, **kw)


def put_if_match(store: ObjectStore, key: str, data: bytes | Path, etag: str, **kw) -> str:
    return store.put(key, data, if_match=etag, **kw)


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"invalid object key {key!r}")
    return key


class LocalStore:
    """Objects as files under `root`; metadata-free, ETag = md5 of the content (as S3 for
    single-part uploads). Conditional operations hold an exclusive file lock so that two
    processes cannot both win a put-if-absent."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / ".store.lock"
        self._thread_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def ping(self) -> None:
        if not self.root.is_dir():
            raise NotFound(f"store root {self.root} is missing")

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def get(self, key: str) -> Blob:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key}") from None
        return Blob(data, hashlib.md5(data).hexdigest())

    def get_to_file(self, key: str, path: Path) -> str:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"no object {key}")
        shutil.copyfile(src, path)
        return _md5_file(Path(path))

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectInfo(key, path.stat().st_size, _md5_file(path))

    def put(self, key: str, data: bytes | Path, *, if_match: str | None = None,
            if_none_match: bool = False, content_type: str | None = None) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target first, then rename: readers never see a half-written object.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (bytes, bytearray)):
                    out.write(data)
                else:
                    with open(data, "rb") as src:
                        shutil.copyfileobj(src, out, 1024 * 1024)
            etag = _md5_file(Path(tmp))
            with self._exclusive():
                if if_none_match and path.exists():
                    raise PreconditionFailed(f"{key} already exists")
                if if_match is not None:
                    current = _md5_file(path) if path.is_file() else None
                    if current != if_match:
                        raise PreconditionFailed(f"{key} changed (etag {current}, expected {if_match})")
                os.replace(tmp, path)
            return etag
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        path = self._path(key)
        with self._exclusive():
            if if_match is not None:
                current = _md5_file(path) if path.is_file() else None
                if current != if_match:
                    raise PreconditionFailed(f"{key} changed (etag {current}, expected {if_match})")
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def copy(self, source: str, key: str) -> str:
        """A copy of `source` at `key`: a hard link where the file system allows (a put replaces
        the target file by rename, so the link never sees a later put of either key)."""
        src, path = self._path(source), self._path(key)
        if not src.is_file():
            raise NotFound(f"no object {source}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.close(fd)
        try:
            os.unlink(tmp)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return _md5_file(path)

    def url(self, key: str) -> str:
        """The object's address for DuckDB: its file path."""
        return str(self._path(key))

    def duckdb_secret(self, scope_key: str) -> None:
        return None  # local files need no credentials

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        keys = []
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(".tmp-") or name == ".store.lock":
                    continue
                key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):  # byte order, as S3 lists
            path = self.root / key
            yield ObjectInfo(key, path.stat().st_size, _md5_file(path))

    def _exclusive(self):
        store = self

        class _Guard:
            def __enter__(self):
                store._thread_lock.acquire()
                self.fh = open(store._lock_path, "a")
                fcntl.flock(self.fh, fcntl.LOCK_EX)

            def __exit__(self, *exc):
                fcntl.flock(self.fh, fcntl.LOCK_UN)
                self.fh.close()
                store._thread_lock.release()

        return _Guard()


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TenantStore:
    """The only way functions touch tenant data: every key is relative to `tenants/<t>/`,
    so nothing outside it can be named."""

    def __init__(self, store: ObjectStore, tenant: str):
        self.store = store
        self.tenant = tenant
        self.prefix = tenant_prefix(tenant)

    def key(self, relative: str) -> str:
        return self.prefix + check_key(relative)

    def get(self, relative: str) -> Blob:
        return self.store.get(self.key(relative))

    def get_to_file(self, relative: str, path: Path) -> str:
        return self.store.get_to_file(self.key(relative), path)

    def head(self, relative: str) -> ObjectInfo | None:
        return self.store.head(self.key(relative))

    def put(self, relative: str, data: bytes | Path, **kw) -> str:
        return self.store.put(self.key(relative), data, **kw)

    def delete(self, relative: str, **kw) -> None:
        self.store.delete(self.key(relative), **kw)

    def copy(self, source: str, relative: str) -> str:
        return self.store.copy(self.key(source), self.key(relative))

    def url(self, relative: str) -> str:
        return self.store.url(self.key(relative))

    def duckdb_secret(self) -> str | None:
        """DuckDB credentials for this tenant's prefix only (None for a local store)."""
        return self.store.duckdb_secret(self.prefix)

    def list(self, relative_prefix: str = "") -> Iterator[ObjectInfo]:
        for info in self.store.list(self.prefix + relative_prefix):
            yield ObjectInfo(info.key[len(self.prefix):], info.size, info.etag)

    def artifact_key(self, job_id: str, name: str) -> str:
        return f"artifacts/{job_id}/{validate_artifact_name(name)}"

