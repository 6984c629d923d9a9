"""Objects in S3 / MinIO: `s3://bucket/key` (one object) or `s3://bucket/prefix/` (every CSV, TSV,
Parquet, JSON and NDJSON object under the prefix, one table each).

`inspect` lists with boto3 (ListObjectsV2), checks each object's first bytes with a ranged GET,
and has DuckDB describe it over httpfs; `extract` streams one object through DuckDB into chunked
Parquet, as `files.extract` does for a local file. Nothing is downloaded whole.

Whose S3. A hint alone reads with UDB's own object-store endpoint and keys (the settings), from
any bucket but UDB's own (`UDB_BUCKET` holds every tenant's warehouse, staging and artifacts:
a tenant must never read it through a source), and only from `UDB_S3_SOURCE_BUCKETS` when that
is set. Options name another S3 — `{"endpoint": "https://...", "region": "...",
"access_key_id": "...", "secret_access_key": "..."}` (each optional) — whose
endpoint passes the SSRF guard (shared/security/netguard.py) like every other source host. An inline
secret key is moved into the tenant's secret store at discovery and only its `secret://`
reference is kept in the catalogue, events and documents.

Whose keys. A source signs with the keys the tenant gave (or, for a hint alone, UDB's own keys
from the settings) and with nothing else: without keys its requests go unsigned (botocore's
UNSIGNED; for DuckDB an explicit empty key in its per-connection secret). boto3's default
credential chain and DuckDB's copy of the host's AWS_* variables are never used for a source,
so the host's identity (environment, shared credentials file, container credentials, the
metadata service) is never sent to an endpoint a tenant chose. UDB's own bucket is recognised
by bucket name and by the endpoint's resolved address and port (`same_endpoint`), not by how
the endpoint is spelled.
Incremental by object (`options.incremental: true`): the hint's objects become ONE stream (one
table) with an `_s3_key` column naming each row's object. A sync lists the prefix again and reads
only the objects that are new or changed (ETag or LastModified differ from the last sync's,
kept per source in shared/storage/syncstate.py); the writer merges the batch by `_s3_key`, so a
changed object's rows replace its old rows and the other objects' rows stay. An object deleted
from the bucket keeps its rows (deletes are not seen).

A missing bucket or key, an unreadable object or denied access is a SourceError (the job fails);
an unreachable endpoint is a TransientError (the broker retries).
"""
from __future__ import annotations

import csv
import io
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import duckdb
from botocore.exceptions import BotoCoreError, ClientError

from shared.storage import duck
from shared.core.errors import SourceError, TransientError
from shared.core.settings import Settings
from shared.sources import files, settings_of
from shared.core.tenancy import identifier
from shared.sources.detection import PROBE_CONNECT, PROBE_READ, Hint, Scores, Signals
from shared.sources.registry import Connector, register

PROVIDER = "s3"
OPTION_FIELDS = ("endpoint", "region", "access_key_id", "secret_access_key")
OPTIONS = frozenset({*OPTION_FIELDS, "name", "incremental"})
# What UDB reads from a bucket: the local file formats minus Excel.
FORMATS = {ext: fmt for ext, fmt in files.FORMATS.items() if fmt != "xlsx"}
SNIFF_BYTES = files.SNIFF_BYTES
MAX_OBJECTS = 1000  # one table per object: a prefix with more is almost surely a partitioned dataset
_TRANSIENT_MARKERS = ("Could not establish connection", "Connection refused", "Timeout", "timed out",
                      "(HTTP 500", "(HTTP 502", "(HTTP 503", "(HTTP 504")


