"""Low findings of the outside probe (issue 16, finding 8) on real function processes: /metrics
needs a token, JWTs have a maximum lifetime, a 503 names no internal endpoint; and the OAuth
state is a standard itsdangerous signature."""
from __future__ import annotations

import hashlib
import re
import time

import httpx
import jwt
import pytest
from itsdangerous import Signer

from shared.security import auth
from tests.function_server import BROKER_TOKEN, JWT_SECRET, free_port, serve

pytestmark = pytest.mark.security
METRICS_TOKEN = "metrics-" + "m" * 40
JOB = "job-00000000000000a1"


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_metrics_open_only_to_the_metrics_or_broker_token(tmp_path):
    with serve("discover", tmp_path / "home", UDB_METRICS_TOKEN=METRICS_TOKEN) as server:
        anonymous = server.get("/metrics")
        assert anonymous[0] == 401
        assert anonymous[1] == b'{\n  "error": "GET /metrics needs the metrics token (UDB_METRICS_TOKEN) or the broker token"\n}'
        admin = server.get("/metrics", headers=_bearer(auth.mint_jwt(JWT_SECRET, "acme", "admin")))
        assert admin[0] == 403  # a tenant's admin would read every tenant's labels
        for token in (METRICS_TOKEN, BROKER_TOKEN):
            status, body, headers = server.get("/metrics", headers=_bearer(token))
            assert status == 200 and b"udb_http_requests_total" in body
        # The metrics token opens nothing else.
        refused = httpx.post(server.url + "/sources/discover_connect", json={"hint": "x"},
                             headers=_bearer(METRICS_TOKEN), timeout=10)
        assert (refused.status_code, refused.json()) == (403, {"error": "the metrics token opens only GET /metrics"})


def _token(lifetime: int, *, iat: bool = True) -> str:
    now = int(time.time())
    claims = {"tenant": "acme", "role": "viewer", "exp": now + lifetime, **({"iat": now} if iat else {})}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def test_jwts_living_longer_than_the_maximum_are_refused(tmp_path):
    with serve("artifacts", tmp_path / "home", UDB_RATE_LIMIT=0) as server:
        def status_with(token: str) -> tuple[int, str]:
            status, body, _ = server.get(f"/status/{JOB}", headers=_bearer(token))
            return status, body.decode()

        # 24 h (the default UDB_JWT_MAX_SECONDS) passes authentication: the job is simply unknown.
        assert status_with(_token(24 * 3600))[0] == 404
        for lifetime, iat in ((48 * 3600, True), (365 * 24 * 3600, True), (30 * 24 * 3600, False)):
            status, body = status_with(_token(lifetime, iat=iat))
            assert status == 401, body
            said = int(re.search(r"JWT lifetime of (\d+) s is above the maximum of 86400 s", body).group(1))
            assert lifetime - 2 <= said <= lifetime  # exp - iat; without iat, exp - now
        with pytest.raises(auth.InputError, match="at most 86400 s"):
            auth.mint_jwt(JWT_SECRET, "acme", "viewer", 48 * 3600, max_seconds=86400)
    with serve("artifacts", tmp_path / "home2", UDB_JWT_MAX_SECONDS=600) as server:
        assert server.get(f"/status/{JOB}", headers=_bearer(_token(600)))[0] == 404
        assert server.get(f"/status/{JOB}", headers=_bearer(_token(3600)))[0] == 401


def test_a_503_does_not_reveal_the_internal_object_store(tmp_path):
    port = free_port()  # the object store is down: nothing listens there
    with serve("artifacts", tmp_path / "home", UDB_STORE="s3", UDB_S3_ENDPOINT=f"http://127.0.0.1:{port}",
               UDB_S3_ACCESS_KEY="k", UDB_S3_SECRET_KEY="s" * 20) as server:
        token = auth.mint_jwt(JWT_SECRET, "acme", "viewer")
        status, body, headers = server.get(f"/status/{JOB}", headers=_bearer(token), timeout=60)
    assert (status, headers.get("Retry-After")) == (503, "1")
    assert body == b'{\n  "error": "a dependency of UDB is unavailable; retry later"\n}'
    assert str(port).encode() not in body and b"127.0.0.1" not in body
    assert f"127.0.0.1:{port}" in server.log.read_text()  # the detail is in the function's log


def test_the_oauth_state_is_an_itsdangerous_signature_with_its_expiry():
    secret = "s" * 40
    state = auth.sign_state(secret, "acme", JOB, ttl_seconds=60)
    signer = Signer(secret, salt="udb-oauth-state", sep=".", key_derivation="hmac", digest_method=hashlib.sha256)
    tenant, job, exp = signer.unsign(state).decode().split(".")
    assert (tenant, job) == ("acme", JOB) and 0 < int(exp) - time.time() <= 60
    # The same text signed under another salt (any other use of the key) is no state.
    other = Signer(secret, salt="another-use", sep=".", key_derivation="hmac", digest_method=hashlib.sha256)
    with pytest.raises(auth.Unauthorized, match="does not verify"):
        auth.verify_state(other.sign(f"acme.{JOB}.{int(exp)}").decode(), secret)
