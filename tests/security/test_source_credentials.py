"""Credentials of sources stay with the tenant that gave them (issue 16, findings 1, 3 and 8):

- PostgreSQL: a DSN's password is a connection parameter from the tenant's own secret store,
  never a shared file or the environment; a tenant naming another tenant's database without
  the password gets an authentication error, and a sync of a forged catalogue copies nothing.
  The probe connects to the address the SSRF guard checked (`hostaddr`).
- S3: a source signs only with keys the tenant gave, or reads unsigned; the host's own keys
  (environment, shared credentials file) are never sent to a tenant-chosen endpoint. UDB's own
  endpoint is recognised by resolved address and port, however it is spelled.
- WebDAV: a PROPFIND answer with a DTD (entities, external entities) is refused by defusedxml.
"""
from __future__ import annotations

import http.server
import json
import secrets
import threading
from dataclasses import replace

import psycopg
import pytest

from shared.core.settings import Settings
from tests.conftest import LOOPBACK

from devstack import services
from functions.discover.detect import detect
from shared.sources.postgres import probe_postgres
from functions.discover.handler import handle as discover
from functions.sync.handler import handle as sync
from shared.core import events
from shared.serving.runtime import invoke
from shared.sources import postgres

pytestmark = pytest.mark.security
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable

ROWS = 37


# ---------------------------------------------------------------- PostgreSQL (real server)

@pytest.fixture(scope="module")
def pg_admin():
    """The devstack PostgreSQL (started here when down, stopped again after): its admin DSN."""
    before = services.status(["postgres"])["postgres"]["state"]
    services.up(["postgres"])
    yield services.endpoints()["postgres"]
    if before != "up":
        services.down(["postgres"])