# One boto3 Session per process for every source client: a new Session loads botocore's S3
# service model and endpoint rules again (0.05-0.08 s per client, twice per job: discover and
# sync). The Session holds no keys of a source: each client is given its own, or none.
_SESSION: list = []
_SESSION_LOCK = threading.Lock()
# An object up to this size is read whole with one GET and then locally, without DuckDB's
# httpfs: loading that extension (its signature checked over ~20 MB) and its HEAD and range
# requests cost more than the object (a 50 KB CSV: ~0.2 s in discovery and again in sync).
SMALL_OBJECT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class S3Config:
    """Where source objects are read from and with which keys."""
    endpoint: str = ""          # e.g. http://127.0.0.1:19000; empty for AWS
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    # host:port of a shared.security.egressproxy.EgressProxy that every connection (boto3's and DuckDB's)
    # goes through; set for an S3 named in a hint's options, whose redirects UDB cannot trust.
    proxy: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Config":
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_region)

    @property
    def signing_keys(self) -> tuple[str, str]:
        """(key id, secret) to sign with: both as the tenant gave them, or neither (unsigned).
        One choice for boto3 and for DuckDB, so the two clients of a source never differ."""
        return (self.access_key, self.secret_key) if self.access_key and self.secret_key else ("", "")

    def client(self, *, connect_timeout: float = 3, read_timeout: float = 30, attempts: int = 3):
        """A boto3 client that signs with these keys, or with none (unsigned requests).

        Never boto3's default credential chain: for a source, the host's identity (environment
        keys, shared credentials and config files, container credentials, the instance metadata
        service) must not sign a request to an endpoint a tenant chose (issue 16). Nor does an
        endpoint come from the environment or a config file (`ignore_configured_endpoint_urls`)."""
        import boto3  # where it is used: discover and sync only, not every function's cold start
        from botocore import UNSIGNED
        from botocore.config import Config

        proxies = {"http": f"http://{self.proxy}", "https": f"http://{self.proxy}"} if self.proxy else None
        key_id, secret = self.signing_keys
        signed = bool(key_id)
        config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"max_attempts": attempts, "mode": "standard"},
                        s3={"addressing_style": "path"}, proxies=proxies, ignore_configured_endpoint_urls=True,
                        **({} if signed else {"signature_version": UNSIGNED}))
        keys = {"aws_access_key_id": key_id, "aws_secret_access_key": secret,
                "aws_session_token": None} if signed else {}
        with _SESSION_LOCK:  # a boto3 Session is not thread-safe; its clients are
            if not _SESSION:
                _SESSION.append(boto3.session.Session())
            return _SESSION[0].client("s3", endpoint_url=self.endpoint or None,
                                      region_name=self.region or "us-east-1", config=config, **keys)

    def secret_sql(self) -> str:
        """A temporary (per-connection, never persisted) DuckDB secret for these credentials.

        The key id and secret are always given, empty for an unsigned read: a secret without
        them falls back to the `s3_access_key_id` setting, which httpfs fills from the host's
        AWS_ACCESS_KEY_ID when it loads."""
        key_id, secret = self.signing_keys
        parts = ["TYPE s3", "PROVIDER config", f"REGION {_str(self.region or 'us-east-1')}",
                 f"KEY_ID {_str(key_id)}", f"SECRET {_str(secret)}", "SESSION_TOKEN ''"]
        if self.endpoint:
            url = urlsplit(self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}")
            parts += [f"ENDPOINT {_str(url.netloc)}", "URL_STYLE 'path'",
                      f"USE_SSL {'true' if url.scheme == 'https' else 'false'}"]
        return f"CREATE OR REPLACE TEMPORARY SECRET udb_s3 ({', '.join(parts)})"


