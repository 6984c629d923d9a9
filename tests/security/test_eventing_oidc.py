"""Knative Eventing with OIDC on (feature `authentication-oidc`) makes the Kafka broker's dispatcher
send `Authorization: Bearer <its service-account token>` (an RS256 JWT from the cluster's issuer).
That is no UDB credential. On a cluster-local function Service, where the network is the
credential (UDB_TRUST_NETWORK=1, no UDB_BROKER_TOKEN), the CloudEvent entry must not refuse it as
a bad UDB JWT (a 401 is never retried: the event would be dead-lettered at once); anywhere else it
is refused as before. docs/deploy.md "OIDC" states the decision. Real server processes."""
from __future__ import annotations

import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.security import auth
from tests.function_server import serve

pytestmark = pytest.mark.security


def _oidc_token() -> str:
    """The shape of a Kubernetes service-account token as Knative's dispatcher sends it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "aud": ["udb-analyze.udb"],
              "sub": "system:serviceaccount:knative-eventing:kafka-broker-dispatcher",
              "iat": now, "exp": now + 600}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def _post_not_an_event(server, token: str) -> tuple[int, dict]:
    # Authentication comes first; a body that is no CloudEvent then gets 400 naming the problem.
    response = httpx.post(server.url + "/", content=b"{}", timeout=10,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return response.status_code, response.json()


def test_the_dispatchers_oidc_token_is_not_taken_for_a_bad_udb_jwt_on_a_cluster_local_service(tmp_path):
    token = _oidc_token()
    assert auth.eventing_oidc_token(token)
    assert not auth.eventing_oidc_token(auth.mint_jwt("j" * 40, "acme", "admin"))
    with serve("discover", tmp_path / "home", UDB_BROKER_TOKEN="", UDB_TRUST_NETWORK=1) as server:
        status, body = _post_not_an_event(server, token)
        assert (status, body["error"]) == (400, "malformed CloudEvent")
        # A UDB-shaped JWT that does not verify is still a bad credential (401), and the OIDC token
        # opens nothing but the system doors: a tenant route stays closed to it.
        forged = jwt.encode({"tenant": "acme", "role": "admin", "exp": int(time.time()) + 60}, "x" * 40,
                            algorithm="HS256")
        assert _post_not_an_event(server, forged) == (401, {"error": "JWT signature does not verify"})
        tenant_route = httpx.post(server.url + "/sources/discover_connect", json={"hint": "x"}, timeout=10,
                                  headers={"Authorization": f"Bearer {token}"})
        assert tenant_route.status_code == 401


def test_the_public_door_refuses_the_oidc_token(tmp_path):
    with serve("discover", tmp_path / "home", UDB_BROKER_TOKEN="", UDB_TRUST_NETWORK=0) as server:
        status, body = _post_not_an_event(server, _oidc_token())
        assert (status, body) == (401, {"error": "JWT algorithm must be HS256"})