@pytest.fixture
def alice(pg_admin):
    """A role `alice_<hex>` with a random password and a 37-row table only it may read:
    (hint with the password, the same hint without it, password, table)."""
    suffix = secrets.token_hex(4)
    role, password, table = f"alice_{suffix}", f"Pw-{secrets.token_hex(12)}", f"accounts_{suffix}"
    with psycopg.connect(pg_admin, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        pg.execute(f"CREATE TABLE {table} AS SELECT i AS id, 'acct ' || i AS label FROM generate_series(1, {ROWS}) s(i)")
        pg.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
        pg.execute(f"GRANT SELECT ON {table} TO {role}")
    host = pg_admin.split("@", 1)[1].split("/", 1)[0]
    tail = f"{host}/udb?table=public.{table}"
    yield f"postgresql://{role}:{password}@{tail}", f"postgresql://{role}@{tail}", password, table
    with psycopg.connect(pg_admin, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE IF EXISTS {role}")


def _event(kind: str, data: dict, tenant: str, job: str):
    return events.make_event(kind, data, tenant=tenant, job_id=job, function="test")


@pytest.mark.integration
def test_a_tenant_without_the_password_never_logs_in_with_another_tenants(alice, settings, ctx_for, monkeypatch,
                                                                          tmp_path):
    with_password, without, password, table = alice
    # Where the old code kept every tenant's passwords (one pgpass under UDB_HOME), and libpq's
    # own ambient sources holding the same password: none of them may open the door for beta.
    monkeypatch.setenv("UDB_HOME", str(settings.home))
    pgpass = tmp_path / "host-pgpass"
    pgpass.write_text(f"*:*:*:*:{password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    monkeypatch.setenv("PGPASSWORD", password)

    # Tenant alpha discovers its database with the password, and syncs it.
    found = invoke(discover, _event(events.DISCOVER_REQUESTED, {"hint": with_password, "autosync": False},
                                    "alpha", "job-00000000000a1f01"), ctx_for("discover"))
    assert found["type"] == events.SOURCE_DISCOVERED, events.event_data(found)
    source = events.event_data(found)["source"]
    staged = invoke(sync, found, ctx_for("sync"))
    assert [t["rows"] for t in events.event_data(staged)["tables"]] == [ROWS]

    # Tenant beta names the same role and database without a password: refused by the server.
    failed = invoke(discover, _event(events.DISCOVER_REQUESTED, {"hint": without},
                                     "beta", "job-00000000000b1f01"), ctx_for("discover"))
    assert failed["type"] == events.JOB_FAILED
    reason = events.event_data(failed)["reason"]
    assert "no password supplied" in reason and "another tenant gave is never used" in reason, reason
    assert ctx_for("discover").jobs("beta").get("job-00000000000b1f01")["state"] == "failed"
    beta = ctx_for("sync").tenant_store("beta")
    assert list(beta.list("sources/")) == []
    assert ctx_for("sync").secrets.names("beta") == []
    # Alpha's catalogue names its password only by reference into alpha's store.
    reference = f"secret://{postgres.secret_name(postgres.parse(without))}"
    assert source["streams"][0]["options"] == {"password": reference}
    assert password not in json.dumps(source)

    # Beta forges alpha's catalogue (the secret:// reference included) as its own source, and
    # asks for a sync: the reference resolves in beta's store only, where it names nothing.
    forged = dict(source, id="forged-0001")
    beta.put("sources/forged-0001.json", json.dumps(forged).encode(), content_type="application/json")
    copied = invoke(sync, _event(events.SYNC_REQUESTED, {"source_id": "forged-0001"}, "beta", "job-00000000000b1f02"),
                    ctx_for("sync"))
    assert copied["type"] == events.JOB_FAILED
    assert events.event_data(copied)["reason"] == (f"no secret '{postgres.secret_name(postgres.parse(without))}' "
                                                    f"for tenant beta: store it first")
    # The same catalogue without the reference: the server asks for a password nobody supplies.
    bare = dict(forged, id="forged-0002", streams=[{k: v for k, v in s.items() if k != "options"}
                                                   for s in forged["streams"]])
    beta.put("sources/forged-0002.json", json.dumps(bare).encode(), content_type="application/json")
    copied = invoke(sync, _event(events.SYNC_REQUESTED, {"source_id": "forged-0002"}, "beta", "job-00000000000b1f03"),
                    ctx_for("sync"))
    assert copied["type"] == events.JOB_FAILED
    assert "no password supplied" in events.event_data(copied)["reason"]
    assert list(beta.list("staging/")) == []
    assert {o.key.split("/")[0] for o in beta.list("")} == {"jobs", "sources"}  # nothing staged, no warehouse


@pytest.mark.integration
def test_the_postgres_probe_connects_to_the_address_the_guard_checked(alice, settings):
    with_password, _, _, _ = alice
    # `localhost` resolves to 127.0.0.1 and ::1; the guard checks it once, and libpq is handed
    # the checked address as hostaddr, so it never resolves the name again.
    dsn = postgres.parse(with_password.replace("127.0.0.1", "localhost"))
    assert dsn.host == "localhost"
    answer = probe_postgres(dsn, settings)
    assert answer["parameters"]["host"] == "localhost"
    assert answer["parameters"]["hostaddr"] == "127.0.0.1"
    assert answer["parameters"]["passfile"].endswith("/no-pgpass")  # never ~/.pgpass
    assert answer["parameters"]["sslcertmode"] == "disable"
    reasons = [r for c in detect(dsn.uri(password=dsn.password), settings=settings)["candidates"] for r in c["reasons"]]
    assert any(r.startswith("connected to 127.0.0.1 (PostgreSQL") for r in reasons), reasons
    # A name whose check is refused is not probed at all: ::1 is outside this allowlist.
    narrow = replace(settings, net_allowlist="127.0.0.1")
    with pytest.raises(postgres.netguard.BlockedAddress, match=r"localhost \(::1\)"):
        probe_postgres(dsn, narrow)
    reasons = [r for c in detect(dsn.uri(password=dsn.password), settings=narrow)["candidates"] for r in c["reasons"]]
    assert not any("connected" in r or "answered" in r for r in reasons), reasons


# ---------------------------------------------------------------- S3 (a tenant-chosen endpoint)

HOST_ENV_KEY, HOST_FILE_KEY, TENANT_KEY = "AKIAHOSTENVIRONMENT1", "AKIAHOSTSHAREDFILE01", "AKIATENANTGAVETHIS01"
HOST_DUCKDB_KEY = "AKIAHOSTDUCKDBSECRET"
CSV = b"id,amount\n1,2.5\n2,5.0\n3,7.5\n"


class _RecordingS3(http.server.BaseHTTPRequestHandler):
    """A test peer acting as the tenant-chosen S3 endpoint: one bucket `data` holding
    `sales.csv` (HEAD, ranged GET). Every request is recorded with its Authorization header,
    and so is anything asking for credentials (an EC2 metadata token or path, a container
    credentials URL): the host's chain pointed here would show up."""
    requests: list = []
    credential_asks: list = []

    def _record(self) -> bool:
        if self.path.startswith(("/latest/", "/creds")):
            type(self).credential_asks.append((self.command, self.path))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        type(self).requests.append((self.command, self.path, self.headers.get("Authorization")))
        return True

    def _object(self, body: bool) -> None:
        if not self._record():
            return
        if self.path.split("?")[0] != "/data/sales.csv":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, status = CSV, 200
        spec = self.headers.get("Range")
        headers = {"ETag": '"5a1e5a1e"', "Last-Modified": "Thu, 26 Nov 2026 00:00:00 GMT", "Accept-Ranges": "bytes"}
        if spec and spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            if first == "":
                start, end = max(0, len(CSV) - int(last)), len(CSV) - 1
            else:
                start, end = int(first), min(int(last) if last else len(CSV) - 1, len(CSV) - 1)
            data, status = CSV[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(CSV)}"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._object(False)

    def do_GET(self):
        self._object(True)

    def do_PUT(self):
        self._record()

    def log_message(self, *args):
        pass


@pytest.fixture
def tenant_s3(settings, tmp_path, monkeypatch):
    """(the recording peer's URL, an env maker for tenant acme) with the host's own AWS
    identity everywhere boto3 and DuckDB would look for one."""
    _RecordingS3.requests, _RecordingS3.credential_asks = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    shared_file = tmp_path / "aws-credentials"
    shared_file.write_text(f"[default]\naws_access_key_id = {HOST_FILE_KEY}\naws_secret_access_key = file-secret\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", HOST_ENV_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-environment-secret")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared_file))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    # Were the chain walked past the environment, its metadata and container steps land here.
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url + "/")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url + "/creds")
    # And a persistent DuckDB secret of the host's, scoped to the very bucket (it would outrank
    # an unscoped per-connection secret).
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import duckdb

    from shared.storage import duck
    host = duckdb.connect()
    duck.load(host, "httpfs")
    host.execute(f"CREATE PERSISTENT SECRET host_key (TYPE s3, KEY_ID '{HOST_DUCKDB_KEY}', SECRET 'x', "
                 f"SCOPE 's3://data')")
    host.close()
    assert (tmp_path / "home" / ".duckdb" / "stored_secrets" / "host_key.duckdb_secret").is_file()

    from shared.security.secrets import LocalSecretStore
    from shared.sources import SourceEnv
    allowed = replace(settings, net_allowlist="127.0.0.1")
    store = LocalSecretStore(tmp_path / "secrets")

    def env(options: dict) -> SourceEnv:
        return SourceEnv(tenant="acme", secrets=store, settings=allowed, options=options)

    yield url, env
    server.shutdown()
    server.server_close()


def _read_through(url: str, env, tmp_path, options: dict) -> None:
    from shared.sources import s3
    catalogue = s3.inspect("s3://data/sales.csv", env=env(options))
    stream = catalogue["streams"][0]
    assert [c["name"] for c in stream["columns"]] == ["id", "amount"]
    out = tmp_path / f"out-{len(_RecordingS3.requests)}"
    assert s3.extract(stream, out, part_bytes=1 << 20, env=env(options)) == 3


def test_an_s3_source_without_keys_reads_unsigned_never_with_the_hosts_keys(tenant_s3, tmp_path, monkeypatch):
    url, env = tenant_s3
    _read_through(url, env, tmp_path, {"endpoint": url})
    methods = {m for m, _, _ in _RecordingS3.requests}
    assert {"HEAD", "GET"} <= methods  # boto3 (HEAD, ranged GET) and DuckDB (HEAD, GET) both asked
    assert [a for _, _, a in _RecordingS3.requests] == [None] * len(_RecordingS3.requests)
    # Without keys in the environment, the chain's later steps (shared file, container
    # credentials, the instance metadata service) are not consulted either.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    _RecordingS3.requests = []
    _read_through(url, env, tmp_path, {"endpoint": url})
    assert _RecordingS3.requests and all(a is None for _, _, a in _RecordingS3.requests)
    assert _RecordingS3.credential_asks == []


def test_an_s3_source_with_keys_signs_with_the_tenants_keys_only(tenant_s3, tmp_path):
    url, env = tenant_s3
    _read_through(url, env, tmp_path, {"endpoint": url, "access_key_id": TENANT_KEY,
                                       "secret_access_key": "tenant-secret"})
    headers = [a for _, _, a in _RecordingS3.requests]
    assert len(headers) >= 4
    assert all(a and a.startswith(f"AWS4-HMAC-SHA256 Credential={TENANT_KEY}/") for a in headers), headers
    assert not any(key in a for a in headers for key in (HOST_ENV_KEY, HOST_FILE_KEY, HOST_DUCKDB_KEY))
    assert _RecordingS3.credential_asks == []


# ---------------------------------------------------------------- WebDAV (a hostile server)

_LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol">'
           + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
           + "]>")
_LISTING = ('<D:multistatus xmlns:D="DAV:"><D:response><D:href>/dav/</D:href><D:propstat><D:prop>'
            '<D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status>'
            '</D:propstat></D:response><D:response><D:href>/dav/{name}.csv</D:href><D:propstat><D:prop>'
            '<D:resourcetype/><D:getcontentlength>{size}</D:getcontentlength></D:prop>'
            '<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>')
HOSTILE = {
    # Nine levels of ten: 10^9 "lol"s, 3 GB if expanded.
    "billion-laughs": ('<?xml version="1.0"?>' + _LAUGHS + _LISTING.replace("{name}", "&lol9;")).encode(),
    # The same in UTF-16, where a byte search for "<!ENTITY" finds nothing.
    "billion-laughs-utf16": ('<?xml version="1.0" encoding="UTF-16"?>' + _LAUGHS.replace("lol9", "lol2")
                             + _LISTING.replace("{name}", "&lol2;")).encode("utf-16"),
    # An external entity naming a local file.
    "external-entity": ('<?xml version="1.0"?><!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                        + _LISTING.replace("{name}", "&xxe;")).encode(),
    # An external DTD, declared after 4 KB of comment.
    "late-external-dtd": ('<?xml version="1.0"?><!--' + "x" * 4096 + '--><!DOCTYPE m SYSTEM "http://127.0.0.2/x.dtd">'
                          + _LISTING.replace("{name}", "sales")).encode(),
}


class _HostileDav(http.server.BaseHTTPRequestHandler):
    """A test peer speaking WebDAV: PROPFIND on /<case>/dav/ answers 207 with that case's body
    (`benign`: a plain listing of sales.csv); GET serves the CSV."""

    def do_PROPFIND(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        case = self.path.strip("/").split("/")[0]
        body = HOSTILE.get(case) or _LISTING.replace("{name}", "sales").replace("{size}", str(len(CSV))).encode()
        body = body.replace(b"/dav/", f"/{case}/dav/".encode()) if case != "billion-laughs-utf16" else \
            body.decode("utf-16").replace("/dav/", f"/{case}/dav/").encode("utf-16")
        self.send_response(207)
        self.send_header("Content-Type", "application/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(CSV)))
        self.end_headers()
        self.wfile.write(CSV)

    def log_message(self, *args):
        pass


def test_a_propfind_answer_with_entities_or_a_dtd_is_refused(tmp_path):
    from shared.core.errors import SourceError
    from shared.sources import SourceEnv, webdav
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileDav)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"webdav://127.0.0.1:{server.server_address[1]}"
    try:
        streams = webdav.inspect(f"{base}/benign/dav/", env=SourceEnv(settings=PEERS))["streams"]
        assert [(s["name"], [c["name"] for c in s["columns"]]) for s in streams] == [("sales", ["id", "amount"])]
        outcomes, expected = {}, {}
        for case in HOSTILE:
            url = f"http://127.0.0.1:{server.server_address[1]}/{case}/dav/"
            expected[case] = f"{url}: refusing a WebDAV listing with a DTD or entity declarations (DTDForbidden)"
            try:
                found = webdav.inspect(f"{base}/{case}/dav/", env=SourceEnv(settings=PEERS))
                outcomes[case] = f"accepted: {[s['name'][:40] for s in found['streams']]}"
            except SourceError as exc:
                outcomes[case] = str(exc)
        assert outcomes == expected
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- UDB's own MinIO (real)

@pytest.fixture(scope="module")
def minio():
    """The devstack MinIO (started here when down, stopped again after): (endpoint, user, password)."""
    before = services.status(["minio"])["minio"]["state"]
    services.up(["minio"])
    user, password = services.minio_credentials()
    yield services.endpoints()["s3"], user, password
    if before != "up":
        services.down(["minio"])


@pytest.mark.integration
def test_udbs_own_minio_is_refused_however_its_endpoint_is_spelled(minio, settings, tmp_path):
    import uuid

    from shared.core.errors import SourceError
    from shared.security.secrets import LocalSecretStore
    from shared.sources import SourceEnv, s3
    endpoint, user, password = minio
    port = endpoint.rsplit(":", 1)[1]
    raw = s3.S3Config(endpoint, user, password).client()
    own, other = f"udb-own-{uuid.uuid4().hex[:8]}", f"udb-src-{uuid.uuid4().hex[:8]}"
    for bucket in (own, other):
        raw.create_bucket(Bucket=bucket)
        raw.put_object(Bucket=bucket, Key="tenants/other/staging/part.csv", Body=CSV)
    # This MinIO is UDB's own store, `own` its bucket (every tenant's data). A tenant names the
    # same endpoint in its options, spelled otherwise, with the store's keys (the worst case).
    udb = replace(settings, s3_endpoint=endpoint, s3_access_key=user, s3_secret_key=password, bucket=own,
                  net_allowlist="127.0.0.0/8,::1")
    store = LocalSecretStore(tmp_path / "secrets")

    def inspect(bucket: str, spelling: str) -> str:
        options = {"endpoint": spelling, "access_key_id": user, "secret_access_key": password}
        env = SourceEnv(tenant="acme", secrets=store, settings=udb, options=options)
        try:
            return ", ".join(s["name"] for s in s3.inspect(f"s3://{bucket}/tenants/other/staging/", env=env)["streams"])
        except SourceError as exc:
            return str(exc)

    try:
        spellings = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/", f"http://127.1:{port}",
                     f"http://localhost:{port}", f"http://LOCALHOST.:{port}", f"http://[::ffff:127.0.0.1]:{port}",
                     f"http://2130706433:{port}", f"http://0x7f.0.0.1:{port}", f"http://0177.0.0.1:{port}"]
        refused = (f"s3://{own}/ is UDB's own bucket (every tenant's data): not a source; "
                   f"upload the file (POST /uploads) or read it from another bucket")
        assert {s: inspect(own, s) for s in spellings} == {s: refused for s in spellings}
        # Another bucket of the same server, under a disguised spelling, reads: the refusal is
        # about UDB's bucket, and the disguise does reach this server.
        assert inspect(other, f"http://127.1:{port}") == "part"
    finally:
        for bucket in (own, other):
            raw.delete_object(Bucket=bucket, Key="tenants/other/staging/part.csv")
            raw.delete_bucket(Bucket=bucket)