def _str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse(hint: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); the key may be empty or end in '/' (a prefix)."""
    url = urlsplit(hint.strip())
    if url.scheme.lower() != "s3" or not url.netloc:
        raise SourceError(f"not an S3 URL (expected s3://bucket/key): {hint!r}")
    if url.query or url.fragment:
        raise SourceError(f"{hint}: S3 URLs take no ?query or #fragment")
    return url.netloc, url.path.lstrip("/")


def url_of(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def redact(hint: str) -> str:
    return hint  # s3:// URLs carry no credentials


# ---------------------------------------------------------------- listing (boto3)

def _fail(exc: Exception, bucket: str, key: str, config: S3Config) -> Exception:
    where = url_of(bucket, key)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return SourceError(f"{where}: bucket {bucket!r} does not exist")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return SourceError(f"{where}: no such object")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled") or status == 403:
            return SourceError(f"{where}: access denied ({code or status})")
        if status >= 500 or code in ("SlowDown", "RequestTimeout"):
            return TransientError(f"{where}: object store answered {code or status}")
        return SourceError(f"{where}: {code or status}: {exc.response.get('Error', {}).get('Message', '')}")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"{where}: object store unreachable ({config.endpoint or 'AWS'}): {exc}")
    return exc


def list_objects(bucket: str, key: str, config: S3Config, client=None) -> list[dict]:
    """The objects a hint names: [{key, size, etag}]. One object for a key that exists; every
    object with a supported extension for a prefix (a trailing '/', an empty key, or a key that
    is no object but has objects below `key/`)."""
    client = client or config.client()
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return [{"key": key, "size": int(head["ContentLength"]), "etag": head["ETag"].strip('"'),
                         "modified": head["LastModified"].isoformat()}]
            except ClientError as exc:
                if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) != 404:
                    raise
            prefix = key + "/"
        else:
            prefix = key
        found, skipped = [], 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                name = item["Key"]
                if name.endswith("/") or PurePosixPath(name).name.startswith("."):
                    continue  # "folder" markers and hidden objects
                if PurePosixPath(name).suffix.lower() not in FORMATS:
                    skipped += 1
                    continue
                found.append({"key": name, "size": int(item["Size"]), "etag": item["ETag"].strip('"'),
                              "modified": item["LastModified"].isoformat()})
    except (ClientError, BotoCoreError) as exc:
        # HEAD of a key in a missing bucket is a bare 404; the listing then says NoSuchBucket.
        raise _fail(exc, bucket, key, config) from None
    if not found:
        if not skipped and key and not key.endswith("/"):
            raise SourceError(f"{url_of(bucket, key)}: no such object (and no objects under {prefix!r})")
        what = f"{skipped} objects, none of a supported type" if skipped else "no objects"
        raise SourceError(f"{url_of(bucket, prefix)}: {what} under the prefix "
                          f"(supported: {', '.join(sorted(FORMATS))})")
    if len(found) > MAX_OBJECTS:
        raise SourceError(f"{url_of(bucket, prefix)}: {len(found)} objects under the prefix, more than "
                          f"{MAX_OBJECTS} tables; name a narrower prefix")
    return found


def _is_404(exc: Exception) -> bool:
    return isinstance(exc, ClientError) and int(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) == 404


def _no_bucket() -> ClientError:
    return ClientError({"Error": {"Code": "NoSuchBucket"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
                       "HeadBucket")


def _check_bucket(client, bucket: str, key: str, config: S3Config) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise _fail(_no_bucket() if _is_404(exc) else exc, bucket, key, config) from None


def _range(client, bucket: str, key: str, spec: str, config: S3Config) -> bytes:
    try:
        return client.get_object(Bucket=bucket, Key=key, Range=spec)["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise _fail(exc, bucket, key, config) from None


def detect_format(client, bucket: str, obj: dict, config: S3Config) -> tuple[str, bytes]:
    """The object's format from its extension, confirmed by its first (and for Parquet last)
    bytes; returns (format, first bytes)."""
    key = obj["key"]
    name = PurePosixPath(key)
    if obj["size"] == 0:
        raise SourceError(f"{url_of(bucket, key)}: object is empty")
    head = _range(client, bucket, key, f"bytes=0-{SNIFF_BYTES - 1}", config)
    ext = name.suffix.lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        if ext:
            raise SourceError(f"{url_of(bucket, key)}: unsupported file type {ext!r} "
                              f"(supported: {', '.join(sorted(FORMATS))})")
        fmt = files._sniff_kind(head)
        if fmt is None or fmt == "xlsx":
            raise SourceError(f"{url_of(bucket, key)}: cannot tell the file type "
                              f"(no extension, unrecognised content)")
    if fmt == "parquet":
        tail = _range(client, bucket, key, "bytes=-4", config) if obj["size"] >= 8 else b""
        if not head.startswith(b"PAR1") or tail != b"PAR1":
            raise SourceError(f"{url_of(bucket, key)}: not a Parquet file (missing PAR1 magic bytes)")
    else:
        files._check_text(name, head)
        if fmt in ("json", "ndjson") and head.lstrip()[:1] not in (b"[", b"{"):
            raise SourceError(f"{name.name}: not JSON (starts with {head.lstrip()[:12]!r})")
    return fmt, head


# ---------------------------------------------------------------- reading (DuckDB httpfs)

def connect(config: S3Config, *, memory_limit: str = "1GB", threads: int = 2):
    con = duck.connect(memory_limit=memory_limit, threads=threads, extensions=("httpfs",))
    try:
        con.execute("SET http_timeout = 30")
        con.execute("SET http_retries = 2")
        # httpfs copies the host's AWS_* variables into these settings when it loads; a source
        # connection signs with its own secret only (below), so they are blanked.
        for setting in ("s3_access_key_id", "s3_secret_access_key", "s3_session_token"):
            con.execute(f"SET {setting} = ''")
        if config.proxy:
            con.execute(f"SET http_proxy = {_str(config.proxy)}")
        con.execute(config.secret_sql())
    except Exception:
        con.close()
        raise
    return con


def _duck_error(exc: Exception, url: str, fmt: str) -> Exception:
    text = str(exc)
    first = files._first_line(exc)
    if any(marker in text for marker in _TRANSIENT_MARKERS):
        return TransientError(f"{url}: object store unreachable: {first}")
    if "(HTTP 404" in text:
        return SourceError(f"{url}: no such object (or bucket)")
    if "(HTTP 403" in text:
        return SourceError(f"{url}: access denied")
    match = files._CSV_LINE_ERROR.search(text)
    if match:
        line, expected, found = match.groups()
        return SourceError(f"{PurePosixPath(url).name}: ragged rows: line {line} has {found} fields, "
                           f"expected {expected}")
    return SourceError(f"{PurePosixPath(url).name}: cannot read as {fmt}: {first}")


def check_csv_shape(con, url: str, fmt: str, head: bytes) -> dict:
    """As files.check_csv_shape: refuse a CSV whose leading lines DuckDB's sniffer would skip
    (or cannot make sense of), naming the first ragged line in the object's first bytes.
    Returns the dialect it found ({delim, quote, escape, header}), which files.reader_sql
    states so that neither DESCRIBE nor sync's COPY sniffs again."""
    tab = ", delim = '\t'" if fmt == "tsv" else ""
    name = PurePosixPath(url).name
    delim = "\t" if fmt == "tsv" else None
    try:
        found, skipped, columns, quote, escape, header = con.execute(
            f"SELECT Delimiter, SkipRows, Columns, Quote, Escape, HasHeader FROM sniff_csv({_str(url)}{tab})").fetchone()
    except Exception as exc:
        error = _duck_error(exc, url, fmt)
        if isinstance(error, TransientError):
            raise error from None
        raise _ragged_in(head, name, delim or ",") or error from None
    if skipped:
        raise (_ragged_in(head, name, delim or found or ",")
               or SourceError(f"{name}: the first {skipped} lines do not match the rest of the file"))
    if len(columns) == 1 and any(d in columns[0]["name"] for d in ",;|\t"):
        # The sniffer gave up on delimiters and read whole lines as one column: ragged rows.
        raise (_ragged_in(head, name, ",")
               or SourceError(f"{name}: no consistent delimiter (one column named {columns[0]['name']!r})"))
    # The sniffer writes a missing quote or escape character as "(empty)".
    quote, escape = ("" if v in (None, "(empty)") else v for v in (quote, escape))
    return {"delim": delim or found, "quote": quote, "escape": escape, "header": bool(header)}


