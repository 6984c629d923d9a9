"""The secret stores — Kubernetes Secrets through the API (against a test peer speaking it) and
the encrypted local file — and a job whose source password must appear in no event, log
line, job document, source document, artifact or staged file."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
from pathlib import Path

import httpx
import psycopg
import pytest
from cloudevents.http import to_structured

from shared.core import events
from shared.observability import logs, metrics
from shared.serving.embedded import Dispatcher
from shared.core.errors import InputError, NotFound, TransientError
from shared.security.secrets import KubernetesSecretStore, LocalSecretStore
from shared.core.tenancy import new_job_id
from tests.security.k8s_secrets_peer import SecretsPeer

pytestmark = pytest.mark.security


@pytest.fixture
def k8s(tmp_path):
    """(a KubernetesSecretStore bound to the test peer as a pod's service account, the peer)."""
    token = "sa-token-" + secrets.token_hex(8)
    with SecretsPeer(tmp_path / "certs", token) as peer:
        sa = tmp_path / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text(token + "\n")
        (sa / "namespace").write_text("udb\n")
        (sa / "ca.crt").write_bytes(peer.ca.read_bytes())

        class PodSecretStore(KubernetesSecretStore):
            SA = sa

        yield PodSecretStore(api=peer.url), peer, PodSecretStore


def test_kubernetes_secrets_are_one_secret_per_tenant_through_the_api(k8s):
    store, peer, _ = k8s
    store.put("acme", "pg.password", "s3cr3t:value/é")
    store.put("acme", "oauth.graph", "refresh-token")
    store.put("beta", "pg.password", "another")
    assert store.get("acme", "pg.password") == "s3cr3t:value/é"
    assert store.names("acme") == ["oauth.graph", "pg.password"]
    assert store.names("beta") == ["pg.password"]
    secret = peer.secrets[("udb", "udb-tenant-acme")]
    assert secret["metadata"]["labels"] == {"udb.dev/tenant": "acme"} and secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["pg.password"]).decode() == "s3cr3t:value/é"
    store.delete("acme", "pg.password")
    with pytest.raises(NotFound):
        store.get("acme", "pg.password")
    assert store.names("acme") == ["oauth.graph"] and store.get("beta", "pg.password") == "another"
    assert store.names("nobody") == []
    methods = [(m, p.rsplit("/", 1)[-1], t) for m, p, t in peer.requests]
    assert ("PATCH", "udb-tenant-acme", "application/merge-patch+json") in methods
    assert ("POST", "secrets", "application/json") in methods  # created on first put
    assert all(p.startswith("/api/v1/namespaces/udb/secrets") for _, p, _ in peer.requests)


def test_kubernetes_secrets_refuse_bad_names_before_any_request(k8s):
    store, peer, _ = k8s
    for tenant, name in (("../kube-system", "x"), ("acme", "../../x"), ("acme", "A B"), ("Acme", "x")):
        with pytest.raises(InputError):
            store.put(tenant, name, "v")
    assert peer.requests == []


def test_kubernetes_secrets_need_the_service_account_and_a_trusted_server(k8s, tmp_path):
    store, peer, cls = k8s
    (cls.SA / "token").write_text("stolen-or-stale\n")
    with pytest.raises(TransientError, match="kubernetes secrets: 401 reading tenant acme"):
        cls(api=peer.url).get("acme", "x")
    # A server whose certificate the service account's CA did not sign is never sent the token.
    with SecretsPeer(tmp_path / "other-certs", "any") as impostor:
        before = len(impostor.requests)
        with pytest.raises(httpx.ConnectError):
            cls(api=impostor.url).names("acme")
        assert len(impostor.requests) == before


