"""The ObjectStore contract (shared/storage/store.py) on S3 / MinIO, through boto3.

Semantics, as the local backend has them:
- ETags are the bare hex md5 of the content (no quotes): every `put` is a single-part PUT.
- `put(..., if_none_match=True)` is PutObject `If-None-Match: *`, `put(..., if_match=etag)` is
  PutObject `If-Match`; a lost condition (HTTP 412, or 409 ConditionalRequestConflict when two
  conditional writes overlap, or 404 for If-Match on a missing key) raises PreconditionFailed.
- A missing key raises NotFound (`head` returns None).
- The store being unreachable, timing out or answering 5xx raises TransientError, so a
  function answers 503 and the broker redelivers later.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError,
                                 EndpointConnectionError)

from shared.core.errors import NotFound, PreconditionFailed, TransientError
from shared.storage.store import Blob, ObjectInfo, check_key

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3      # seconds to open a connection
READ_TIMEOUT = 30        # seconds one socket read may wait (not the whole transfer)
ATTEMPTS = 3             # total attempts for idempotent calls (botocore "standard" retries)
CHUNK = 1024 * 1024

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
# Errors raised before a request reached the server: safe to resend even when conditional.
_NOT_SENT = (EndpointConnectionError, ConnectTimeoutError)


def _config(attempts: int) -> Config:
    return Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                  retries={"max_attempts": attempts, "mode": "standard"},
                  s3={"addressing_style": "path"}, max_pool_connections=32)


def _etag(raw: str) -> str:
    return raw.strip('"')


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    def __init__(self, bucket: str, *, endpoint: str = "", access_key: str = "", secret_key: str = "",
                 region: str = "us-east-1"):
        self.bucket = bucket
        self.endpoint = endpoint or None
        session = boto3.session.Session(aws_access_key_id=access_key or None,
                                        aws_secret_access_key=secret_key or None,
                                        region_name=region or "us-east-1")
        self._s3 = session.client("s3", endpoint_url=self.endpoint, config=_config(ATTEMPTS))
        # Conditional writes are not idempotent: if a put-if-absent succeeded but its answer was
        # lost, botocore's resend would get a 412 and report the win as a loss. They go through
        # a client that never resends on its own; `_conditional` resends only when the request
        # provably never reached the server.
        self._s3_once = session.client("s3", endpoint_url=self.endpoint, config=_config(1))
        self._bucket_ready = False
        # Kept for DuckDB's httpfs, which reads and writes the tenant lake's Parquet in place.
        self._keys = (access_key, secret_key, region or "us-east-1")

    @classmethod
    def from_settings(cls, settings) -> "S3Store":
        store = cls(settings.bucket, endpoint=settings.s3_endpoint, access_key=settings.s3_access_key,
                    secret_key=settings.s3_secret_key, region=settings.s3_region)
        try:
            store.ensure_bucket()
        except TransientError as exc:
            # Start anyway: /readyz reports the outage (ping retries the bucket check), and
            # strict startup refuses to serve after reporting every dependency that is down.
            log.warning("object store not ready at start: %s", exc)
        return store

    # ------------------------------------------------------------------ errors

    def _where(self, key: str | None) -> str:
        where = f"s3://{self.bucket}/{key}" if key is not None else f"s3://{self.bucket}"
        return f"{where} at {self.endpoint}" if self.endpoint else where

    def _translate(self, exc: Exception, key: str | None, *, conditional: bool = False) -> Exception:
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            if code in _CONFLICT or status in (409, 412) and conditional:
                return PreconditionFailed(f"{key}: condition not met ({code or status})")
            if code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
                if conditional:  # If-Match on a key that does not exist
                    return PreconditionFailed(f"{key}: condition not met (no such object)")
                return NotFound(f"no object {key}")
            if code == "NoSuchBucket":
                return TransientError(f"object store: bucket {self.bucket!r} does not exist ({self._where(None)})")
            return TransientError(f"object store: {code or status} on {self._where(key)}: "
                                  f"{exc.response.get('Error', {}).get('Message', '')}".rstrip(": "))
        if isinstance(exc, BotoCoreError):
            return TransientError(f"object store unreachable ({self._where(key)}): {exc}")
        return exc

    def _call(self, key: str | None, fn, /, **kw):
        try:
            return fn(**kw)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key) from None

    def _conditional(self, key: str, fn, /, **kw):
        delay = 0.2
        for attempt in range(ATTEMPTS):
            try:
                return fn(**kw)
            except _NOT_SENT as exc:
                if attempt == ATTEMPTS - 1:
                    raise self._translate(exc, key) from None
                time.sleep(delay)
                delay *= 2
                body = kw.get("Body")
                if body is not None and hasattr(body, "seek"):
                    body.seek(0)
            except (ClientError, BotoCoreError) as exc:
                raise self._translate(exc, key, conditional=True) from None

    # ------------------------------------------------------------------ bucket

    def ensure_bucket(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) != 404 and _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._translate(exc, None) from None
            try:
                self._s3.create_bucket(Bucket=self.bucket)
            except ClientError as again:
                if _code(again) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise self._translate(again, None) from None
            except BotoCoreError as again:
                raise self._translate(again, None) from None
        except BotoCoreError as exc:
            raise self._translate(exc, None) from None
        self._bucket_ready = True

    def ping(self) -> None:
        if not self._bucket_ready:
            self.ensure_bucket()
            return
        self._call(None, self._s3.head_bucket, Bucket=self.bucket)

    def close(self) -> None:
        """Close both clients' connection pools (a function's lifecycle stop)."""
        for client in (self._s3, self._s3_once):
            client.close()

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Blob:
        check_key(key)
        response = self._call(key, self._s3.get_object, Bucket=self.bucket, Key=key)
        try:
            data = response["Body"].read()
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"object store: reading {self._where(key)} failed: {exc}") from None
        return Blob(data, _etag(response["ETag"]))

    def get_to_file(self, key: str, path: Path) -> str:
        check_key(key)
        path = Path(path)
        response = self._call(key, self._s3.get_object, Bucket=self.bucket, Key=key)
        # Into a temporary file beside the target, then renamed: no half-written target.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK):
                    out.write(chunk)
            os.replace(tmp, path)
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"object store: downloading {self._where(key)} failed: {exc}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return _etag(response["ETag"])

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            response = self._call(key, self._s3.head_object, Bucket=self.bucket, Key=key)
        except NotFound:
            return None
        return ObjectInfo(key, int(response["ContentLength"]), _etag(response["ETag"]))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # ListObjectsV2 returns keys in UTF-8 byte order, page after page.
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(item["Key"], int(item["Size"]), _etag(item["ETag"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, prefix) from None

    # ------------------------------------------------------------------ writes

    def put(self, key: str, data: bytes | Path, *, if_match: str | None = None,
            if_none_match: bool = False, content_type: str | None = None) -> str:
        check_key(key)
        kw = {"Bucket": self.bucket, "Key": key}
        if content_type:
            kw["ContentType"] = content_type
        if if_none_match:
            kw["IfNoneMatch"] = "*"
        if if_match is not None:
            kw["IfMatch"] = if_match
        conditional = if_none_match or if_match is not None
        if isinstance(data, (bytes, bytearray, memoryview)):
            response = self._put(key, conditional, Body=bytes(data), **kw)
        else:
            # A file goes up as ONE streamed PutObject, never multipart: a multipart upload's
            # ETag is not the content's md5 (it is md5-of-part-md5s + "-N"), so it would break
            # "ETag = md5" and the If-Match round trips built on it (warehouse upload, lease).
            # The price is S3's 5 GB single-PUT limit and no parallel part upload; staged
            # Parquet parts and tenant warehouses of a few GB are well within it.
            with open(data, "rb") as body:
                response = self._put(key, conditional, Body=body, **kw)
        return _etag(response["ETag"])

    def copy(self, source: str, key: str) -> str:
        """A server-side copy of `source` to `key` (the bytes never pass through the caller)."""
        check_key(source)
        check_key(key)
        response = self._call(key, self._s3.copy_object, Bucket=self.bucket, Key=key,
                              CopySource={"Bucket": self.bucket, "Key": source})
        return _etag(response["CopyObjectResult"]["ETag"])

    def url(self, key: str) -> str:
        """The object's address for DuckDB (httpfs)."""
        return f"s3://{self.bucket}/{check_key(key)}"

    def duckdb_secret(self, scope_key: str) -> str:
        """A temporary (per-connection, never persisted) DuckDB secret for this store, scoped to
        the keys under `scope_key`: the only S3 credentials a lake connection holds, and only for
        the tenant's own prefix. Key id and secret always given (empty for unsigned), so httpfs
        never falls back to the host's AWS_* variables."""
        from urllib.parse import urlsplit

        def text(value: str) -> str:
            return "'" + value.replace("'", "''") + "'"
        access, secret, region = self._keys
        parts = ["TYPE s3", "PROVIDER config", f"REGION {text(region)}",
                 f"KEY_ID {text(access if secret else '')}", f"SECRET {text(secret if access else '')}",
                 "SESSION_TOKEN ''", f"SCOPE {text(f's3://{self.bucket}/{scope_key}')}"]
        defaults = ""
        if self.endpoint:
            url = urlsplit(self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}")
            ssl = 'true' if url.scheme == 'https' else 'false'
            parts += [f"ENDPOINT {text(url.netloc)}", "URL_STYLE 'path'", f"USE_SSL {ssl}"]
            # Any s3:// path outside the scope goes to the same endpoint, unsigned (and is refused
            # there), never to AWS's default endpoint: the lake's connection talks to its store only.
            defaults = (f"SET s3_endpoint = {text(url.netloc)}; SET s3_url_style = 'path'; SET s3_use_ssl = {ssl}; "
                        "SET s3_access_key_id = ''; SET s3_secret_access_key = ''; ")
        return defaults + f"CREATE OR REPLACE TEMPORARY SECRET udb_store ({', '.join(parts)})"

    def _put(self, key: str, conditional: bool, **kw):
        if conditional:
            return self._conditional(key, self._s3_once.put_object, **kw)
        return self._call(key, self._s3.put_object, **kw)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        check_key(key)
        if if_match is None:
            # S3 deletes are idempotent: deleting a missing key succeeds.
            self._call(key, self._s3.delete_object, Bucket=self.bucket, Key=key)
            return
        # Conditional delete. AWS S3 honours DeleteObject If-Match; MinIO (checked against the
        # version devstack builds) accepts the header and ignores it, deleting whatever is there.
        # So compare first, then delete with If-Match as well: on AWS the delete itself is
        # atomic, on MinIO a writer that replaces the object between our HEAD and our DELETE
        # (a window of one round trip) would have its new object deleted. UDB only deletes-if-match
        # to release its own writer lease, whose every other writer must first see it expired,
        # so that window is accepted rather than emulated with a lock.
        current = self.head(key)
        if current is None or current.etag != if_match:
            raise PreconditionFailed(f"{key} changed (etag {current.etag if current else None}, "
                                     f"expected {if_match})")
        self._conditional(key, self._s3_once.delete_object, Bucket=self.bucket, Key=key, IfMatch=if_match)