def _ragged_in(head: bytes, name: str, delim: str) -> SourceError | None:
    """The first line of `head` whose field count differs from the header's, as an error."""
    text = head.decode("utf-8", errors="replace")
    if len(head) >= SNIFF_BYTES:
        text = text[:text.rfind("\n") + 1]  # the last line may be cut
    expected = None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        for lineno, row in enumerate(reader, start=1):
            if not row:
                continue
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                return SourceError(f"{name}: ragged rows: line {lineno} has {len(row)} fields, expected {expected}")
    except csv.Error as exc:
        return files.csv_error(name, reader, exc)
    return None


def describe(con, url: str, fmt: str, head: bytes = b"", dialect_out: dict | None = None) -> list[dict]:
    """The object's columns; `url` may be a local copy of a small object (read_whole). A CSV's
    sniffed dialect goes into `dialect_out`, for the stream's options.csv."""
    dialect = check_csv_shape(con, url, fmt, head) if fmt in ("csv", "tsv") else None
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {files.reader_sql(url, fmt, dialect)}").fetchall()
    except Exception as exc:
        raise _duck_error(exc, url, fmt) from None
    if not rows:
        raise SourceError(f"{PurePosixPath(url).name}: no columns found")
    if dialect and dialect_out is not None:
        dialect_out.update(dialect)
    return [{"name": r[0], "type": r[1]} for r in rows]


class _Readers:
    """DuckDB connections for one discovery or sync: a plain one for small objects read whole
    into `folder`, the httpfs one (connect) for the others, each made on first use."""

    def __init__(self, config: S3Config, folder: Path, **kw):
        self.config, self.folder, self.kw = config, folder, kw
        self._local: duckdb.DuckDBPyConnection | None = None
        self._remote: duckdb.DuckDBPyConnection | None = None

    def local(self):
        if self._local is None:
            self._local = duck.connect(**self.kw)
        return self._local

    def remote(self):
        if self._remote is None:
            self._remote = connect(self.config, **self.kw)
        return self._remote

    def close(self) -> None:
        for con in (self._local, self._remote):
            if con is not None:
                con.close()