def _rotate_token(sa: Path, token: str, *, keep_stamp: bool = False) -> None:
    """Write a new token as the kubelet does: a new file swapped in (new inode and time), or,
    with keep_stamp, in place with the old size and modification time (a change no stat sees)."""
    path = sa / "token"
    before = path.stat()
    if keep_stamp:
        path.write_text(token + "\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return
    fresh = sa / ".token.new"
    fresh.write_text(token + "\n")
    os.utime(fresh, ns=(before.st_atime_ns + 10**9, before.st_mtime_ns + 10**9))
    os.replace(fresh, path)


def test_kubernetes_secrets_follow_a_rotated_service_account_token(k8s):
    store, peer, cls = k8s
    old = peer.token
    store.put("acme", "pg.password", "before")
    assert store.get("acme", "pg.password") == "before" and set(peer.tokens) == {old}
    # The kubelet rotates the projected token mid-run; the API server takes only the new one.
    new = "sa-token-" + secrets.token_hex(8)
    _rotate_token(cls.SA, new)
    peer.rotate(new)
    seen = len(peer.tokens)
    store.put("acme", "pg.password", "after")
    assert store.get("acme", "pg.password") == "after" and store.names("acme") == ["pg.password"]
    assert set(peer.tokens[seen:]) == {new}  # re-read before the request: not one 401 on the way
    # The peer refuses the old token, as the API server does once it expired.
    response = httpx.get(f"{peer.url}/api/v1/namespaces/udb/secrets/udb-tenant-acme",
                         headers={"Authorization": f"Bearer {old}"}, verify=str(peer.ca))
    assert response.status_code == 401
    # A rotation the stat cannot see (same size, same modification time): the 401 re-reads it.
    newer = "sa-token-" + secrets.token_hex(8)
    _rotate_token(cls.SA, newer, keep_stamp=True)
    peer.rotate(newer)
    seen = len(peer.tokens)
    assert store.get("acme", "pg.password") == "after"
    assert peer.tokens[seen:] == [new, newer]
    # A token that is simply wrong is still a TransientError (a 401 after the re-read).
    peer.rotate("something-else")
    with pytest.raises(TransientError, match="401"):
        store.get("acme", "pg.password")


def test_kubernetes_secrets_follow_a_rotated_ca_bundle(k8s, tmp_path):
    store, peer, cls = k8s
    store.put("acme", "x", "1")
    trusted = (cls.SA / "ca.crt").read_bytes()
    with SecretsPeer(tmp_path / "other-ca", "unused") as other:
        (cls.SA / "ca.crt").write_bytes(other.ca.read_bytes())  # a CA that did not sign the server
    before = len(peer.requests)
    with pytest.raises(httpx.ConnectError):
        store.get("acme", "x")
    assert len(peer.requests) == before  # the token never left
    (cls.SA / "ca.crt").write_bytes(trusted)
    assert store.get("acme", "x") == "1"


def test_local_secrets_are_per_tenant_encrypted_files(tmp_path):
    store = LocalSecretStore(tmp_path / "secrets")
    store.put("acme", "pg.password", "hunter2-acme")
    store.put("beta", "pg.password", "hunter2-beta")
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == [".key", "acme.enc", "beta.enc"]
    for path in (tmp_path / "secrets").iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert b"hunter2" not in path.read_bytes()
    assert store.get("beta", "pg.password") == "hunter2-beta"
    from cryptography.fernet import Fernet
    with pytest.raises(TransientError, match="cannot be decrypted with this key"):
        LocalSecretStore(tmp_path / "secrets", Fernet.generate_key().decode()).get("acme", "pg.password")
    with pytest.raises(InputError, match="UDB_SECRET_KEY"):
        LocalSecretStore(tmp_path / "other", "not-a-fernet-key")


# ---------------------------------------------------------------- a job must not leak its secret

@pytest.fixture
def pg_source(stack_services):
    """A PostgreSQL role with a random password and a 40-row table it may read; its DSN."""
    admin = stack_services["postgres"]
    suffix = secrets.token_hex(4)
    role, password, table = f"sec_{suffix}", f"Pw-{secrets.token_hex(12)}", f"people_{suffix}"
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        pg.execute(f"CREATE TABLE {table} AS SELECT i AS id, 'person ' || i AS label, i * 2.5 AS amount "
                   f"FROM generate_series(1, 40) AS s(i)")
        pg.execute(f"GRANT SELECT ON {table} TO {role}")
    host = admin.split("@", 1)[1].split("/", 1)[0]
    yield f"postgresql://{role}:{password}@{host}/udb?table=public.{table}", password, table
    with psycopg.connect(admin, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
        pg.execute(f"DROP OWNED BY {role}")
        pg.execute(f"DROP ROLE IF EXISTS {role}")


def _run_logging_everything(settings, request: dict):
    """One whole job of tenant acme in this process, with UDB's and every library's logs at
    DEBUG captured as JSON lines: (events seen, the log stream, a context, the job document)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    seen = []
    dispatcher = Dispatcher(settings, on_event=seen.append)  # sets up UDB's JSON logs first
    loggers = [logging.getLogger("udb"), logging.getLogger()]  # UDB's and every library's
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        job_id = new_job_id()
        dispatcher.publish(events.make_event(events.DISCOVER_REQUESTED, request, tenant="acme",
                                             job_id=job_id, function="test"))
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)
    ctx = dispatcher.context("cli")
    return seen, stream, ctx, ctx.jobs("acme").get(job_id)


def test_a_source_password_reaches_no_event_log_document_or_artifact(settings, monkeypatch, pg_source, capfd):
    dsn, password, table = pg_source
    monkeypatch.setenv("UDB_HOME", str(settings.home))
    seen, stream, ctx, doc = _run_logging_everything(settings, {"hint": dsn})
    assert doc["state"] == "completed", doc["error"]
    assert list(doc["tables"].values()) == [{"rows": 40}]
    secret = password.encode()

    # The client's own request carries the DSN it typed; nothing UDB emits does.
    assert seen[0]["type"] == events.DISCOVER_REQUESTED and len(seen) >= 5
    for event in seen[1:]:
        headers, body = to_structured(event)  # every attribute and the data, as sent on the wire
        assert secret not in body and secret not in json.dumps(headers).encode()
    log_text = stream.getvalue()
    # The lines were captured: each function that logs on a good job said so. (The report
    # engines, whose libraries logged plenty at DEBUG, run in child processes since the reports
    # split; their stderr is read by the parent and logged only when a report fails.)
    loggers = {json.loads(line)["logger"] for line in log_text.splitlines()}
    assert {"udb.discover", "udb.sync", "udb.reports"} <= loggers, loggers
    assert secret not in log_text.encode()
    captured = capfd.readouterr()
    assert secret not in (captured.out + captured.err).encode()
    objects = list(ctx.store.list(""))
    kinds = {o.key.split("/")[2] for o in objects if o.key.startswith("tenants/acme/")}
    assert {"jobs", "sources", "staging", "artifacts", "catalog.ducklake", "lake"} <= kinds
    for info in objects:  # job and source documents, staged Parquet, the warehouse, every artifact
        assert secret not in ctx.store.get(info.key).data, info.key
    job_events = (Path(settings.home) / "job-events.jsonl").read_bytes()
    assert job_events and secret not in job_events
    assert secret not in metrics.exposition()
    assert doc["hint"] == dsn.replace(password, "***")
    # Where the password does live: tenant acme's secret store (encrypted, 0600), outside the
    # object store; no password file anywhere.
    stored = Path(settings.home) / "secrets" / "acme.enc"
    assert secret not in stored.read_bytes() and oct(stored.stat().st_mode & 0o777) == "0o600"
    assert password in {ctx.secrets.get("acme", name) for name in ctx.secrets.names("acme")}
    assert not (Path(settings.home) / "secrets" / "pgpass").exists()
    os.environ.pop("PGPASSWORD", None)


@pytest.mark.parametrize("where", ["options", "url"])
def test_a_rest_token_or_url_password_reaches_no_event_log_document_or_artifact(settings, capfd, where):
    """The same hunt with no service to start: a REST API behind a bearer token given in the
    options, or behind basic auth with the password in the URL, through a whole job."""
    from tests.peers.rest_api import RestPeer

    with RestPeer(total=30) as peer:
        token = f"Tok-{secrets.token_hex(16)}"
        if where == "options":
            peer.token = token
            request = {"hint": f"{peer.url}/auth/bearer/items", "options": {"auth": {"type": "bearer", "token": token}}}
        else:
            peer.password = token
            host = peer.url.split("://", 1)[1]
            request = {"hint": f"http://{peer.user}:{token}@{host}/auth/basic/items"}
        seen, stream, ctx, doc = _run_logging_everything(settings, request)
    assert doc["state"] == "completed", doc["error"]
    assert list(doc["tables"].values()) == [{"rows": 30}]
    secret = token.encode()
    assert seen[0]["type"] == events.DISCOVER_REQUESTED and len(seen) >= 5
    for event in seen[1:]:  # the client's own request aside, nothing UDB emits carries it
        headers, body = to_structured(event)
        assert secret not in body and secret not in json.dumps(headers).encode(), event["type"]
    leaking = [line[:2000] for line in stream.getvalue().splitlines() if token in line]
    assert leaking == [] and stream.getvalue().count("\n") > 10
    captured = capfd.readouterr()
    assert secret not in (captured.out + captured.err).encode()
    objects = list(ctx.store.list(""))
    assert any("/artifacts/" in o.key for o in objects) and any("/sources/" in o.key for o in objects)
    for info in objects:
        assert secret not in ctx.store.get(info.key).data, info.key
    assert secret not in (Path(settings.home) / "job-events.jsonl").read_bytes()
    assert secret not in metrics.exposition()
    source = json.loads(next(ctx.store.get(o.key).data for o in objects if "/sources/" in o.key))
    refs = json.dumps(source["streams"])
    assert "secret://" in refs  # the catalogue keeps a reference; the value sits in the secret store
    assert token in {ctx.secrets.get("acme", name) for name in ctx.secrets.names("acme")}


def test_udb_run_keeps_the_password_out_of_the_job_document(settings, monkeypatch, pg_source, capsys):
    from frontends import cli
    dsn, password, _ = pg_source
    monkeypatch.setenv("UDB_HOME", str(settings.home))
    assert cli.main(["run", dsn, "--tenant", "acme", "--no-analyze"]) == 0
    out = capsys.readouterr()
    job_id = out.out.split()[1]
    doc = (Path(settings.home) / "store" / "udb" / "tenants" / "acme" / "jobs" / f"{job_id}.json").read_text()
    assert password not in doc and password not in out.out + out.err
    assert json.loads(doc)["hint"] == dsn.replace(password, "***")
