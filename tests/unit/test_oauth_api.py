"""shared/sources/oauth/api.py: GET requests to a provider's API with the tenant's bearer token:
a refresh and one retry on 401, backoff on 429/5xx, errors that say what the provider said.
Against a scripted API and token endpoint on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.core.errors import SourceError
from shared.security.secrets import LocalSecretStore
from shared.sources.env import SourceEnv
from shared.sources.oauth import providers
from shared.sources.oauth.api import ApiSession
from shared.sources.oauth.tokens import Tokens
from tests.peers.token_endpoint import TokenEndpoint

pytestmark = pytest.mark.unit
TENANT = "acme"


class Api(BaseHTTPRequestHandler):
    """Each GET gets the next scripted (status, body, headers); the bearer of each is recorded."""
    answers: list = []
    bearers: list = []

    def do_GET(self):
        Api.bearers.append((self.path, self.headers.get("Authorization")))
        status, body, headers = Api.answers.pop(0) if Api.answers else (500, {"error": "nothing scripted"}, {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    Api.answers, Api.bearers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def token_endpoint():
    with TokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def env(settings, tmp_path, token_endpoint):
    configured = dataclasses.replace(settings, google_client_id="gcid", google_token_url=f"{token_endpoint.url}/t")
    secrets = LocalSecretStore(tmp_path / "secrets")
    Tokens(secrets, TENANT, providers.config("gdrive", configured)).save(
        {"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600})
    return SourceEnv(tenant=TENANT, secrets=secrets, settings=configured)


def _session(env, api, sleeps=None):
    return ApiSession(env, "gdrive", api + "/drive/v3/", sleep=(sleeps.append if sleeps is not None else None))


def test_get_json_sends_the_bearer(env, api):
    Api.answers.append((200, {"files": [{"id": "1"}]}, {}))
    with _session(env, api) as session:
        assert session.url("/files") == f"{api}/drive/v3/files"
        assert session.url("https://elsewhere.example/x") == "https://elsewhere.example/x"
        assert session.get_json("/files", params={"q": "x"}) == {"files": [{"id": "1"}]}
    assert Api.bearers == [("/drive/v3/files?q=x", "Bearer at-1")]


def test_a_401_refreshes_once_and_retries(env, api, token_endpoint):
    token_endpoint.answers.append((200, {"access_token": "at-2", "expires_in": 3600}))
    Api.answers += [(401, {"error": {"message": "expired"}}, {}), (200, {"ok": True}, {})]
    with _session(env, api) as session:
        assert session.get_json("/about") == {"ok": True}
    assert [b for _, b in Api.bearers] == ["Bearer at-1", "Bearer at-2"]
    assert token_endpoint.forms[0]["grant_type"] == "refresh_token"


def test_a_second_401_says_the_authorization_was_revoked(env, api, token_endpoint):
    token_endpoint.answers.append((200, {"access_token": "at-2", "expires_in": 3600}))
    Api.answers += [(401, {}, {}), (401, {"error": {"code": "unauthenticated"}}, {})]
    with _session(env, api) as session, pytest.raises(SourceError) as error:
        session.get_json("/about")
    assert str(error.value) == (f"gdrive {api}/drive/v3/about: 401 Unauthorized even with a refreshed token "
                                "(unauthenticated): the authorization was revoked; discover the link again to "
                                "authorize anew")


@pytest.mark.parametrize("status,body,message", [
    (403, {"error": {"message": "insufficient permissions"}},
     "403 Forbidden: the authorized account may not read this (insufficient permissions)"),
    (404, {"error": "itemNotFound"}, "404 Not Found: the link points nowhere, or the authorized account cannot see it "
                                     "(itemNotFound)"),
    (418, b"not json", "HTTP 418 I'm a Teapot"),
])
def test_errors_say_what_the_provider_said(env, api, status, body, message):
    Api.answers.append((status, body, {}))
    with _session(env, api) as session, pytest.raises(SourceError) as error:
        session.get_json("/files/x?alt=media")
    assert str(error.value) == f"gdrive {api}/drive/v3/files/x: {message}"


def test_429_and_5xx_are_retried_with_backoff(env, api):
    sleeps: list = []
    Api.answers += [(429, {}, {"Retry-After": "2"}), (502, {}, {}), (200, {"ok": 1}, {})]
    with _session(env, api, sleeps) as session:
        assert session.get_json("/files") == {"ok": 1}
    assert len(Api.bearers) == 3 and sleeps[0] == 2 and len(sleeps) == 2


def test_answers_that_are_not_a_json_object(env, api):
    Api.answers += [(200, b"<html/>", {}), (200, [1, 2], {})]
    with _session(env, api) as session:
        with pytest.raises(SourceError, match="the API answered without JSON"):
            session.get_json("/files")
        with pytest.raises(SourceError, match="the API answered JSON that is not an object"):
            session.get_json("/files")


def test_download_streams_into_a_file(env, api, tmp_path):
    Api.answers.append((200, b"a,b\n1,2\n", {"Content-Type": "text/csv"}))
    dest = tmp_path / "f.csv"
    with _session(env, api) as session:
        content_type, size = session.download("/files/1", dest, params={"alt": "media"})
    assert (content_type, size, dest.read_bytes()) == ("text/csv", 8, b"a,b\n1,2\n")