def read_whole(client, bucket: str, obj: dict, head: bytes, folder: Path, config: S3Config) -> Path | None:
    """A local copy of an object of at most SMALL_OBJECT_BYTES, named as the object (DuckDB's
    messages then name the file the user knows): the first bytes already read when they are the
    whole object (the ranged GET came back short), else one GET. None for a larger object (read
    in place through httpfs)."""
    if int(obj["size"]) > SMALL_OBJECT_BYTES:
        return None
    if len(head) < SNIFF_BYTES and head:
        data = head  # the ranged GET of the first bytes ended early: that is the whole object
    else:
        # One plain GET: one version of the object, whatever was listed (a ranged GET of the
        # listed size would cut an object replaced since by a longer one).
        try:
            answer = client.get_object(Bucket=bucket, Key=obj["key"])
            if int(answer["ContentLength"]) > SMALL_OBJECT_BYTES:
                answer["Body"].close()
                return None  # grew since it was listed: read it in place
            data = answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _fail(exc, bucket, obj["key"], config) from None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (PurePosixPath(obj["key"]).name or "object")
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- whose S3

def source_spec(options: dict, env, hint: str) -> dict | None:
    """The options' S3 as it may be persisted: {endpoint, region, access_key_id,
    secret_access_key: secret://...}, or None for UDB's own object store."""
    options = options or {}
    unknown = set(options) - OPTIONS - {"provider", "oauth"}
    if unknown:
        raise SourceError(f"options: unknown fields {sorted(unknown)} for an S3 source; known: {list(OPTION_FIELDS)}")
    spec = {f: options[f] for f in OPTION_FIELDS if options.get(f) not in (None, "")}
    if not spec:
        return None
    for field_name, value in spec.items():
        if not isinstance(value, str):
            raise SourceError(f"options.{field_name}: expected a string")
    if ("access_key_id" in spec) != ("secret_access_key" in spec):
        raise SourceError("options: access_key_id and secret_access_key go together")
    if "endpoint" in spec and not spec["endpoint"].startswith(("http://", "https://")):
        raise SourceError(f"options.endpoint: expected an http(s) URL, found {spec['endpoint']!r}")
    from shared.security.secrets import REF_PREFIX
    secret = spec.get("secret_access_key")
    if secret and not secret.startswith(REF_PREFIX):
        import hashlib
        digest = hashlib.sha256(f"{hint}|{spec.get('endpoint', '')}|{spec['access_key_id']}".encode()).hexdigest()[:16]
        spec["secret_access_key"] = env.keep_secret(f"src-{digest}-s3-secret", secret)
    return spec


_AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


def _endpoint_parts(endpoint: str) -> tuple[str, int]:
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    try:
        port = url.port
    except ValueError:
        raise SourceError(f"{endpoint}: the port is not a number") from None
    return (url.hostname or "").lower().rstrip("."), port or (443 if url.scheme.lower() == "https" else 80)


def _this_machine() -> set:
    """The addresses that reach this machine: loopback and unspecified ones, and its own."""
    import socket

    from shared.security import netguard
    found = set()
    try:
        found.update(netguard.resolve(socket.gethostname()))
    except SourceError:
        pass
    return found


def _addresses(host: str) -> set:
    """`host`'s addresses, IPv4-mapped IPv6 as IPv4; every address that reaches this machine
    (127.0.0.0/8, ::1, 0.0.0.0, ::, the machine's own) as the one token "this machine", since a
    server listening on all interfaces answers on each of them."""
    import ipaddress

    from shared.security import netguard
    literal = netguard._literal(host)
    addresses = [literal] if literal is not None else netguard.resolve(host)
    local = None
    found = set()
    for ip in addresses:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_unspecified:
            found.add("this machine")
            continue
        if local is None:
            local = _this_machine()
        found.add("this machine" if ip in local else ip)
    return found


def same_endpoint(endpoint: str, own: str) -> bool:
    """Whether `endpoint` reaches the object store `own` names: compared by resolved address and
    port, never by spelling (`http://127.1:9000`, `http://localhost:9000`,
    `http://[::ffff:127.0.0.1]:9000` and `http://2130706433:9000` all reach 127.0.0.1:9000).
    An empty endpoint is AWS; so is any `*.amazonaws.com` host when UDB's own store is AWS."""
    endpoint, own = endpoint.strip(), own.strip()
    if not own:
        host = _endpoint_parts(endpoint)[0] if endpoint else ""
        return not endpoint or host == "amazonaws.com" or host.endswith(_AWS_SUFFIXES)
    if not endpoint:
        return False
    (host, port), (own_host, own_port) = _endpoint_parts(endpoint), _endpoint_parts(own)
    if port != own_port:
        return False
    if host == own_host:
        return True
    try:
        return bool(_addresses(host) & _addresses(own_host))
    except SourceError:
        return False  # a name that does not resolve reaches nothing, UDB's store included


def config_for(bucket: str, spec: dict | None, env) -> S3Config:
    """The credentials to read `bucket` with, after the checks that keep tenants apart."""
    settings = settings_of(env)
    own = S3Config.from_settings(settings)
    if spec:
        endpoint = spec.get("endpoint", "")
        if endpoint:
            from shared.security import netguard
            netguard.check_url(endpoint, settings)  # a private or metadata address is refused
        secret = spec.get("secret_access_key", "")
        config = S3Config(endpoint, spec.get("access_key_id", ""),
                          env.resolve_secret(secret) if secret else "", spec.get("region") or "us-east-1")
    else:
        config = own
        allowed = [b.strip() for b in settings.s3_source_buckets.split(",") if b.strip()]
        if allowed and bucket not in allowed:
            raise SourceError(f"s3://{bucket}/: not a source bucket here (UDB_S3_SOURCE_BUCKETS: {', '.join(allowed)}); "
                              f"name another S3 in options (endpoint, access_key_id, secret_access_key)")
    if bucket == settings.bucket and same_endpoint(config.endpoint, own.endpoint):
        raise SourceError(f"s3://{bucket}/ is UDB's own bucket (every tenant's data): not a source; "
                          f"upload the file (POST /uploads) or read it from another bucket")
    return config


# ---------------------------------------------------------------- provider interface

@contextmanager
def _guarded(config: S3Config, spec: dict | None, env):
    """`config` as it may be used: for an S3 the hint named, every connection through an
    EgressProxy (the SSRF guard on each redirect hop too). A guard refusal is the error named,
    whatever DuckDB or boto3 made of the proxy's 403; an endless redirect loop is a SourceError."""
    if not spec:
        yield config
        return
    from shared.security.egressproxy import EgressProxy
    with EgressProxy(settings_of(env)) as proxy:
        try:
            yield replace(config, proxy=proxy.address)
        except (SourceError, RecursionError) as exc:
            if proxy.refused:
                raise SourceError(f"{config.endpoint or 'S3'}: {proxy.refused[0]}") from None
            if isinstance(exc, RecursionError):
                raise SourceError(f"{config.endpoint or 'S3'}: the endpoint keeps redirecting") from None
            raise


def inspect(hint: str, *, config: S3Config | None = None, env=None) -> dict:
    """The catalogue of one object or of every supported object under a prefix."""
    bucket, key = parse(hint)
    spec = None
    if config is None:
        spec = source_spec(getattr(env, "options", None) or {}, env, hint)
        config = config_for(bucket, spec, env)
    incremental = _incremental_spec(getattr(env, "options", None) or {})
    with _guarded(config, spec, env) as config:
        if incremental:
            return _inspect_incremental(bucket, key, config, spec)
        return _inspect(bucket, key, config, spec)


KEY_COLUMN = "_s3_key"


def _incremental_spec(options: dict) -> bool:
    spec = options.get("incremental")
    if spec in (None, False):
        return False
    if spec is True or spec == {}:
        return True
    raise SourceError(f"options.incremental: expected true for an S3 source (incremental by object), found {spec!r}")


def _inspect_incremental(bucket: str, key: str, config: S3Config, spec: dict | None) -> dict:
    """One stream for all the hint's objects, described by the first, merged by `_s3_key`."""
    client = config.client()
    objects = list_objects(bucket, key, config, client)
    con = connect(config)
    try:
        fmt, head = detect_format(client, bucket, objects[0], config)
        columns = describe(con, url_of(bucket, objects[0]["key"]), fmt, head)
    finally:
        con.close()
    if any(c["name"] == KEY_COLUMN for c in columns):
        raise SourceError(f"{url_of(bucket, objects[0]['key'])}: has a column {KEY_COLUMN!r}, the name incremental "
                          f"S3 syncs give the object key")
    temporal = [c["name"] for c in columns if c["type"].startswith(("TIMESTAMP", "DATE"))]
    base = key.rstrip("/")
    name = identifier(PurePosixPath(base).stem if base else bucket, "objects")
    options = {**(spec or {}), "incremental": {"by": "object", "primary_key": [KEY_COLUMN]}}
    stream = {"name": name, "format": fmt, "location": url_of(bucket, key), "columns": [*columns,
              {"name": KEY_COLUMN, "type": "VARCHAR"}], "sync_modes": ["full", "incremental"],
              "cursor_candidates": temporal, "primary_key_candidates": [KEY_COLUMN],
              "bytes": sum(o["size"] for o in objects), "options": options,
              "detection": [f"incremental by object: {len(objects)} objects, one table, rows keyed by {KEY_COLUMN}"]}
    return {"provider": PROVIDER, "short": identifier(bucket, "src"), "streams": [stream]}


def _inspect(bucket: str, key: str, config: S3Config, spec: dict | None) -> dict:
    client = config.client()
    objects = list_objects(bucket, key, config, client)
    names = _stream_names([o["key"] for o in objects], key)
    with tempfile.TemporaryDirectory(prefix="udb-s3-") as tmp:
        readers = _Readers(config, Path(tmp))
        try:
            streams = []
            for i, obj in enumerate(objects):
                fmt, head = detect_format(client, bucket, obj, config)
                url = url_of(bucket, obj["key"])
                local = read_whole(client, bucket, obj, head, Path(tmp) / str(i), config)
                dialect: dict = {}
                if local is not None:
                    columns = describe(readers.local(), str(local), fmt, head, dialect)
                else:
                    columns = describe(readers.remote(), url, fmt, head, dialect)
                temporal = [c["name"] for c in columns if c["type"].startswith(("TIMESTAMP", "DATE"))]
                keys = [c["name"] for c in columns if c["name"].lower() == "id" or c["name"].lower().endswith("_id")]
                stream = {"name": names[obj["key"]], "format": fmt, "location": url, "columns": columns,
                          "sync_modes": ["full", "incremental"], "cursor_candidates": temporal,
                          "primary_key_candidates": keys[:1], "bytes": obj["size"]}
                options = dict(spec or {})  # the secret key only as its secret:// reference
                if dialect:
                    options["csv"] = dialect  # sync reads with it, without sniffing again
                if options:
                    stream["options"] = options
                streams.append(stream)
        finally:
            readers.close()
    return {"provider": PROVIDER, "short": identifier(bucket, "src"), "streams": streams}


def _stream_names(keys: list[str], hint_key: str) -> dict[str, str]:
    """Stream name = the object's stem; where two stems collide (the same name in two
    "folders"), the path below the hint's prefix names both."""
    by_stem = {k: identifier(PurePosixPath(k).stem) for k in keys}
    counts: dict[str, int] = {}
    for name in by_stem.values():
        counts[name] = counts.get(name, 0) + 1
    base = hint_key if hint_key.endswith("/") or not hint_key else hint_key + "/"
    names = {}
    for k, name in by_stem.items():
        if counts[name] > 1:
            rel = k[len(base):] if k.startswith(base) else k
            name = identifier(str(PurePosixPath(rel).with_suffix("")))
        names[k] = name
    if len(set(names.values())) != len(names):
        raise SourceError(f"two objects map to the same table name ({', '.join(sorted(names.values()))})")
    return names


def extract(stream: dict, out_dir: Path, *, part_bytes: int, memory_limit: str = "1GB", threads: int = 2,
            config: S3Config | None = None, env=None) -> int:
    """Write the object as Parquet parts into `out_dir`; returns the row count."""
    url, fmt = stream["location"], stream["format"]
    bucket, key = parse(url)
    spec = None
    options = dict(stream.get("options") or {})
    incremental = options.pop("incremental", None)
    dialect = options.pop("csv", None)  # what discovery sniffed; not part of whose S3
    if config is None:
        # The checks run again at sync: a catalogue is data, and settings may have changed since.
        spec = options or None
        config = config_for(bucket, spec, env)
    with _guarded(config, spec, env) as config:
        if incremental:
            return _extract_changed(stream, bucket, key, config, out_dir, part_bytes, memory_limit, threads, env)
        return _extract(url, fmt, bucket, key, config, out_dir, part_bytes, memory_limit, threads, dialect)


def _extract_changed(stream: dict, bucket: str, key: str, config: S3Config, out_dir: Path, part_bytes: int,
                     memory_limit: str, threads: int, env) -> int:
    """Read the objects new or changed since the last sync, each row tagged with its key."""
    from shared.storage import syncstate as state
    client = config.client()
    objects = list_objects(bucket, key, config, client)
    seen = state.stream_state(env, stream["name"]).get("objects") or {}
    changed = [o for o in objects if seen.get(o["key"]) != {"etag": o["etag"], "modified": o["modified"]}]
    rows = 0
    con = connect(config, memory_limit=memory_limit, threads=threads)
    try:
        for i, obj in enumerate(changed):
            url = url_of(bucket, obj["key"])
            fmt = FORMATS[PurePosixPath(obj["key"]).suffix.lower()]
            if fmt in ("csv", "tsv"):
                check_csv_shape(con, url, fmt, _range(client, bucket, obj["key"], f"bytes=0-{SNIFF_BYTES - 1}", config))
            try:
                rows += duck.scalar(con,
                    f"COPY (SELECT *, {_str(obj['key'])} AS {KEY_COLUMN} FROM {files.reader_sql(url, fmt)}) "
                    f"TO {_str(str(out_dir))} (FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(part_bytes)}, "
                    f"FILENAME_PATTERN 'object{i:05d}-part-{{i}}', OVERWRITE_OR_IGNORE)")
            except Exception as exc:
                raise _duck_error(exc, url, fmt) from None
    finally:
        con.close()
    # Recorded once every changed object is read: a failed sync reads them all again.
    state.save_stream(env, stream["name"], {"objects": {o["key"]: {"etag": o["etag"], "modified": o["modified"]}
                                                        for o in objects}})
    return rows


def _extract(url: str, fmt: str, bucket: str, key: str, config: S3Config, out_dir: Path, part_bytes: int,
             memory_limit: str, threads: int, dialect: dict | None = None) -> int:
    """COPY the object into Parquet parts. A CSV is read with the dialect discovery sniffed
    (strict mode, skip = 0: a changed object whose rows no longer fit fails, it is not read
    loosely); without one (a catalogue from before it was kept), sniffed here."""
    client = config.client()
    try:
        head_meta = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _is_404(exc):
            _check_bucket(client, bucket, key, config)
            raise SourceError(f"{url}: object disappeared since discovery") from None
        raise _fail(exc, bucket, key, config) from None
    except BotoCoreError as exc:
        raise _fail(exc, bucket, key, config) from None
    with tempfile.TemporaryDirectory(prefix="udb-s3-") as tmp:
        readers = _Readers(config, Path(tmp), memory_limit=memory_limit, threads=threads)
        try:
            local = read_whole(client, bucket, {"key": key, "size": head_meta["ContentLength"]}, b"", Path(tmp), config)
            con, source = (readers.local(), str(local)) if local is not None else (readers.remote(), url)
            if fmt in ("csv", "tsv") and not dialect:
                head = local.read_bytes()[:SNIFF_BYTES] if local is not None else \
                    _range(client, bucket, key, f"bytes=0-{SNIFF_BYTES - 1}", config)
                dialect = check_csv_shape(con, source, fmt, head)
            try:
                rows = duck.scalar(con,
                    f"COPY (SELECT * FROM {files.reader_sql(source, fmt, dialect if fmt in ('csv', 'tsv') else None)}) "
                    f"TO {_str(str(out_dir))} (FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES {int(part_bytes)}, "
                    f"FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE)")
            except Exception as exc:
                raise _duck_error(exc, url, fmt) from None
        finally:
            readers.close()
    return int(rows)


def _probe(hint: str, scores: Scores, settings: Settings) -> None:
    """ListObjectsV2 of one key, with UDB's own keys from the settings or unsigned: never the
    host's default credential chain, and never UDB's own bucket."""
    config = S3Config.from_settings(settings)
    if not config.endpoint and not config.access_key:
        return  # no S3 configured here: nothing to probe
    try:
        bucket, key = parse(hint)
    except SourceError:
        return
    if bucket == settings.bucket:
        return  # UDB's own bucket is never a source: not even whether a key exists may leak
    client = config.client(connect_timeout=PROBE_CONNECT, read_timeout=PROBE_READ, attempts=1)
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        scores.note(PROVIDER, "ListObjectsV2 answered" + ("" if listed.get("KeyCount") else " (no objects there)"))
    except ClientError as exc:
        scores.note(PROVIDER, f"ListObjectsV2 answered {exc.response.get('Error', {}).get('Code', 'an error')}")
    except BotoCoreError:
        pass  # unreachable: the catalogue step says why


@register
class S3Connector(Connector):
    """Objects under an s3:// prefix (UDB's S3, or another with options), optionally incremental."""
    providers = (PROVIDER,)
    schemes = ("s3",)
    options = OPTIONS

    def signals(self, hint: Hint) -> Signals | None:
        return Signals().add(PROVIDER, 0.95, "scheme s3") if hint.scheme == "s3" else None

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        if hint.scheme == "s3":
            _probe(hint.text, scores, hint.settings)
        return None
